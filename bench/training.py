"""ModelFactory training: SFT quality, SFT throughput against trl's SFTTrainer, and DPO, on
SmolLM2-135M-Instruct (fp32, CPU, torch threads = all cores) with the demo Datanet's data.

1. SFT quality: the approved instruction pairs of ``datasets/unit-conversions/`` (every
   ``*.jsonl`` outside ``bad/``) become ``Example``s whose provenance is the file (contribution
   id = its rank in path order, CID of its bytes, contributor = its path) and the row's line and
   byte range; ``split_examples`` holds some out by hash; ``train_sft`` trains a LoRA adapter
   (rank 8, alpha 16, q/k/v/o) and ``evaluate`` scores base and adapter on the held-out
   answers. Target: held-out loss >= 30% lower with the adapter.
2. Throughput: the same training examples and settings (LoRA, batch, max length, learning
   rate and its linear warmup/decay, steps, grad clipping, fp32, CPU, seed, no gradient
   checkpointing) through ``train_sft`` and through trl's ``SFTTrainer`` (conversational
   prompt-completion data, ``completion_only_loss``: the loss on the assistant's answer, as
   ours), runs alternating ours, trl, trl, ours ... after an untimed trl warm-up; each side is
   timed over its training loop only (ours: ``SFTResult.seconds``; trl: a callback from
   ``on_train_begin`` to ``on_train_end``), model load, dataset preparation and saving excluded,
   and counts the real input tokens of its batches (attention mask sums: padding excluded; trl's
   own ``num_tokens``). Target: median tokens/s of ours >= 1.0 x trl's.
3. DPO: preference pairs built from the same rows (chosen = the dataset's answer, rejected =
   the same answer with one deterministic error, in turn by row: the result times 10, the
   result divided by 10, the result in another unit of the same quantity), split by the same
   hash as the SFT data (so held-out pairs have prompts neither SFT nor DPO trained on);
   ``train_dpo`` starts from the SFT adapter; ``preference_metrics`` on the held-out pairs, by
   kind of error, before (SFT adapter vs base) and after (DPO adapter vs base). Target: held-out
   preference accuracy after DPO >= 0.7.

A 2-core machine shared with other work slows every number down: the load average is recorded
around every phase and every throughput run, and the report says when it was above 2.

Writes bench/results/training.json (``--out``) and prints tables; ``--quick`` is a smoke run of
every part with a few steps and examples (written to a temporary file by default).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from decimal import Decimal
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
import trl
from common import RESULTS_DIR, finish, machine, random_weights_copy, table
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback, TrainerCallback
from trl import SFTConfig, SFTTrainer

import datasets
from backend.datanets.formats import DataFormat
from backend.modelfactory.dataset import Example, split_examples
from backend.modelfactory.dpo import Pair, preference_metrics, train_dpo
from backend.modelfactory.evaluate import evaluate
from backend.modelfactory.sft import train_sft
from backend.modelfactory.spec import LoraSettings, TrainSettings
from backend.models.base_models import ensure_smollm2
from backend.protocol.deployments import PROJECT_ROOT
from backend.storage.unixfs import compute_cid

DATA_DIR = PROJECT_ROOT / "datasets" / "unit-conversions"
LORA = LoraSettings(
    rank=8, alpha=16.0, dropout=0.0, target_modules=("q_proj", "k_proj", "v_proj", "o_proj")
)
SEED = 0
EVAL_FRACTION = 0.1
MAX_LENGTH = 160  # tokens; the longest unit-conversion chat is ~125, so nothing is cut
SFT_LEARNING_RATE = 2e-3
DPO_LEARNING_RATE = 1e-3
BETA = 0.1

TARGET_LOSS_REDUCTION = 0.30  # (base - adapter) / base held-out loss
TARGET_VS_TRL = 1.0  # ours / trl SFTTrainer tokens per second
TARGET_DPO_ACCURACY = 0.7  # held-out preference accuracy after DPO
BUSY_LOAD = (os.cpu_count() or 1) + 1.0  # 1-minute load above the bench's own threads: shared

log = logging.getLogger("bench.training")


@dataclass(frozen=True)
class Plan:
    """How much of each measurement to run."""

    sft_steps: int  # steps of the quality run
    batch_size: int  # examples per SFT step (both trainers)
    eval_limit: int | None  # held-out examples scored (None: all)
    samples: int  # greedy generations shown
    new_tokens: int  # per generation
    throughput_steps: int  # steps of each timed throughput run
    throughput_runs: int  # timed runs of each trainer (the median is reported)
    trl_warmup_steps: int  # untimed trl run first (its one-time costs are not the loop's)
    dpo_train_pairs: int
    dpo_steps: int
    dpo_batch_size: int  # pairs per DPO step
    dpo_eval_limit: int | None  # held-out pairs scored (None: all)


FULL = Plan(20, 8, None, 3, 40, 6, 2, 1, 48, 12, 4, None)
# on a GPU a step takes milliseconds: longer and more runs, for timings above the noise
FULL_CUDA = Plan(20, 8, None, 3, 40, 40, 3, 5, 48, 12, 4, None)
QUICK = Plan(2, 2, 4, 1, 8, 2, 1, 1, 4, 2, 2, 4)


# ---------------------------------------------------------------------------- data


def load_examples(folder: Path) -> list[Example]:
    """The approved instruction pairs under ``folder`` (every ``*.jsonl`` outside ``bad/``, in
    path order) as examples with provenance: contribution id = the file's rank (from 1), CID of
    its bytes, contributor = its path in the repository, the row's 1-based line and byte range."""
    files = sorted(
        path for path in folder.rglob("*.jsonl") if "bad" not in path.relative_to(folder).parts[:-1]
    )
    examples: list[Example] = []
    for contribution_id, path in enumerate(files, start=1):
        data = path.read_bytes()
        origin = {
            "contribution_id": contribution_id,
            "cid": compute_cid(data),
            "contributor": str(path.relative_to(PROJECT_ROOT)),
        }
        start = 0
        for number, raw in enumerate(data.split(b"\n"), start=1):
            end = start + len(raw)
            if raw.strip():
                record = json.loads(raw)
                prompt, response = record.get("prompt"), record.get("response")
                if not isinstance(prompt, str) or not isinstance(response, str):
                    raise ValueError(f"{path}:{number}: prompt and response must be strings")
                where = {"line": number, "byte_start": start, "byte_end": end}
                examples.append(
                    Example(
                        **origin,
                        **where,
                        kind=DataFormat.INSTRUCTION.value,
                        prompt=prompt,
                        response=response,
                    )
                )
            start = end + 1
    if not examples:
        raise ValueError(f"no instruction pairs under {folder} (outside bad/)")
    return examples


