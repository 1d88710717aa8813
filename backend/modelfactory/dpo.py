"""Direct Preference Optimization of a LoRA adapter on preference pairs (Rafailov et al. 2023).

The policy is the base model with a trainable LoRA adapter: the model's current adapter when
given (DPO then produces its next version), else a fresh one. The reference is the same starting
point, frozen. Since the policy equals the reference before the first step, the reference
log-probabilities are computed once, up front, by the policy itself (no second model in memory).

Each pair is two chats formatted by the base model's chat template (user = prompt, assistant =
answer); ``log p(answer | prompt)`` sums the answer tokens through the end-of-turn token, and

    loss = -log sigmoid(beta * ((log pi(chosen) - log ref(chosen))
                                - (log pi(rejected) - log ref(rejected))))

Chosen and rejected rows of a batch go through the model together; on a CPU their common
prefix (the template's system text, and the whole prompt when a batch holds one pair) is
computed once. Seeded and deterministic on CPU: the same inputs give the same adapter bytes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import torch
import torch.nn.functional as F  # noqa: N812 - the conventional name
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from backend.modelfactory.lora_training import (
    CONFIG_FILE,
    IGNORE,
    WEIGHTS_FILE,
    Row,
    collate,
    decoder_hidden_states,
    deterministic,
    new_lora_model,
    pad_token_id,
    resolve_device,
    save_adapter,
    shares_prefix,
)
from backend.modelfactory.spec import JobSpecError, LoraSettings, TrainSettings
from backend.modelfactory.training_loop import StepCallback, constant, run_loop

log = logging.getLogger(__name__)

Example = Row  # (input_ids, labels) of one chat


class DPOError(ValueError):
    """Preference data or settings that DPO cannot train on; the message says which."""


class PairLike(Protocol):
    """Anything with a prompt and a chosen and a rejected answer (read-only is enough)."""

    @property
    def prompt(self) -> str: ...
    @property
    def chosen(self) -> str: ...
    @property
    def rejected(self) -> str: ...


@dataclass(frozen=True)
class Pair:
    """A preference pair (any object with these three attributes will do)."""

    prompt: str
    chosen: str
    rejected: str


@dataclass(frozen=True)
class DPOResult:
    adapter_dir: Path
    losses: list[float]  # per optimizer step
    reward_accuracies: list[float]  # per step: share of the batch's pairs the policy ranks right
    steps: int
    pairs: int  # pairs trained on
    skipped: int  # pairs with no answer token within max_length (left out)
    tokens: int  # tokens through the model per epoch (chosen and rejected rows)
    seconds: float
    lora: LoraSettings  # what the adapter is (the initial adapter's own settings when given)
    beta: float

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["adapter_dir"] = str(self.adapter_dir)
        data["lora"]["target_modules"] = list(self.lora.target_modules)
        return data


# ---------------------------------------------------------------- data


def encode_chat(
    tokenizer: PreTrainedTokenizerBase, prompt: str, answer: str, max_length: int
) -> Example:
    """``(input_ids, labels)`` of one chat, labels ``IGNORE`` outside the answer.

    The answer runs through the first end-of-turn (eos) token; the whole is cut to
    ``max_length`` tokens from the right, so a long answer loses its tail first.
    """
    user = {"role": "user", "content": prompt}
    prompt_ids = list(tokenizer.apply_chat_template([user], add_generation_prompt=True))
    full_ids = list(tokenizer.apply_chat_template([user, {"role": "assistant", "content": answer}]))
    if full_ids[: len(prompt_ids)] != prompt_ids:
        raise DPOError("the chat template does not render the prompt as a prefix of the chat")
    answer_ids = full_ids[len(prompt_ids) :]
    eos = tokenizer.eos_token_id
    if eos is not None and eos in answer_ids:
        answer_ids = answer_ids[: answer_ids.index(eos) + 1]
    input_ids = (prompt_ids + answer_ids)[:max_length]
    labels = ([IGNORE] * len(prompt_ids) + answer_ids)[:max_length]
    return input_ids, labels


def encode_pairs(
    tokenizer: PreTrainedTokenizerBase, pairs: Sequence[PairLike], max_length: int
) -> tuple[list[tuple[Example, Example]], int]:
    """The (chosen, rejected) chats of ``pairs`` that keep an answer token within
    ``max_length``, and how many pairs were left out for lack of one."""
    if tokenizer.chat_template is None:
        raise DPOError("the base model's tokenizer has no chat template")
    encoded, skipped = [], 0
    for i, pair in enumerate(pairs):
        texts = [getattr(pair, name, None) for name in ("prompt", "chosen", "rejected")]
        if not all(isinstance(t, str) and t.strip() for t in texts):
            raise DPOError(f"pair {i}: prompt, chosen and rejected must be non-empty strings")
        if pair.chosen == pair.rejected:
            raise DPOError(f"pair {i}: chosen and rejected are the same answer")
        chosen = encode_chat(tokenizer, pair.prompt, pair.chosen, max_length)
        rejected = encode_chat(tokenizer, pair.prompt, pair.rejected, max_length)
        if all(any(label != IGNORE for label in ex[1][1:]) for ex in (chosen, rejected)):
            encoded.append((chosen, rejected))
        else:
            skipped += 1
    if skipped:
        log.warning("%d of %d pairs have no answer within %d tokens, left out",
                    skipped, len(pairs), max_length)  # fmt: skip
    return encoded, skipped


# ---------------------------------------------------------------- log-probabilities


def answer_logprobs(
    model: torch.nn.Module, rows: Sequence[Example], pad_id: int, share_prefix: bool = True
) -> torch.Tensor:
    """[rows] the summed log-probability of each row's answer tokens; logits only there."""
    base = model.get_base_model() if isinstance(model, PeftModel) else model
    decoder, head = base.get_decoder(), base.get_output_embeddings()
    device = head.weight.device
    input_ids, attention_mask, labels = (t.to(device) for t in collate(rows, pad_id))
    hidden = decoder_hidden_states(decoder, input_ids, attention_mask, share_prefix)
    targets = labels[:, 1:]  # [rows, seq - 1]: token t + 1 is predicted at position t
    scored = targets != IGNORE
    logits = head(hidden[:, :-1][scored]).float()  # [answer tokens, vocab], row-major
    token_logps = -F.cross_entropy(logits, targets[scored], reduction="none")  # [answer tokens]
    counts = scored.sum(dim=1).tolist()
    return torch.stack([part.sum() for part in token_logps.split(counts)])


