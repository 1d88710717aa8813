"""Held-out evaluation: does the adapter predict unseen examples better than its base model?

Base and adapter are scored on the same held-out examples and the same token positions that
training takes its loss on (the answers of instruction pairs and chats, every token of text),
so the two numbers and their ratio are comparable. A few greedy generations, base beside
adapter beside the reference, show what the numbers mean.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from peft import PeftModel
from tqdm import tqdm
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from backend.datanets.formats import DataFormat
from backend.modelfactory.dataset import Example
from backend.modelfactory.lora_training import collate, pad_token_id, resolve_device, shares_prefix
from backend.modelfactory.sft import chat_messages, encode_examples, text_token_ids, token_losses

log = logging.getLogger(__name__)

EVAL_BATCH = 8  # examples per forward pass


@dataclass(frozen=True)
class Sample:
    prompt: str
    base_answer: str
    adapter_answer: str
    reference: str


@dataclass(frozen=True)
class EvalReport:
    examples: int  # held-out examples scored
    tokens: int  # labelled tokens scored (the same for base and adapter)
    base_loss: float  # mean cross-entropy per token, nats
    adapter_loss: float
    base_perplexity: float
    adapter_perplexity: float
    relative_loss_reduction: float  # (base - adapter) / base
    samples: tuple[Sample, ...]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["samples"] = [asdict(s) for s in self.samples]
        return data


def _perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))  # exp overflows a float past ~709 nats


def _mean_loss(
    model: PeftModel, encoded: list[tuple[list[int], list[int]]], pad_id: int,
    device: torch.device,
) -> tuple[float, int]:  # fmt: skip
    total, count = 0.0, 0
    share = shares_prefix(device)
    for start in range(0, len(encoded), EVAL_BATCH):
        batch = (t.to(device) for t in collate(encoded[start : start + EVAL_BATCH], pad_id))
        losses = token_losses(model, *batch, share_prefix=share)
        total += float(losses.double().sum())
        count += losses.numel()
    return total / count, count


def _prompt_and_reference(
    tokenizer: PreTrainedTokenizerBase, example: Example
) -> tuple[str, list[int], str]:
    """``(prompt shown, prompt token ids, reference answer)`` of one example."""
    if example.kind == DataFormat.TEXT.value:
        text = example.text or ""
        cut = len(text) // 2
        return text[:cut], text_token_ids(tokenizer, text[:cut]), text[cut:]
    chat = chat_messages(example)
    last = max(i for i, m in enumerate(chat) if m["role"] == "assistant")
    context = chat[:last]
    ids = list(tokenizer.apply_chat_template(context, tokenize=True, add_generation_prompt=True))
    shown = next((m["content"] for m in reversed(context) if m["role"] != "assistant"), "")
    return shown, ids, chat[last]["content"]


def _generate(
    model: PeftModel, tokenizer: PreTrainedTokenizerBase, ids: list[int], new_tokens: int
) -> str:
    input_ids = torch.tensor([ids], device=model.device)
    out = model.generate(
        input_ids=input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=new_tokens,
        do_sample=False,
        pad_token_id=pad_token_id(tokenizer),
    )
    return tokenizer.decode(out[0, len(ids) :], skip_special_tokens=True).strip()


def evaluate(
    base_dir: str | Path,
    adapter_dir: str | Path,
    eval_examples: Sequence[Example],
    max_length: int,
    samples: int = 3,
    max_new_tokens: int = 48,
    device: str = "cpu",
    progress: bool = False,
) -> EvalReport:
    """Scores base and base+adapter on ``eval_examples``; greedy generations for the first
    ``samples`` of them (``progress``: a bar over those stages on stderr)."""
    where = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    encoded, dropped = encode_examples(tokenizer, eval_examples, max_length)
    if not encoded:
        raise ValueError(
            f"none of {len(eval_examples)} eval examples has a labelled token "
            f"within max_length={max_length}"
        )
    pad_id = pad_token_id(tokenizer)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).to(where).eval()
    positions = getattr(base.config, "max_position_embeddings", None)
    shown: list[Sample] = []
    bar = tqdm(total=2 + samples, desc="eval", unit="stage", disable=not progress)
    with torch.no_grad(), bar:
        adapter_loss, tokens = _mean_loss(model, encoded, pad_id, where)
        bar.update()
        with model.disable_adapter():
            base_loss, _ = _mean_loss(model, encoded, pad_id, where)
        bar.update()
        left_out = set(dropped)
        kept = [e for i, e in enumerate(eval_examples) if i not in left_out]
        for example in kept[:samples]:
            prompt, ids, reference = _prompt_and_reference(tokenizer, example)
            room = max_new_tokens if positions is None else positions - len(ids)
            budget = min(max_new_tokens, room)
            if budget <= 0:
                continue
            adapter_answer = _generate(model, tokenizer, ids, budget)
            with model.disable_adapter():
                base_answer = _generate(model, tokenizer, ids, budget)
            shown.append(Sample(prompt, base_answer, adapter_answer, reference))
            bar.update()
    report = EvalReport(
        examples=len(encoded),
        tokens=tokens,
        base_loss=base_loss,
        adapter_loss=adapter_loss,
        base_perplexity=_perplexity(base_loss),
        adapter_perplexity=_perplexity(adapter_loss),
        relative_loss_reduction=(base_loss - adapter_loss) / base_loss if base_loss else 0.0,
        samples=tuple(shown),
    )
    log.info(
        "eval on %d examples (%d tokens): loss %.4f -> %.4f (%.1f%% lower), ppl %.2f -> %.2f",
        report.examples, tokens, base_loss, adapter_loss, 100 * report.relative_loss_reduction,
        report.base_perplexity, report.adapter_perplexity,
    )  # fmt: skip
    return report


def greedy_answers(
    base_dir: str | Path,
    adapter_dir: str | Path,
    questions: Sequence[str],
    max_new_tokens: int = 32,
    device: str = "cpu",
    progress: bool = False,
) -> list[str]:
    """The adapter's greedy answer to each question (a user turn in the base's chat template):
    what a node serving it would answer at temperature 0 (``progress``: a bar on stderr)."""
    where = resolve_device(device)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, adapter_dir).to(where).eval()
    answers = []
    with torch.no_grad():
        for question in tqdm(questions, desc="answers", unit="question", disable=not progress):
            chat = [{"role": "user", "content": question}]
            ids = list(tokenizer.apply_chat_template(chat, tokenize=True,
                                                     add_generation_prompt=True))  # fmt: skip
            answers.append(_generate(model, tokenizer, ids, max_new_tokens))
    return answers