# "316.9 yards is exactly 289.77336 metres (1 yard = ...)": the result and its unit
RESULT = re.compile(r" is (?:exactly|about) (-?\d+(?:\.\d+)?) (.+?) \(")
UNITS = {  # every unit the dataset converts, by quantity (plural, then singular)
    "length": [("inches", "inch"), ("centimetres", "centimetre"), ("feet", "foot"),
               ("metres", "metre"), ("yards", "yard"), ("miles", "mile"),
               ("kilometres", "kilometre")],
    "mass": [("ounces", "ounce"), ("grams", "gram"), ("pounds", "pound"),
             ("kilograms", "kilogram"), ("stone", "stone")],
    "volume": [("US gallons", "US gallon"), ("litres", "litre"), ("US quarts", "US quart"),
               ("US fluid ounces", "US fluid ounce"), ("millilitres", "millilitre")],
    "temperature": [("degrees Celsius", "degree Celsius"),
                    ("degrees Fahrenheit", "degree Fahrenheit"), ("kelvins", "kelvin")],
}  # fmt: skip
ERRORS = ("result x 10", "result / 10", "wrong unit")


def _other_unit(unit: str, source: str) -> str:
    """The next unit of the same quantity (cyclically) that is neither ``unit`` nor the one
    converted from; plural as the dataset writes results."""
    for group in UNITS.values():
        names = [u for pair in group for u in pair]
        if unit in names:
            plurals = [plural for plural, _ in group]
            at = next(i for i, pair in enumerate(group) if unit in pair)
            for step in range(1, len(plurals)):
                other = plurals[(at + step) % len(plurals)]
                if other not in (group[at][0], source) and not source.endswith(" " + other):
                    return other
    raise ValueError(f"no other unit for {unit!r}")


