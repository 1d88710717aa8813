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

This file holds the CLI, the plans, the targets and the report; the measurements are in
training_workloads.py, the data and settings they share in training_setup.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import peft
import torch
import transformers
import trl
from common import (
    at_least,
    default_out,
    finish,
    loadavg,
    log_progress,
    phase,
    phases_table,
    random_weights_copy,
    table,
    targets_table,
    warn_if_busy,
)
from training_setup import DATA_DIR, EVAL_FRACTION, LORA, MAX_LENGTH, SEED, Plan, load_examples
from training_workloads import measure_dpo, measure_sft_quality, measure_throughput

import datasets
from backend.modelfactory.dataset import split_examples
from backend.models.base_models import ensure_smollm2
from backend.protocol.deployments import PROJECT_ROOT

TARGET_LOSS_REDUCTION = 0.30  # (base - adapter) / base held-out loss
TARGET_VS_TRL = 1.0  # ours / trl SFTTrainer tokens per second
TARGET_DPO_ACCURACY = 0.7  # held-out preference accuracy after DPO
BUSY_LOAD = (os.cpu_count() or 1) + 1.0  # 1-minute load above the bench's own threads: shared

FULL = Plan(20, 8, None, 3, 40, 6, 2, 1, 48, 12, 4, None)
# on a GPU a step takes milliseconds: longer and more runs, for timings above the noise
FULL_CUDA = Plan(20, 8, None, 3, 40, 40, 3, 5, 48, 12, 4, None)
QUICK = Plan(2, 2, 4, 1, 8, 2, 1, 1, 4, 2, 2, 4)


# ---------------------------------------------------------------------------- report


def targets_of(
    sft: dict[str, Any] | None, throughput: dict[str, Any], dpo: dict[str, Any] | None
) -> list[dict[str, Any]]:
    """The targets of the parts measured (quality needs the real checkpoint)."""
    rows = []
    if sft is not None:
        reduction = sft["eval"]["relative_loss_reduction"]
        rows.append(at_least("SFT held-out loss reduction vs base", reduction,
                             TARGET_LOSS_REDUCTION, ".0%"))  # fmt: skip
    ratio = throughput["ratio_ours_to_trl"]
    rows.append(at_least("SFT tokens/s, ours / trl SFTTrainer (medians)", ratio, TARGET_VS_TRL))
    if dpo is not None:
        accuracy = dpo["after"]["all"]["accuracy"]
        rows.append(at_least("DPO held-out preference accuracy (after)", accuracy,
                             TARGET_DPO_ACCURACY))  # fmt: skip
    return rows


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
    print(phases_table(result["phases"]))
    if result["busy"]:
        print(f"\nbusy machine: 1-minute load average reached {result['max_loadavg_1min']}")
    print("\ntargets:")
    print(targets_table(result["targets"]))


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
    out: Path = args.out or default_out("training-cuda" if cuda else "training", args.quick)
    log_progress()
    transformers.logging.set_verbosity_error()
    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    torch.set_num_threads(os.cpu_count() or 1)
    device_name = torch.cuda.get_device_name() if cuda else "cpu"
    started = time.perf_counter()
    loads = [loadavg()]
    warn_if_busy(BUSY_LOAD)

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
