"""bench/training.py's measurements: SFT quality (train, then score base and adapter on held-out
answers), SFT throughput of ``train_sft`` against trl's ``SFTTrainer``, and DPO from the SFT
adapter (preference metrics before and after)."""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from common import loadavg
from peft import LoraConfig
from training_setup import (
    BETA,
    DPO_LEARNING_RATE,
    ERRORS,
    EVAL_FRACTION,
    LORA,
    MAX_LENGTH,
    SEED,
    SFT_LEARNING_RATE,
    Plan,
    preference_examples,
    spread,
)
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
from trl import SFTConfig, SFTTrainer

import datasets
from backend.modelfactory.dataset import Example, split_examples
from backend.modelfactory.dpo import Pair, preference_metrics, train_dpo
from backend.modelfactory.evaluate import evaluate
from backend.modelfactory.sft import train_sft
from backend.modelfactory.spec import TrainSettings

log = logging.getLogger("bench.training")


def measure_sft_quality(
    base_dir: Path, train: list[Example], held: list[Example], plan: Plan, work: Path, device: str
) -> tuple[dict[str, Any], Path]:
    settings = TrainSettings(
        epochs=1, batch_size=plan.batch_size, learning_rate=SFT_LEARNING_RATE,
        max_length=MAX_LENGTH, seed=SEED, eval_fraction=EVAL_FRACTION, max_steps=plan.sft_steps,
        device=device,
    )  # fmt: skip
    adapter = work / "sft-adapter"
    result = train_sft(base_dir, train, LORA, settings, adapter, progress=False)
    scored = held if plan.eval_limit is None else held[: plan.eval_limit]
    report = evaluate(
        base_dir, adapter, scored, MAX_LENGTH, samples=plan.samples,
        max_new_tokens=plan.new_tokens, device=device,
    )  # fmt: skip
    return {
        "settings": asdict(settings),
        "training": {
            "steps": result.steps,
            "examples_seen": result.steps * plan.batch_size,
            "tokens": result.tokens,
            "seconds": round(result.seconds, 2),
            "tokens_per_s": round(result.tokens_per_second, 1),
            "loss_first": round(result.loss_curve[0]["loss"], 4),
            "loss_last": round(result.loss_curve[-1]["loss"], 4),
            "loss_curve": [round(p["loss"], 4) for p in result.loss_curve],
            "dropped": len(result.dropped),
        },
        "eval": report.to_json(),
    }, adapter


class LoopTimer(TrainerCallback):
    """The seconds of the Trainer's training loop (optimizer and data loader already built)."""

    def __init__(self) -> None:
        self.began = self.ended = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.began = time.perf_counter()

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.ended = time.perf_counter()


def trl_dataset(train: Sequence[Example]) -> datasets.Dataset:
    """Conversational prompt-completion rows: trl renders them with the chat template and masks
    the prompt out of the loss."""
    return datasets.Dataset.from_list(
        [
            {
                "prompt": [{"role": "user", "content": e.prompt}],
                "completion": [{"role": "assistant", "content": e.response}],
            }
            for e in train
        ]
    )