def _pair_logps(
    model: torch.nn.Module, batch: Sequence[tuple[Example, Example]], pad_id: int,
    share_prefix: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """([pairs] chosen, [pairs] rejected) answer log-probs, all rows in one forward pass."""
    rows = [c for c, _ in batch] + [r for _, r in batch]
    logps = answer_logprobs(model, rows, pad_id, share_prefix)
    return logps[: len(batch)], logps[len(batch) :]


def dpo_loss(
    pi_chosen: torch.Tensor,
    pi_rejected: torch.Tensor,
    ref_chosen: torch.Tensor,
    ref_rejected: torch.Tensor,
    beta: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean loss, [pairs] reward margins) of the sigmoid DPO loss."""
    margins = beta * ((pi_chosen - ref_chosen) - (pi_rejected - ref_rejected))  # [pairs]
    return -F.logsigmoid(margins).mean(), margins


# ---------------------------------------------------------------- training


def train_dpo(
    base_dir: str | Path,
    init_adapter_dir: str | Path | None,
    pairs_train: Sequence[PairLike],
    lora: LoraSettings,
    settings: TrainSettings,
    out_dir: str | Path,
    progress: bool = True,
    on_step: StepCallback | None = None,
) -> DPOResult:
    """Trains a LoRA adapter of ``base_dir`` by DPO on ``pairs_train``; saves it (PEFT format)
    to ``out_dir`` and returns what happened.

    With ``init_adapter_dir`` the adapter starts from (and is judged against) that adapter, whose
    own rank, alpha and targets then apply (``lora`` is used only for a fresh adapter); without
    it, a fresh adapter of ``lora`` starts as the identity, so the reference is the base model.
    ``settings``: epochs, batch_size (pairs per step), learning_rate, max_length, seed,
    max_steps, beta. Deterministic on CPU. ``on_step(step, total)`` is called after every
    optimizer step (a job's progress, for those who follow it).
    """
    base_dir, out_dir = Path(base_dir), Path(out_dir)
    if not pairs_train:
        raise DPOError("no preference pairs to train on")
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pad_id = pad_token_id(tokenizer)
    examples, skipped = encode_pairs(tokenizer, pairs_train, settings.max_length)
    if not examples:
        raise DPOError(
            f"no pair keeps an answer token within max_length={settings.max_length}: raise it"
        )
    batch_size = min(settings.batch_size, len(examples))
    tokens = sum(len(c[0]) + len(r[0]) for c, r in examples)
    device = resolve_device(settings.device)
    share = shares_prefix(device)

    started = time.perf_counter()
    with deterministic(settings.seed, device):
        model = _policy(base_dir, init_adapter_dir, lora, settings.seed).to(device)
        used_lora = _lora_of(model)
        if init_adapter_dir is not None and used_lora != lora:
            log.warning("DPO continues adapter %s with its own settings %s, not %s",
                        init_adapter_dir, used_lora, lora)  # fmt: skip
        model.eval()  # the reference: the starting point, without dropout
        with torch.no_grad():
            ref = [_pair_logps(model, examples[i : i + batch_size], pad_id, share)
                   for i in range(0, len(examples), batch_size)]  # fmt: skip
        ref_chosen = torch.cat([c for c, _ in ref])  # [pairs]
        ref_rejected = torch.cat([r for _, r in ref])  # [pairs]

        def batch_loss(indices: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
            pi_chosen, pi_rejected = _pair_logps(
                model, [examples[i] for i in indices], pad_id, share
            )
            loss, margins = dpo_loss(
                pi_chosen, pi_rejected, ref_chosen[indices], ref_rejected[indices], settings.beta
            )
            return loss, {"reward_accuracy": (margins > 0).float().mean().item()}

        # A constant learning rate, not SFT's warmup and decay: the demo's DPO gain was measured
        # with it, and another schedule would need that measurement redone.
        loop = run_loop("dpo", model, batch_loss, len(examples), settings, constant, progress,
                        on_step)  # fmt: skip
        save_adapter(model, out_dir, base_dir.name)
    seconds = time.perf_counter() - started
    losses, accuracies, steps = loop.losses, loop.metrics["reward_accuracy"], len(loop.curve)
    log.info("DPO: %d steps of %d pairs in %.1f s, loss %.4f -> %.4f; saved to %s",
             steps, batch_size, seconds, losses[0], losses[-1], out_dir)  # fmt: skip
    return DPOResult(
        adapter_dir=out_dir, losses=losses, reward_accuracies=accuracies, steps=steps,
        pairs=len(examples), skipped=skipped, tokens=tokens, seconds=seconds, lora=used_lora,
        beta=settings.beta,
    )  # fmt: skip


def _policy(
    base_dir: Path, init_adapter_dir: str | Path | None, lora: LoraSettings, seed: int
) -> PeftModel:
    """The base model (float32) with a trainable LoRA adapter named ``default``."""
    base = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if init_adapter_dir is not None:
        init = Path(init_adapter_dir)
        if not (init / CONFIG_FILE).is_file() or not (init / WEIGHTS_FILE).is_file():
            raise DPOError(f"initial adapter {init} lacks {CONFIG_FILE} or {WEIGHTS_FILE}")
        return PeftModel.from_pretrained(base, init, is_trainable=True)
    return new_lora_model(base, lora, seed)


def _lora_of(model: PeftModel) -> LoraSettings:
    """The settings of the adapter being trained (those of the initial adapter, if any)."""
    config = model.peft_config["default"]
    targets = config.target_modules
    try:
        return LoraSettings(
            rank=config.r,
            alpha=float(config.lora_alpha),
            dropout=float(config.lora_dropout),
            target_modules=(targets,) if isinstance(targets, str) else tuple(targets),
        )
    except JobSpecError as exc:
        raise DPOError(f"the initial adapter is not one ModelFactory trains: {exc}") from None


# ---------------------------------------------------------------- evaluation


def preference_metrics(
    base_dir: str | Path,
    adapter_dir: str | Path | None,
    reference_adapter_dir: str | Path | None,
    pairs: Sequence[PairLike],
    beta: float,
    max_length: int = 256,
    batch_size: int = 8,
    device: str = "cpu",
) -> dict[str, float | int]:
    """How the policy (base + ``adapter_dir``; the base when None) ranks ``pairs`` against the
    reference (base + ``reference_adapter_dir``; the base when None).

    The implicit reward of an answer is ``beta * (log pi(answer) - log ref(answer))``:
    ``accuracy`` is the share of pairs whose chosen answer gets the strictly higher reward
    (0 when the policy is the reference: nothing learned yet), ``mean_margin`` the mean reward
    difference. ``likelihood_accuracy`` needs no reference: the share of pairs whose chosen
    answer is the more probable one under the policy. ``pairs``: how many were scored.
    """
    base_dir = Path(base_dir)
    where = resolve_device(device)
    share = shares_prefix(where)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    pad_id = pad_token_id(tokenizer)
    examples, _ = encode_pairs(tokenizer, pairs, max_length)
    if not examples:
        raise DPOError(f"no pair to score within max_length={max_length}")
    model: torch.nn.Module = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    names = {"policy": adapter_dir, "reference": reference_adapter_dir}
    loaded = {role: Path(path) for role, path in names.items() if path is not None}
    for role, path in loaded.items():
        if isinstance(model, PeftModel):
            model.load_adapter(path, adapter_name=role)
        else:
            model = PeftModel.from_pretrained(model, path, adapter_name=role)
    model.to(where).eval()

    def logps(role: str) -> tuple[torch.Tensor, torch.Tensor]:
        if role in loaded:
            model.set_adapter(role)
            context = nullcontext()
        else:
            context = model.disable_adapter() if isinstance(model, PeftModel) else nullcontext()
        with context, torch.no_grad():
            parts = [_pair_logps(model, examples[i : i + batch_size], pad_id, share)
                     for i in range(0, len(examples), batch_size)]  # fmt: skip
        return torch.cat([c for c, _ in parts]), torch.cat([r for _, r in parts])

    pi_chosen, pi_rejected = logps("policy")
    ref_chosen, ref_rejected = logps("reference")
    _, margins = dpo_loss(pi_chosen, pi_rejected, ref_chosen, ref_rejected, beta)
    return {
        "accuracy": (margins > 0).double().mean().item(),
        "mean_margin": margins.double().mean().item(),
        "likelihood_accuracy": (pi_chosen > pi_rejected).double().mean().item(),
        "pairs": len(examples),
    }
