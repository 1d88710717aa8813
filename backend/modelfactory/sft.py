"""LoRA supervised fine-tuning of a causal LM on Datanet examples, with a plain torch loop.

Instruction pairs and chats are formatted with the base model's own chat template (what the
inference node will send it), and the loss covers only the assistant's answers through their
end-of-turn token; plain text is trained as causal LM on every token, at a learning rate that
warms up, then decays linearly to zero. The loop is our own (training_loop.py, shared with
DPO), not a trainer's, because two savings make a CPU step much cheaper without changing its
result: logits are computed only where a label is (sparing most of the output projection on a
49k vocabulary), and on a CPU the prefix every row of a batch shares (the template's system
prompt) runs through the model once. ``train.device`` picks CPU or CUDA. Training is seeded
and, on CPU, uses deterministic kernels: the same inputs give byte-identical adapter files.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from backend.datanets.formats import DataFormat
from backend.modelfactory.dataset import Example
from backend.modelfactory.lora_training import (
    IGNORE,
    collate,
    decoder_hidden_states,
    deterministic,
    new_lora_model,
    pad_token_id,
    resolve_device,
    save_adapter,
    shares_prefix,
)
from backend.modelfactory.spec import LoraSettings, TrainSettings
from backend.modelfactory.training_loop import (
    StepCallback,
    run_loop,
    warmup_then_decay,
)

log = logging.getLogger(__name__)


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


def train_sft(
    base_dir: str | Path,
    train: list[Example],
    lora: LoraSettings,
    settings: TrainSettings,
    out_dir: str | Path,
    progress: bool = True,
    on_step: StepCallback | None = None,
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
    device = resolve_device(settings.device)
    share_prefix = shares_prefix(device)

    with deterministic(settings.seed, device):
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        peft_model = new_lora_model(model, lora, settings.seed).to(device)

        def batch_loss(indices: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
            input_ids, attention_mask, labels = collate([encoded[i] for i in indices], pad_id)
            loss = token_losses(
                peft_model, input_ids.to(device), attention_mask.to(device), labels.to(device),
                share_prefix,
            ).mean()  # fmt: skip
            return loss, {"tokens": int(attention_mask.sum())}

        loop = run_loop("sft", peft_model, batch_loss, len(encoded), settings,
                        warmup_then_decay, progress, on_step)  # fmt: skip
        save_adapter(peft_model, out_dir, base_dir.name)
    curve, seconds = loop.curve, loop.seconds
    tokens = int(sum(loop.metrics["tokens"]))
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
