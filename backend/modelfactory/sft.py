"""LoRA supervised fine-tuning of a causal LM on Datanet examples, with a plain torch loop.

Instruction pairs and chats are formatted with the base model's own chat template (what the
inference node will send it), and the loss covers only the assistant's answers through their
end-of-turn token; plain text is trained as causal LM on every token. The loop is our own,
not a trainer's, because two savings make a CPU step much cheaper without changing its
result: logits are computed only where a label is (sparing most of the output projection on a
49k vocabulary), and on a CPU the prefix every row of a batch shares (the template's system
prompt) runs through the model once. ``train.device`` picks CPU or CUDA. Training is seeded
and, on CPU, uses deterministic kernels: the same inputs give byte-identical adapter files.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import struct
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from backend.datanets.formats import DataFormat
from backend.modelfactory.dataset import Example
from backend.modelfactory.lora_training import (
    IGNORE,
    MAX_GRAD_NORM,
    collate,
    decoder_hidden_states,
    deterministic,
    index_batches,
    new_lora_model,
    pad_token_id,
    resolve_device,
    save_adapter,
    shares_prefix,
)
from backend.modelfactory.spec import LoraSettings, TrainSettings

log = logging.getLogger(__name__)

LOG_EVERY = 10  # steps between log lines
WARMUP_FRACTION = 0.05  # of the steps, with the learning rate rising linearly


class EncodingError(ValueError):
    """An example the tokenizer's chat template cannot turn into a training sequence."""


@dataclass(frozen=True)
class SFTResult:
    adapter_dir: Path
    steps: int
    loss_curve: list[dict[str, float]]  # {"step", "epoch", "loss"} per step
    tokens: int  # input tokens trained on (padding excluded), over every step
    seconds: float  # the training loop, without loading the model or saving the adapter
    tokens_per_second: float
    examples: int  # examples trained on
    dropped: tuple[int, ...] = ()  # indices in ``train`` with no answer within max_length


def chat_messages(example: Example) -> list[dict[str, str]]:
    """The chat an example is trained as (a preference pair as its chosen answer)."""
    if example.kind == DataFormat.CHAT.value and example.messages is not None:
        return [{"role": role, "content": content} for role, content in example.messages]
    answer = example.response if example.kind == DataFormat.INSTRUCTION.value else example.chosen
    if example.prompt is None or answer is None:
        raise EncodingError(f"a {example.kind} example without prompt and answer")
    return [{"role": "user", "content": example.prompt}, {"role": "assistant", "content": answer}]


def _render(tokenizer: PreTrainedTokenizerBase, chat: list[dict[str, str]], **kw: Any) -> list[int]:
    try:
        return list(tokenizer.apply_chat_template(chat, tokenize=True, **kw))
    except Exception as why:  # a template may raise anything on a chat it does not accept
        raise EncodingError(f"the chat template refuses this chat: {why}") from None


def text_token_ids(tokenizer: PreTrainedTokenizerBase, text: str) -> list[int]:
    """Plain text as the tokenizer encodes a document, with whatever special tokens it adds
    (Llama's ``<s>``; SmolLM2 adds none: its declared bos is the ``<|im_start|>`` turn marker,
    which does not start a document)."""
    return list(tokenizer(text)["input_ids"])