def run_trl(
    base_dir: Path, dataset: datasets.Dataset, settings: TrainSettings, work: Path
) -> dict[str, Any]:
    """One trl SFTTrainer run of ``settings.max_steps`` steps with our settings."""
    config = SFTConfig(
        output_dir=str(work / "trl"),
        per_device_train_batch_size=settings.batch_size,
        gradient_accumulation_steps=1,
        learning_rate=settings.learning_rate,
        lr_scheduler_type="linear",
        warmup_ratio=0.05,  # as train_sft: ceil(5% of the steps), then linear decay to 0
        weight_decay=0.0,
        max_grad_norm=1.0,
        max_steps=settings.max_steps or -1,
        max_length=settings.max_length,
        seed=settings.seed,
        use_cpu=settings.device == "cpu",
        bf16=False,  # trl's default is bf16 when fp16 is off; ours trains in fp32
        fp16=False,
        gradient_checkpointing=False,  # trl's default is on; ours does not recompute
        completion_only_loss=True,
        packing=False,
        padding_free=False,
        report_to="none",
        save_strategy="no",
        disable_tqdm=True,
        logging_steps=10,
        dataloader_num_workers=0,
    )
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    lora = LoraConfig(
        r=LORA.rank, lora_alpha=int(LORA.alpha), lora_dropout=LORA.dropout,
        target_modules=list(LORA.target_modules), bias="none", task_type="CAUSAL_LM",
    )  # fmt: skip
    timer = LoopTimer()
    trainer = SFTTrainer(
        model=model,
        args=config,
        train_dataset=dataset,
        processing_class=tokenizer,
        peft_config=lora,
        callbacks=[timer],
    )
    trainer.remove_callback(PrinterCallback)  # with tqdm off it prints every log line
    out = trainer.train()
    seconds = timer.ended - timer.began
    tokens = int(trainer._total_train_tokens)  # trl's count: attention mask sums (no padding)
    return {
        "steps": trainer.state.global_step,
        "tokens": tokens,
        "seconds": round(seconds, 2),
        "tokens_per_s": round(tokens / seconds, 1),
        "train_loss": round(out.training_loss, 4),
        "config": {
            "optim": getattr(config.optim, "value", str(config.optim)),
            "completion_only_loss": trainer.completion_only_loss,
            "assistant_only_loss": config.assistant_only_loss,
            "gradient_checkpointing": config.gradient_checkpointing,
            "bf16": config.bf16,
            "torch_threads": torch.get_num_threads(),
        },
    }


def run_ours(
    base_dir: Path, train: list[Example], settings: TrainSettings, work: Path
) -> dict[str, Any]:
    result = train_sft(base_dir, train, LORA, settings, work / "ours-throughput", progress=False)
    return {
        "steps": result.steps,
        "tokens": result.tokens,
        "seconds": round(result.seconds, 2),
        "tokens_per_s": round(result.tokens_per_second, 1),
        "train_loss": round(statistics.mean(p["loss"] for p in result.loss_curve), 4),
    }


