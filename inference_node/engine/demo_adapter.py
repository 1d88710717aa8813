"""A small real LoRA adapter for the demo, trained on CPU with a plain torch loop.

The demo serves a model that has learned something before ModelFactory exists: the adapter
is fine-tuned on instruction pairs (``datasets/unit-conversions/``) and saved in PEFT format
(``adapter_config.json`` + ``adapter_model.safetensors``), as ModelFactory will publish.

Each pair becomes one chat: the prompt as the user turn, the answer as the assistant turn,
formatted by the base model's own chat template, so training sees what serving will send.
The loss covers only the answer tokens (through the end-of-turn token). Two savings keep a
step cheap on CPU without changing its result: logits are computed only at those positions
(sparing most of the output projection on a 49k vocabulary), and the prefix that all chats of
a batch share (the template's system prompt) goes through the model once, not once per row.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from inference_node.engine.adapters import CONFIG_FILE, LLAMA_PROJECTIONS, WEIGHTS_FILE

log = logging.getLogger(__name__)

IGNORE = -100  # label of tokens that carry no loss
LOG_EVERY = 5  # steps


def load_instruction_pairs(folder: str | Path) -> list[tuple[str, str]]:
    """The ``(prompt, response)`` pairs of every ``*.jsonl`` under ``folder``, in path order.

    Files under a ``bad/`` folder (deliberately wrong data kept for curators) are skipped.
    Each line must be a JSON object with string ``prompt`` and ``response``.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"instruction data folder {folder} does not exist")
    files = sorted(
        path for path in folder.rglob("*.jsonl") if "bad" not in path.relative_to(folder).parts[:-1]
    )
    pairs: list[tuple[str, str]] = []
    for path in files:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{where}: not valid JSON: {exc}") from exc
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object with prompt and response")
            prompt, response = record.get("prompt"), record.get("response")
            if not isinstance(prompt, str) or not isinstance(response, str):
                raise ValueError(f"{where}: prompt and response must both be strings")
            pairs.append((prompt, response))
    if not pairs:
        raise ValueError(f"no instruction pairs in {folder} (looked for *.jsonl outside bad/)")
    return pairs


def encode_pair(
    tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str, max_length: int
) -> tuple[list[int], list[int]]:
    """``(input_ids, labels)`` of one chat, labels ``IGNORE`` outside the answer.

    The answer runs through the first end-of-turn (eos) token; the whole is cut to
    ``max_length`` tokens from the right, so a long answer loses its tail first.
    """
    user = {"role": "user", "content": prompt}
    prompt_ids = list(tokenizer.apply_chat_template([user], add_generation_prompt=True))
    full_ids = list(tokenizer.apply_chat_template([user, {"role": "assistant", "content": answer}]))
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise ValueError("the chat template does not render the prompt as a prefix of the chat")
    answer_ids = full_ids[len(prompt_ids) :]
    eos = tokenizer.eos_token_id
    if eos is not None and eos in answer_ids:
        answer_ids = answer_ids[: answer_ids.index(eos) + 1]
    input_ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_length]
    return input_ids, labels