def encode_example(
    tokenizer: PreTrainedTokenizerBase, example: Example, max_length: int
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)``, labels ``IGNORE`` where no loss is taken.

    A chat is rendered by the template; each assistant turn is labelled through its first
    end-of-turn (eos) token, and what follows the last one is dropped. Text is labelled on
    every token but the first (nothing precedes it). The whole is cut to ``max_length`` tokens
    from the right.
    """
    if example.kind == DataFormat.TEXT.value:
        if example.text is None:
            raise EncodingError("a text example without text")
        ids = text_token_ids(tokenizer, example.text)
        return ids[:max_length], [IGNORE, *ids[1:]][:max_length]
    chat = chat_messages(example)
    full = _render(tokenizer, chat)
    labels = [IGNORE] * len(full)
    end = 0
    eos = tokenizer.eos_token_id
    for i, message in enumerate(chat):
        if message["role"] != "assistant":
            continue
        before = _render(tokenizer, chat[:i], add_generation_prompt=True)
        through = _render(tokenizer, chat[: i + 1])
        if through[: len(before)] != before or full[: len(through)] != through:
            raise EncodingError("the chat template does not render a chat's turns as prefixes")
        answer = through[len(before) :]
        if eos is not None and eos in answer:
            answer = answer[: answer.index(eos) + 1]
        end = len(before) + len(answer)
        labels[len(before) : end] = answer
    return full[:end][:max_length], labels[:end][:max_length]


def encode_examples(
    tokenizer: PreTrainedTokenizerBase, examples: Sequence[Example], max_length: int
) -> tuple[list[tuple[list[int], list[int]]], list[int]]:
    """The encodable examples and the indices of those left out (no labelled token within
    ``max_length``, or refused by the template), each logged."""
    encoded: list[tuple[list[int], list[int]]] = []
    dropped: list[int] = []
    for index, example in enumerate(examples):
        try:
            ids, labels = encode_example(tokenizer, example, max_length)
        except EncodingError as why:
            log.warning("example %d (contribution %d line %s): %s",
                        index, example.contribution_id, example.line, why)  # fmt: skip
            dropped.append(index)
            continue
        if all(label == IGNORE for label in labels[1:]):
            dropped.append(index)
            continue
        encoded.append((ids, labels))
    if dropped:
        log.warning("%d of %d examples have no answer token within max_length=%d: left out",
                    len(dropped), len(examples), max_length)  # fmt: skip
    return encoded, dropped


def token_losses(
    model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
    labels: torch.Tensor, share_prefix: bool = True,
) -> torch.Tensor:  # fmt: skip
    """Cross-entropy of every labelled token [labelled tokens]; logits only where a label is.

    ``model`` is a causal LM (or a PEFT model around one); the tensors are on its device.
    """
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    hidden = decoder_hidden_states(base.get_decoder(), input_ids, attention_mask, share_prefix)
    targets = labels[:, 1:]  # [batch, seq - 1]: token t + 1 is predicted at position t
    scored = targets != IGNORE
    logits = base.get_output_embeddings()(hidden[:, :-1][scored])  # [labelled, vocab]
    return F.cross_entropy(logits.float(), targets[scored], reduction="none")


def _lr_factor(step: int, total: int) -> float:
    """Linear warmup over the first steps, then linear decay to zero at ``total``."""
    warmup = math.ceil(WARMUP_FRACTION * total)
    if step < warmup:
        return (step + 1) / warmup
    return max(0.0, (total - step) / max(1, total - warmup))


def train_sft(
    base_dir: str | Path,
    train: list[Example],
    lora: LoraSettings,
    settings: TrainSettings,
    out_dir: str | Path,
    progress: bool = True,
    on_step: Callable[[int, int], None] | None = None,
) -> SFTResult:
    """Trains a LoRA adapter of the model in ``base_dir`` on ``train``; saves it in PEFT
    format into ``out_dir`` (files appear only once fully written). ``on_step(step, total)``
    is called after every optimizer step (a job's progress, for those who follow it)."""
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    if not train:
        raise ValueError("no training examples")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.chat_template is None and any(e.kind != DataFormat.TEXT.value for e in train):
        raise ValueError(f"base model {base_dir}: its tokenizer has no chat template")
    encoded, dropped = encode_examples(tokenizer, train, settings.max_length)
    if not encoded:
        raise ValueError(
            f"no example keeps a labelled token within max_length={settings.max_length}"
        )
    pad_id = pad_token_id(tokenizer)
    per_epoch = math.ceil(len(encoded) / settings.batch_size)
    total = per_epoch * settings.epochs
    if settings.max_steps is not None:
        total = min(total, settings.max_steps)

    device = resolve_device(settings.device)
    share_prefix = shares_prefix(device)

    with deterministic(settings.seed, device):
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        peft_model = new_lora_model(model, lora, settings.seed).to(device)
        peft_model.train()
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=settings.learning_rate, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s, total))
        generator = torch.Generator().manual_seed(settings.seed)
        curve: list[dict[str, float]] = []
        tokens = 0
        batches = index_batches(len(encoded), settings.batch_size, total, generator)
        started = time.perf_counter()
        with tqdm(total=total, desc="sft", unit="step", disable=not progress) as bar:
            for step, chosen in enumerate(batches, start=1):
                input_ids, attention_mask, labels = collate([encoded[i] for i in chosen], pad_id)
                tokens += int(attention_mask.sum())
                loss = token_losses(
                    peft_model, input_ids.to(device), attention_mask.to(device),
                    labels.to(device), share_prefix,
                ).mean()  # fmt: skip
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
                optimizer.step()
                scheduler.step()
                value = loss.item()
                curve.append({"step": step, "epoch": round(step / per_epoch, 4), "loss": value})
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
                if step % LOG_EVERY == 0 or step in (1, total):
                    log.info("sft step %d/%d: loss %.4f", step, total, value)
                if on_step is not None:
                    on_step(step, total)
        seconds = time.perf_counter() - started
        peft_model.peft_config["default"].base_model_name_or_path = base_dir.name
        save_adapter(peft_model, out_dir)
    log.info(
        "sft: %d steps, %d tokens in %.1f s (%.0f tokens/s), loss %.4f -> %.4f; saved to %s",
        len(curve), tokens, seconds, tokens / seconds, curve[0]["loss"], curve[-1]["loss"],
        out_dir,
    )  # fmt: skip
    return SFTResult(
        adapter_dir=out_dir,
        steps=len(curve),
        loss_curve=curve,
        tokens=tokens,
        seconds=seconds,
        tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
        examples=len(encoded),
        dropped=tuple(dropped),
    )