def corrupt(response: str, error: str) -> str:
    """``response`` with one error: the result's decimal point moved one place either way (a
    rounded result keeps its 4 decimal places, so only the value is wrong), or the result in
    another unit of the same quantity."""
    match = RESULT.search(response)
    if match is None:
        raise ValueError(f"no result found in {response!r}")
    value, unit = match.group(1), match.group(2)
    if error in ("result x 10", "result / 10"):  # the decimal point moved one place
        shifted = Decimal(value).scaleb(1 if error == "result x 10" else -1)
        if " is about " in response:  # keep the 4 places the answer says it is rounded to
            shifted = shifted.quantize(Decimal(value))
        wrong = f"{shifted:f}"
        start, end = match.span(1)
    elif error == "wrong unit":
        source = response[: match.start()]  # "316.9 yards"
        wrong = _other_unit(unit, source)
        start, end = match.span(2)
    else:
        raise ValueError(f"unknown error kind {error!r}; choose among {list(ERRORS)}")
    return response[:start] + wrong + response[end:]


def preference_examples(examples: Sequence[Example]) -> list[tuple[Example, str]]:
    """Each instruction row as a preference pair (same provenance, so the hash split puts it on
    the same side) and the kind of error its rejected answer has (alternating by row)."""
    made = []
    for index, example in enumerate(examples):
        assert example.response is not None and example.prompt is not None
        error = ERRORS[index % len(ERRORS)]
        rejected = corrupt(example.response, error)
        pair = replace(
            example,
            kind=DataFormat.PREFERENCE.value,
            response=None,
            chosen=example.response,
            rejected=rejected,
        )
        made.append((pair, error))
    return made


def spread(examples: Sequence[Example], count: int | None) -> list[Example]:
    """``count`` examples spread over every file: the lowest content hashes (all when None)."""
    if count is None:
        return list(examples)
    return sorted(examples, key=lambda e: e.content_sha256)[:count]


# ---------------------------------------------------------------------------- measurement


@contextmanager
def phase(name: str, phases: dict[str, dict[str, Any]]) -> Iterator[None]:
    """Records a phase's seconds and the load average around it."""
    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    yield
    phases[name] = {
        "seconds": round(time.perf_counter() - started, 1),
        "loadavg_1min_before": round(load_before, 2),
        "loadavg_1min_after": round(os.getloadavg()[0], 2),
    }
    log.info("%s: %.0f s", name, phases[name]["seconds"])


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


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


# ---------------------------------------------------------------------------- report