def train_demo_adapter(
    base_dir: str | Path,
    pairs: Sequence[tuple[str, str]],
    out_dir: str | Path,
    *,
    rank: int = 8,
    alpha: int = 16,
    targets: Sequence[str] = ("q_proj", "k_proj", "v_proj", "o_proj"),
    steps: int = 30,
    lr: float = 2e-3,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int = 128,
) -> Path:
    """Trains a LoRA adapter of ``base_dir`` on ``pairs`` and saves it in PEFT format.

    Deterministic on CPU: the same inputs give the same adapter bytes. The adapter's files
    appear in ``out_dir`` only once fully written. Returns ``out_dir``.

    ``max_length`` must hold whole chats, or the cut answers never show the end-of-turn token
    and the adapter does not learn to stop: SmolLM2's template alone (default system prompt,
    turn markers) is ~40 tokens, and the unit-conversion chats reach 122.
    """
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    _check_arguments(pairs, rank, alpha, targets, steps, lr, batch_size, max_length)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    if tokenizer.chat_template is None:
        raise ValueError(f"base model {base_dir}: its tokenizer has no chat template")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples = [encode_pair(tokenizer, p, a, max_length) for p, a in pairs]
    examples = [e for e in examples if any(label != IGNORE for label in e[1][1:])]
    if not examples:
        raise ValueError(
            f"no pair keeps an answer token within max_length={max_length}: raise max_length"
        )
    if len(examples) < len(pairs):
        log.warning("%d of %d pairs have no answer within %d tokens, skipped",
                    len(pairs) - len(examples), len(pairs), max_length)  # fmt: skip
    eos = tokenizer.eos_token_id
    cut = 0 if eos is None else sum(eos not in labels for _, labels in examples)
    if cut:
        log.warning("%d of %d answers cut at max_length=%d: the adapter will not learn to end "
                    "them", cut, len(examples), max_length)  # fmt: skip

    started = time.perf_counter()
    with _deterministic(seed):
        model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
        lora = LoraConfig(
            r=rank,
            lora_alpha=alpha,
            target_modules=list(targets),
            lora_dropout=0.0,
            bias="none",
            task_type="CAUSAL_LM",
        )
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, lora)
        peft_model.train()
        decoder = peft_model.get_base_model().get_decoder()
        head = peft_model.get_base_model().get_output_embeddings()
        params = [p for p in peft_model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
        generator = torch.Generator().manual_seed(seed)
        losses: list[float] = []
        for step, batch in enumerate(_batches(examples, batch_size, steps, generator), start=1):
            loss = _answer_loss(decoder, head, *_collate(batch, pad_id))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if step % LOG_EVERY == 0 or step in (1, steps):
                log.info("demo adapter step %d/%d: loss %.4f", step, steps, losses[-1])
        peft_model.peft_config["default"].base_model_name_or_path = base_dir.name
        _save(peft_model, out_dir)
    log.info(
        "demo adapter trained in %.1f s (%d steps of %d): loss %.4f -> %.4f; saved to %s",
        time.perf_counter() - started, steps, batch_size, losses[0], losses[-1], out_dir,
    )  # fmt: skip
    return out_dir


def _check_arguments(
    pairs: Sequence[tuple[str, str]],
    rank: int,
    alpha: int,
    targets: Sequence[str],
    steps: int,
    lr: float,
    batch_size: int,
    max_length: int,
) -> None:
    if not pairs:
        raise ValueError("no training pairs given")
    for name, value in (("rank", rank), ("steps", steps), ("batch_size", batch_size)):
        if not isinstance(value, int) or value <= 0:
            raise ValueError(f"{name}={value!r}, expected a positive integer")
    if max_length < 2:
        raise ValueError(f"max_length={max_length!r}, expected at least 2 tokens")
    if alpha <= 0 or lr <= 0:
        raise ValueError(f"alpha={alpha!r} and lr={lr!r} must be positive")
    unknown = sorted(set(targets) - set(LLAMA_PROJECTIONS))
    if not targets or unknown:
        raise ValueError(f"targets {list(targets)}: expected some of {list(LLAMA_PROJECTIONS)}")


def _batches(
    examples: list[tuple[list[int], list[int]]],
    batch_size: int,
    steps: int,
    generator: torch.Generator,
) -> Iterator[list[tuple[list[int], list[int]]]]:
    """``steps`` batches drawn without replacement, reshuffled at every pass over the data."""
    order: list[int] = []
    size = min(batch_size, len(examples))
    for _ in range(steps):
        if len(order) < size:
            order = torch.randperm(len(examples), generator=generator).tolist()
        chosen, order = order[:size], order[size:]
        yield [examples[i] for i in chosen]


def _collate(
    batch: list[tuple[list[int], list[int]]], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Right-padded ``input_ids``, ``attention_mask`` and ``labels``, each [batch, longest]."""
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), IGNORE, dtype=torch.long)
    for row, (ids, row_labels) in enumerate(batch):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
        labels[row, : len(row_labels)] = torch.tensor(row_labels)
    return input_ids, attention_mask, labels


def _answer_loss(
    decoder: torch.nn.Module,
    head: torch.nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    labels: torch.Tensor,
) -> torch.Tensor:
    """Mean cross-entropy over the labelled (answer) tokens; logits only where a label is."""
    hidden = decoder_hidden_states(decoder, input_ids, attention_mask)  # [batch, seq, hidden]
    targets = labels[:, 1:]  # [batch, seq - 1]: token t + 1 is predicted at position t
    scored = targets != IGNORE
    logits = head(hidden[:, :-1][scored])  # [answer tokens, vocab]
    return F.cross_entropy(logits.float(), targets[scored])


def shared_prefix_length(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> int:
    """How many leading tokens every row has in common (at most all but the last one)."""
    same = (input_ids == input_ids[:1]).all(dim=0) & attention_mask.bool().all(dim=0)  # [seq]
    differing = (~same).nonzero()
    length = int(differing[0]) if len(differing) else input_ids.shape[1]
    return min(length, input_ids.shape[1] - 1)


def decoder_hidden_states(
    decoder: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor
) -> torch.Tensor:
    """The decoder's last hidden states [batch, seq, hidden], the shared prefix computed once.

    Every chat starts with the same template text (with SmolLM2: the default system prompt
    and the user turn marker, 24 tokens), so its keys and values are computed for one row and
    repeated for the batch: the same loss and gradients for about a quarter less work (SmolLM2,
    8 chats of 64 tokens, one core: 7.7 s -> 5.6 s per step).
    """
    batch = input_ids.shape[0]
    prefix = shared_prefix_length(input_ids, attention_mask)
    if batch == 1 or prefix == 0:
        return decoder(
            input_ids=input_ids, attention_mask=attention_mask, use_cache=False
        ).last_hidden_state
    first = decoder(input_ids=input_ids[:1, :prefix], use_cache=True)
    cache = first.past_key_values
    cache.batch_repeat_interleave(batch)
    rest = decoder(
        input_ids=input_ids[:, prefix:],
        attention_mask=attention_mask,  # [batch, seq]: covers the cached prefix too
        past_key_values=cache,
        use_cache=True,
    )
    shared = first.last_hidden_state.expand(batch, -1, -1)  # [batch, prefix, hidden]
    return torch.cat([shared, rest.last_hidden_state], dim=1)


@contextmanager
def _deterministic(seed: int) -> Iterator[None]:
    """Seeded, deterministic kernels; restores the caller's global torch state afterwards."""
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    rng_state = torch.get_rng_state()
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
        torch.set_rng_state(rng_state)


def _save(peft_model: torch.nn.Module, out_dir: Path) -> None:
    """Writes the two PEFT files aside, then moves them into ``out_dir`` (config last)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=out_dir, prefix=".incoming-"))
    try:
        # The embeddings are not trained; "auto" would ask the Hugging Face hub to be sure.
        peft_model.save_pretrained(staging, save_embedding_layers=False)
        _sort_target_modules(staging / CONFIG_FILE)
        for name in (WEIGHTS_FILE, CONFIG_FILE):
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _sort_target_modules(config_path: Path) -> None:
    """PEFT writes ``target_modules`` in set order, which changes with Python's hash seed."""
    config = json.loads(config_path.read_text())
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True))