# --- the loss curve, as JSON and as a PNG drawn without a plotting library -------------------

PLOT_WIDTH, PLOT_HEIGHT, PLOT_MARGIN = 640, 360, 40
WHITE, BLACK, GREY, BLUE = (255, 255, 255), (0, 0, 0), (220, 220, 220), (31, 119, 180)


def save_loss_curve(curve: Sequence[dict[str, float]], json_path: Path, png_path: Path) -> None:
    """The curve as JSON (a list of ``{step, epoch, loss}``) and as a line plot (loss over
    step, with axes and a light grid; the y axis spans the curve's own range)."""
    if not curve:
        raise ValueError("an empty loss curve")
    points = [(float(p["step"]), float(p["loss"])) for p in curve]
    if not all(math.isfinite(v) for point in points for v in point):
        raise ValueError("the loss curve holds a non-finite value")
    Path(json_path).write_text(json.dumps(list(curve), indent=2, sort_keys=True) + "\n")
    Path(png_path).write_bytes(_plot_png(points))


def _plot_png(points: list[tuple[float, float]]) -> bytes:
    width, height, margin = PLOT_WIDTH, PLOT_HEIGHT, PLOT_MARGIN
    pixels = bytearray(bytes(WHITE) * (width * height))

    def put(x: int, y: int, color: tuple[int, int, int]) -> None:
        if 0 <= x < width and 0 <= y < height:
            i = 3 * (y * width + x)
            pixels[i : i + 3] = bytes(color)

    def line(x0: int, y0: int, x1: int, y1: int, color: tuple[int, int, int], thick: int) -> None:
        dx, dy = abs(x1 - x0), -abs(y1 - y0)  # Bresenham
        sx, sy = (1 if x0 < x1 else -1), (1 if y0 < y1 else -1)
        err = dx + dy
        while True:
            for ox in range(thick):
                for oy in range(thick):
                    put(x0 + ox, y0 + oy, color)
            if (x0, y0) == (x1, y1):
                return
            e2 = 2 * err
            if e2 >= dy:
                err, x0 = err + dy, x0 + sx
            if e2 <= dx:
                err, y0 = err + dx, y0 + sy

    left, right, top, bottom = margin, width - margin, margin // 2, height - margin
    for i in range(1, 5):  # grid
        y = bottom - i * (bottom - top) // 4
        line(left, y, right, y, GREY, 1)
    line(left, bottom, right, bottom, BLACK, 1)  # x axis
    line(left, top, left, bottom, BLACK, 1)  # y axis
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_low, x_high = min(xs), max(xs)
    y_low, y_high = min(ys), max(ys)
    pad = (y_high - y_low) * 0.05 or max(abs(y_high) * 0.05, 1e-6)
    y_low, y_high = y_low - pad, y_high + pad

    def to_pixel(x: float, y: float) -> tuple[int, int]:
        px = left + (0.5 if x_high == x_low else (x - x_low) / (x_high - x_low)) * (right - left)
        py = bottom - (y - y_low) / (y_high - y_low) * (bottom - top)
        return round(px), round(py)

    drawn = [to_pixel(x, y) for x, y in points]
    if len(drawn) == 1:
        x, y = drawn[0]
        line(x - 2, y, x + 2, y, BLUE, 3)
    for (x0, y0), (x1, y1) in itertools.pairwise(drawn):
        line(x0, y0, x1, y1, BLUE, 2)
    return encode_png(width, height, bytes(pixels))


def encode_png(width: int, height: int, rgb: bytes) -> bytes:
    """An 8-bit RGB PNG of ``rgb`` (rows top to bottom, 3 bytes a pixel), unfiltered."""
    if len(rgb) != 3 * width * height:
        raise ValueError(f"{len(rgb)} bytes are not {width}x{height} RGB pixels")
    stride = 3 * width
    raw = b"".join(b"\x00" + rgb[y * stride : (y + 1) * stride] for y in range(height))

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = zlib.crc32(kind + body) & 0xFFFFFFFF
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(raw, 9))
        + chunk(b"IEND", b"")
    )
