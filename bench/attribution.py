"""Proof of Attribution on SmolLM2-135M-Instruct (fp32, CPU): quality, cost, determinism.

1. Quality on planted facts (``planted_facts.py``): 12 contributors, each alone holding 4
   facts about invented entities, 2 phrasings per fact (96 instruction pairs, each example
   traced to its contributor as a job's training manifest traces it). ModelFactory's SFT
   trains a rank-8 q,k,v,o adapter; ``build_index`` (what the job runs) indexes it. Probes,
   one per fact, each scored by ``backend.attribution`` exactly as the node scores an answer:
   - verbatim: the training question, answered with the owner's training answer;
   - paraphrased: a held-out question, answered with the fact in held-out words
     ("paraphrased knowledge": only the fact's value is shared with the training text);
   - generated: the model's own greedy answers to the training and held-out questions
     (reported with how often they state the fact; an answer that does not state it has no
     single true source, so top-1 is also given over the answers that do).
   Reported per probe set: top-1 and MRR of the true contributor for spans alone (span
   scores), gradients alone (gradient scores) and combined (the record's shares), and, for
   gradients alone, four sketch variants (informative-token / mean loss x TRAK / cosine).
   Targets: combined top-1 >= 0.95 verbatim, >= 0.80 paraphrased.
2. Cost on this CPU: suffix-array index build time and bytes per million training tokens (a
   1 M-token corpus sampled from the planted data's token distribution); span query time
   for a 64-token answer against it; sketching per training example (vs a training step's
   time per example); gradient scoring per answer against 10k and 100k int16 training
   sketches (batched by 64, and alone); overhead per answer as a fraction of generating it
   (greedy, batches of 16 answers, 32 new tokens). Targets: spans <= 5 %, gradient path
   (query sketch + scoring) <= 50 %.
3. Determinism: records of the same answers from a fresh process are byte-identical; query
   sketches on 1 vs 2 threads and batched vs alone: how many coordinates move and by how
   much, against the auditor's tolerance (backend.attribution.audit.TOLERANCE).

Writes bench/results/attribution.json (``--out``) and prints tables; ``--quick`` trains less
and probes fewer facts (a smoke run, written to a temporary file by default).

This file holds the CLI, the targets and the report; the parts are measured in
attribution_quality.py and attribution_cost.py, on the planted Datanet of attribution_setup.py.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from attribution_cost import cost, determinism
from attribution_quality import quality
from attribution_setup import (
    CONTRIBUTORS,
    FACTS_EACH,
    LORA,
    TRAIN,
    bench_args,
    planted_examples,
    train,
)
from common import at_least, at_most, finish, table, target, targets_table
from planted_facts import planted_facts

from backend.attribution.settings import AttributionSettings
from backend.modelfactory.dataset import Example
from backend.modelfactory.sft import train_sft
from backend.modelfactory.spec import TrainSettings
from backend.models.base_models import ensure_smollm2
from backend.protocol.deployments import PROJECT_ROOT

TARGETS = {"verbatim": 0.95, "paraphrased": 0.80, "spans_overhead": 0.05, "gradient_overhead": 0.5}


# ---------------------------------------------------------------- report


def report(result: dict[str, Any]) -> None:
    q = result["quality"]
    rows = []
    for kind in ("verbatim", "paraphrased", "generated_verbatim", "generated_paraphrased"):
        r = q[kind]
        rows.append(
            [kind]
            + [
                f"{r[s]['top1']:.2f} / {r[s]['mrr']:.2f}"
                for s in ("spans", "gradients", "combined")
            ]
        )
    print(table(["probes (top-1 / MRR)", "spans", "gradients", "combined"], rows))
    variants = q["paraphrased"]["gradient_variants"]
    print(
        table(
            ["gradients alone, paraphrased", "top-1", "MRR"],
            [[k, v["top1"], v["mrr"]] for k, v in variants.items()],
        )
    )
    for kind in ("generated_verbatim", "generated_paraphrased"):
        print(
            f"{kind}: states the fact {q[kind]['states_the_fact']:.0%}; combined top-1 when "
            f"it does {q[kind]['combined_when_stated']['top1']:.2f}"
        )
    c = result["cost"]
    print(
        table(
            ["cost on this CPU", "value"],
            [
                ["index build, 1M tokens (s)", c["index_1m_tokens"]["build_seconds"]],
                ["index bytes per 1M tokens", c["index_1m_tokens"]["bytes_per_million_tokens"]],
                [
                    "span query, 64-token answer (ms)",
                    round(1000 * c["span_query_seconds_64_tokens"], 1),
                ],
                ["sketch per training example (s)", c["sketch_seconds_per_training_example"]],
                ["query sketch per answer (s)", c["query_sketch_seconds_per_answer"]],
                [
                    "scoring per answer, 10k examples (ms, batched 64)",
                    round(1000 * c["gradient_scoring"]["10000"]["batched_64_seconds"], 2),
                ],
                [
                    "scoring per answer, 100k examples (ms, batched 64)",
                    round(1000 * c["gradient_scoring"]["100000"]["batched_64_seconds"], 2),
                ],
                [
                    "generation per answer (s, engine, 32 x 64 tokens)",
                    c["generation_seconds_per_answer"],
                ],
                ["spans / generation", c["spans_overhead"]],
                [
                    "gradient path / generation (10k / 100k)",
                    f"{c['gradient_overhead_10k']} / {c['gradient_overhead_100k']}",
                ],
            ],
        )
    )
    print(targets_table(result["targets"], result_header=""))
    d = result["determinism"]
    print(
        f"fresh process records identical: {d['fresh_process_records_identical']}; "
        f"1 vs 2 threads: {d['threads_1_vs_2']}; batched vs alone: {d['batched_vs_alone']}"
    )


def main() -> int:
    args, out = bench_args(__doc__, "a smoke run", "attribution")
    base = ensure_smollm2(PROJECT_ROOT / ".data")
    facts = planted_facts(CONTRIBUTORS, FACTS_EACH)
    examples = planted_examples(facts)
    settings = TrainSettings(**{**TRAIN.__dict__, "max_steps": 4}) if args.quick else TRAIN
    args.work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    adapter = train(base, examples, settings, args.work)
    probed = facts[:12] if args.quick else facts
    q = quality(base, adapter, examples, probed, args.work)
    q["training_seconds_per_example"] = _measure_training_step(base, examples)
    c = cost(base, adapter, examples, probed, q, args.work)
    d = determinism(base, adapter, probed, args.work)
    result = {
        "setup": {
            "contributors": CONTRIBUTORS,
            "facts_each": FACTS_EACH,
            "training_examples": len(examples),
            "lora": LORA.__dict__,
            "train": {k: v for k, v in TRAIN.__dict__.items()},
            "settings": AttributionSettings().to_json(),
            "quick": args.quick,
            "torch_threads": torch.get_num_threads(),
        },
        "quality": q,
        "cost": c,
        "determinism": d,
    }
    result["targets"] = targets_of(q, c, d)
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return finish(result, out, report)


def targets_of(q: dict[str, Any], c: dict[str, Any], d: dict[str, Any]) -> list[dict[str, Any]]:
    within = d["threads_1_vs_2"]["within_tolerance"] and d["batched_vs_alone"]["within_tolerance"]
    return [
        at_least("combined top-1, verbatim probes", q["verbatim"]["combined"]["top1"],
                 TARGETS["verbatim"], digits=None),
        at_least("combined top-1, paraphrased probes", q["paraphrased"]["combined"]["top1"],
                 TARGETS["paraphrased"], ".2f", digits=None),
        at_most("span query / generation", c["spans_overhead"], TARGETS["spans_overhead"],
                digits=None),
        at_most("gradient path / generation (10k examples)", c["gradient_overhead_10k"],
                TARGETS["gradient_overhead"], digits=None),
        target("records from a fresh process identical", d["fresh_process_records_identical"],
               "true", d["fresh_process_records_identical"]),
        target("recomputed sketches within the auditor's tolerance", within, "true", within),
    ]  # fmt: skip


def _measure_training_step(base: Path, examples: list[Example]) -> float:
    """Seconds per example of one SFT epoch's steps (the loop's own timing)."""
    with tempfile.TemporaryDirectory() as folder:
        one = TrainSettings(**{**TRAIN.__dict__, "epochs": 1, "max_steps": 4})
        result = train_sft(base, examples, LORA, one, Path(folder) / "a", progress=False)
    return round(result.seconds / (result.steps * TRAIN.batch_size), 3)


if __name__ == "__main__":
    sys.exit(main())