def targets_of(
    sft: dict[str, Any] | None, throughput: dict[str, Any], dpo: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The targets of the parts measured (quality needs the real checkpoint)."""
    rows = []
    if sft is not None:
        reduction = sft["eval"]["relative_loss_reduction"]
        threshold = f">= {TARGET_LOSS_REDUCTION:.0%}"
        met = reduction >= TARGET_LOSS_REDUCTION
        rows.append(("SFT held-out loss reduction vs base", reduction, threshold, met))
    ratio = throughput["ratio_ours_to_trl"]
    rows.append(("SFT tokens/s, ours / trl SFTTrainer (medians)", ratio, f">= {TARGET_VS_TRL}",
                 ratio >= TARGET_VS_TRL))  # fmt: skip
    if dpo is not None:
        accuracy = dpo["after"]["all"]["accuracy"]
        rows.append(("DPO held-out preference accuracy (after)", accuracy,
                     f">= {TARGET_DPO_ACCURACY}", accuracy >= TARGET_DPO_ACCURACY))  # fmt: skip
    return [
        {"target": name, "value": round(value, 3), "threshold": threshold, "met": met}
        for name, value, threshold, met in rows
    ]


def print_report(result: dict[str, Any]) -> None:
    setup = result["setup"]
    print(
        f"data: {setup['examples']} instruction pairs from {setup['files']} files; "
        f"train {setup['train_examples']}, held out {setup['held_out_examples']}; "
        f"device {setup['device_name']}"
    )
    if result["sft"] is not None:
        print_sft(result["sft"])
    print_throughput(result["throughput"])
    if result["dpo"] is not None:
        print_dpo(result["dpo"])
    print_phases_and_targets(result)


def print_sft(sft: dict[str, Any]) -> None:
    ev, training = sft["eval"], sft["training"]
    print(
        f"\nSFT: {training['steps']} steps x {sft['settings']['batch_size']} examples, "
        f"lr {sft['settings']['learning_rate']}, {training['seconds']:.0f} s, "
        f"{training['tokens_per_s']:.0f} tokens/s, loss {training['loss_first']} -> "
        f"{training['loss_last']}"
    )
    held_rows = [
        [name, ev["examples"], ev["tokens"], round(ev[f"{name}_loss"], 4),
         round(ev[f"{name}_perplexity"], 3)]
        for name in ("base", "adapter")
    ]  # fmt: skip
    print(table(["held-out", "examples", "tokens", "loss", "perplexity"], held_rows))
    for sample in ev["samples"]:
        print(f"\n  prompt:    {sample['prompt']}\n  reference: {sample['reference']}")
        print(f"  base:      {sample['base_answer']}\n  adapter:   {sample['adapter_answer']}")


def print_throughput(tp: dict[str, Any]) -> None:
    print(
        f"\nthroughput: {tp['settings']['max_steps']} steps x {tp['settings']['batch_size']} "
        f"examples per run, order {' '.join(tp['order'])}; trl {json.dumps(tp['trl_config'])}"
    )
    run_rows = [
        [r["trainer"], r["steps"], r["tokens"], r["seconds"], r["tokens_per_s"],
         r["train_loss"], r["loadavg_before"][0], r["loadavg_after"][0]]
        for r in tp["runs"]
    ]  # fmt: skip
    headers = ["trainer", "steps", "tokens", "seconds", "tokens/s", "mean loss", "load before",
               "load after"]  # fmt: skip
    print(table(headers, run_rows))
    medians = tp["median_tokens_per_s"]
    print(
        f"median tokens/s: ours {medians['ours']}, trl {medians['trl']}, "
        f"ratio {tp['ratio_ours_to_trl']}"
    )


def print_dpo(dpo: dict[str, Any]) -> None:
    print(
        f"\nDPO: {dpo['training']['steps']} steps x {dpo['settings']['batch_size']} pairs from "
        f"the SFT adapter, beta {dpo['settings']['beta']}, lr {dpo['settings']['learning_rate']}, "
        f"{dpo['training']['seconds']:.0f} s, loss {dpo['training']['loss_first']} -> "
        f"{dpo['training']['loss_last']}; held-out pairs vs the base model:"
    )
    rows = []
    for when in ("before", "after"):
        parts = {"all": dpo[when]["all"], **dpo[when]["by_error"]}
        for name, m in parts.items():
            rows.append(
                [when, name, m["pairs"], round(m["accuracy"], 3), round(m["mean_margin"], 3),
                 round(m["likelihood_accuracy"], 3)]
            )  # fmt: skip
    print(
        table(
            ["adapter", "rejected answer", "pairs", "accuracy", "mean margin", "chosen likelier"],
            rows,
        )
    )


def print_phases_and_targets(result: dict[str, Any]) -> None:
    print(
        table(
            ["phase", "seconds", "load avg before/after"],
            [
                [name, r["seconds"], f"{r['loadavg_1min_before']} / {r['loadavg_1min_after']}"]
                for name, r in result["phases"].items()
            ],
        )
    )
    if result["busy"]:
        print(f"\nbusy machine: 1-minute load average reached {result['max_loadavg_1min']}")
    print("\ntargets:")
    print(
        table(
            ["target", "value", "threshold", "result"],
            [
                [t["target"], t["value"], t["threshold"], "PASS" if t["met"] else "FAIL"]
                for t in result["targets"]
            ],
        )
    )


# ---------------------------------------------------------------------------- main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a fast smoke run of every part")
    parser.add_argument(
        "--out", type=Path, help="results JSON (default bench/results/training.json)"
    )
    parser.add_argument(
        "--base", type=Path, help="base model folder (default: SmolLM2, converted if needed)"
    )
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="the base's architecture with random weights (where its checkpoint cannot be): "
        "throughput only, since quality needs the trained model",
    )
    args = parser.parse_args()
    cuda = args.device == "cuda"
    plan = QUICK if args.quick else FULL_CUDA if cuda else FULL
    out: Path = args.out or (
        Path(tempfile.gettempdir()) / "training-quick.json"
        if args.quick
        else RESULTS_DIR / ("training-cuda.json" if cuda else "training.json")
    )
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(message)s")
    log.setLevel(logging.INFO)
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    torch.set_num_threads(os.cpu_count() or 1)
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    started = time.perf_counter()
    loads = [loadavg()]
    if loads[0][0] > BUSY_LOAD:
        log.warning("load average %.1f: other processes compete for the %d cores; every number "
                    "below is slower and noisier than on an idle machine",
                    loads[0][0], os.cpu_count())  # fmt: skip

    base_dir = args.base or ensure_smollm2(PROJECT_ROOT / ".data")
    examples = load_examples(DATA_DIR)
    train, held = split_examples(examples, EVAL_FRACTION, SEED)
    phases: dict[str, dict[str, Any]] = {}
    sft = dpo = None
    with tempfile.TemporaryDirectory(prefix="bench-training-") as tmp:
        work = Path(tmp)
        if args.random_weights:
            base_dir = random_weights_copy(base_dir, work / base_dir.name)
        else:
            with phase("SFT quality (train + eval)", phases):
                sft, sft_adapter = measure_sft_quality(
                    base_dir, train, held, plan, work, args.device
                )
        with phase("throughput, ours vs trl", phases):
            throughput = measure_throughput(base_dir, train, plan, work, args.device)
        if sft is not None:
            with phase("DPO (metrics before, train, metrics after)", phases):
                dpo = measure_dpo(base_dir, examples, train, sft_adapter, plan, work, args.device)
    loads.append(loadavg())
    peak = max(
        [load[0] for load in loads]
        + [r[k] for r in phases.values() for k in ("loadavg_1min_before", "loadavg_1min_after")]
        + [r[k][0] for r in throughput["runs"] for k in ("loadavg_before", "loadavg_after")]
    )
    result = {
        "machine": machine(),
        "quick": args.quick,
        "setup": {
            "base_model": base_dir.name,
            "data": str(DATA_DIR.relative_to(PROJECT_ROOT)),
            "files": len({e.contribution_id for e in examples}),
            "examples": len(examples),
            "train_examples": len(train),
            "held_out_examples": len(held),
            "eval_fraction": EVAL_FRACTION,
            "lora": {**asdict(LORA), "target_modules": list(LORA.target_modules)},
            "max_length": MAX_LENGTH,
            "dtype": "float32",
            "device": args.device,
            "device_name": device_name,
            "random_weights": args.random_weights,
            "torch_threads": torch.get_num_threads(),
            "versions": {
                "torch": torch.__version__,
                "transformers": transformers.__version__,
                "peft": peft.__version__,
                "trl": trl.__version__,
                "datasets": datasets.__version__,
            },
            "plan": asdict(plan),
        },
        "sft": sft,
        "throughput": throughput,
        "dpo": dpo,
        "phases": phases,
        "loadavg_start_end": loads,
        "max_loadavg_1min": peak,
        "busy": peak > BUSY_LOAD,
    }
    result["targets"] = targets_of(sft, throughput, dpo)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return finish(result, out, print_report)


if __name__ == "__main__":
    sys.exit(main())