def measure_throughput(
    base_dir: Path, train: list[Example], plan: Plan, work: Path, device: str
) -> dict[str, Any]:
    settings = TrainSettings(
        epochs=max(1, -(-plan.throughput_steps * plan.batch_size // len(train))),
        batch_size=plan.batch_size, learning_rate=SFT_LEARNING_RATE, max_length=MAX_LENGTH,
        seed=SEED, eval_fraction=EVAL_FRACTION, max_steps=plan.throughput_steps, device=device,
    )  # fmt: skip
    dataset = trl_dataset(train)
    warmup = run_trl(base_dir, dataset, replace(settings, max_steps=plan.trl_warmup_steps), work)
    log.info("trl warm-up: %d steps, %.0f tokens/s", warmup["steps"], warmup["tokens_per_s"])
    rounds = range(plan.throughput_runs)
    order = [("ours", "trl") if i % 2 == 0 else ("trl", "ours") for i in rounds]
    runs: list[dict[str, Any]] = []
    for side in (name for pair in order for name in pair):
        before = loadavg()
        if side == "ours":
            run = run_ours(base_dir, train, settings, work)
        else:
            run = run_trl(base_dir, dataset, settings, work)
        runs.append({"trainer": side, **run, "loadavg_before": before, "loadavg_after": loadavg()})
        log.info("%s: %d tokens in %.1f s = %.0f tokens/s (load %s)", side, run["tokens"],
                 run["seconds"], run["tokens_per_s"], before)  # fmt: skip
    medians = {
        side: statistics.median(r["tokens_per_s"] for r in runs if r["trainer"] == side)
        for side in ("ours", "trl")
    }
    trl_config = next(r["config"] for r in runs if r["trainer"] == "trl")
    for run in runs:
        run.pop("config", None)
    return {
        "settings": asdict(settings),
        "order": [r["trainer"] for r in runs],
        "runs": runs,
        "trl_warmup": {k: warmup[k] for k in ("steps", "tokens", "seconds", "tokens_per_s")},
        "trl_config": trl_config,
        "median_tokens_per_s": {k: round(v, 1) for k, v in medians.items()},
        "ratio_ours_to_trl": round(medians["ours"] / medians["trl"], 3),
    }


def combined(parts: dict[str, dict[str, float | int]]) -> dict[str, float | int]:
    """Metrics over all pairs from the metrics of each kind (each a mean over its pairs)."""
    total = sum(int(p["pairs"]) for p in parts.values())
    merged: dict[str, float | int] = {"pairs": total}
    for key in ("accuracy", "mean_margin", "likelihood_accuracy"):
        merged[key] = sum(float(p[key]) * int(p["pairs"]) for p in parts.values()) / total
    return merged


def measure_dpo(
    base_dir: Path,
    examples: list[Example],
    sft_train: list[Example],
    sft_adapter: Path,
    plan: Plan,
    work: Path,
    device: str,
) -> dict[str, Any]:
    made = preference_examples(examples)
    error_of = {(e.contribution_id, e.byte_start): error for e, error in made}
    train, held = split_examples([e for e, _ in made], EVAL_FRACTION, SEED)
    trained_rows = {(e.contribution_id, e.byte_start) for e in sft_train}
    if {(e.contribution_id, e.byte_start) for e in train} != trained_rows:
        raise RuntimeError("the preference pairs are not split as the SFT rows were")
    train = spread(train, plan.dpo_train_pairs)
    held = spread(held, plan.dpo_eval_limit)

    def pairs(rows: Sequence[Example]) -> list[Pair]:
        return [Pair(e.prompt or "", e.chosen or "", e.rejected or "") for e in rows]

    def metrics(adapter: Path) -> dict[str, Any]:
        by_error = {}
        for error in ERRORS:
            rows = [e for e in held if error_of[(e.contribution_id, e.byte_start)] == error]
            if rows:
                by_error[error] = preference_metrics(
                    base_dir,
                    adapter,
                    None,
                    pairs(rows),
                    BETA,
                    MAX_LENGTH,
                    batch_size=8,
                    device=device,
                )
        return {"all": combined(by_error), "by_error": by_error}

    settings = TrainSettings(
        epochs=max(1, -(-plan.dpo_steps * plan.dpo_batch_size // len(train))),
        batch_size=plan.dpo_batch_size, learning_rate=DPO_LEARNING_RATE, max_length=MAX_LENGTH,
        seed=SEED, eval_fraction=EVAL_FRACTION, max_steps=plan.dpo_steps, beta=BETA,
        device=device,
    )  # fmt: skip
    before = metrics(sft_adapter)
    adapter = work / "dpo-adapter"
    result = train_dpo(base_dir, sft_adapter, pairs(train), LORA, settings, adapter, progress=False)
    after = metrics(adapter)
    first_of = {}  # one held-out pair of each kind of error, to show
    for e in held:
        first_of.setdefault(error_of[(e.contribution_id, e.byte_start)], e)
    examples_shown = [
        {"error": error, "prompt": e.prompt, "chosen": e.chosen, "rejected": e.rejected}
        for error, e in first_of.items()
    ]
    return {
        "settings": asdict(settings),
        "pairs": {
            "train": len(train),
            "held_out": len(held),
            "held_out_by_error": {
                error: sum(error_of[(e.contribution_id, e.byte_start)] == error for e in held)
                for error in ERRORS
            },
            "examples": examples_shown,
        },
        "training": {
            "steps": result.steps,
            "seconds": round(result.seconds, 2),
            "loss_first": round(result.losses[0], 4),
            "loss_last": round(result.losses[-1], 4),
            "losses": [round(x, 4) for x in result.losses],
            "reward_accuracy_last": result.reward_accuracies[-1],
        },
        "reference": "base model (implicit reward = beta * (log pi - log base))",
        "before": before,  # the SFT adapter
        "after": after,  # the DPO adapter
    }
