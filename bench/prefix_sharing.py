"""Does computing the shared chat-template prefix once pay? SFT tokens/s of ``train_sft`` with
the shared-prefix pass forced on and off, on this device (SmolLM2-135M-Instruct, or its
architecture with random weights), alternating on/off runs, medians compared.

``train_sft`` shares the prefix on a CPU only (``lora_training.shares_prefix``); this measures
that choice. Writes bench/results/prefix-sharing-<device>.json and prints a table.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch
from common import RESULTS_DIR, log_progress, random_weights_copy, table, write_results
from training_setup import DATA_DIR, LORA, MAX_LENGTH, SEED, SFT_LEARNING_RATE, load_examples

import backend.modelfactory.sft as sft
from backend.modelfactory.dataset import split_examples
from backend.modelfactory.spec import TrainSettings
from backend.models.base_models import ensure_smollm2
from backend.protocol.deployments import PROJECT_ROOT

log = logging.getLogger("bench.prefix_sharing")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--base", type=Path, help="base model folder (default: SmolLM2)")
    parser.add_argument("--random-weights", action="store_true")
    parser.add_argument("--steps", type=int, default=6, help="steps per run")
    parser.add_argument("--runs", type=int, default=2, help="runs of each setting")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    log_progress()
    out = args.out or RESULTS_DIR / f"prefix-sharing-{args.device}.json"
    train, _ = split_examples(load_examples(DATA_DIR), 0.1, SEED)
    settings = TrainSettings(
        epochs=max(1, -(-args.steps * 8 // len(train))), batch_size=8,
        learning_rate=SFT_LEARNING_RATE, max_length=MAX_LENGTH, seed=SEED,
        max_steps=args.steps, device=args.device,
    )  # fmt: skip
    runs = []
    with tempfile.TemporaryDirectory(prefix="bench-prefix-") as tmp:
        work = Path(tmp)
        base_dir = args.base or ensure_smollm2(PROJECT_ROOT / ".data")
        if args.random_weights:
            base_dir = random_weights_copy(base_dir, work / base_dir.name)
        order = ["on", "off"] * args.runs
        for i, setting in enumerate(["off", *order]):  # the first run warms up, untimed
            sft.shares_prefix = lambda _device, on=(setting == "on"): on  # type: ignore[assignment]
            result = sft.train_sft(base_dir, train, LORA, settings, work / "a", progress=False)
            if i == 0:
                continue
            runs.append({"prefix_shared": setting, "tokens": result.tokens,
                         "seconds": round(result.seconds, 3),
                         "tokens_per_s": round(result.tokens_per_second, 1)})  # fmt: skip
            log.info("shared prefix %s: %.0f tokens/s", setting, result.tokens_per_second)
    medians = {
        s: statistics.median(r["tokens_per_s"] for r in runs if r["prefix_shared"] == s)
        for s in ("on", "off")
    }
    result = {
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "random_weights": args.random_weights,
        "settings": asdict(settings),
        "runs": runs,
        "median_tokens_per_s": medians,
        "ratio_on_to_off": round(medians["on"] / medians["off"], 3),
    }
    write_results(out, result)
    rows = [[r["prefix_shared"], r["tokens"], r["seconds"], r["tokens_per_s"]] for r in runs]
    print(table(["shared prefix", "tokens", "seconds", "tokens/s"], rows))
    print(f"median tokens/s: on {medians['on']}, off {medians['off']}, "
          f"ratio on/off {result['ratio_on_to_off']}; wrote {out}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
