"""bench/attribution.py's quality part: the planted facts' probes (verbatim, paraphrased and the
model's own answers) scored as the node scores an answer, by spans, gradients and combined, and
four gradient sketch variants."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from attribution_setup import (
    CONTRIBUTORS,
    answer_ids,
    chat_prompt,
    planted_index,
    planted_rows,
)
from peft import PeftModel
from planted_facts import Fact
from transformers import AutoModelForCausalLM, AutoTokenizer

from backend.attribution import shares
from backend.attribution.attributor import Attributor
from backend.attribution.index import AttributionIndex
from backend.attribution.scoring import gradient_scores, make_record, span_evidence
from backend.attribution.settings import SketchSettings
from backend.attribution.sketcher import Sketcher, TokenInformation, query_row
from backend.attribution.sketches import (
    exact_scores,
    precondition,
    quantize_query,
    quantize_training,
)
from backend.modelfactory.dataset import Example

NEW_TOKENS = 32  # the quality probes' generated answers (facts are short)
GENERATION_BATCH = 16


def generate(base: Path, adapter: Path, prompts: list[list[int]]) -> tuple[list[list[int]], float]:
    """Greedy answers (through the first end-of-turn) and the seconds per answer, in batches
    of GENERATION_BATCH left-padded prompts."""
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter).eval()
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    answers, started = [], time.perf_counter()
    for i in range(0, len(prompts), GENERATION_BATCH):
        batch = prompts[i : i + GENERATION_BATCH]
        width = max(map(len, batch))
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS,
                do_sample=False,
                pad_token_id=pad,
            )
        for row in out[:, width:].tolist():
            answers.append(row[: row.index(eos) + 1] if eos in row else row)
    return answers, (time.perf_counter() - started) / len(prompts)


def rank(scores: Sequence[int], truth: int) -> int:
    """1-based rank of ``truth`` (ties count against it: the truth ranks below equals)."""
    return 1 + sum(1 for c, s in enumerate(scores) if c != truth and s >= scores[truth])


def summary(ranks: list[int]) -> dict[str, float]:
    return {
        "top1": round(float(np.mean([r == 1 for r in ranks])), 3),
        "mrr": round(float(np.mean([1 / r for r in ranks])), 3),
        "n": len(ranks),
    }


def per_contribution(scores: np.ndarray, owners: np.ndarray) -> list[int]:
    return shares.per_contribution(scores, owners, CONTRIBUTORS)


def quality(
    base: Path, adapter: Path, examples: list[Example], facts: list[Fact], work: Path
) -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(base)
    index, stats, cid = planted_index(base, adapter, examples, work / "index", keep_unit=True)
    index, _ = AttributionIndex.read_folder(work / "index")
    attributor = Attributor(index, cid, 1, 1, base, adapter)
    owners = np.array(
        [
            index.corpus.contributions[d.contribution].contribution_id - 1
            for d in index.corpus.documents
        ]
    )

    verbatim_q = [chat_prompt(tokenizer, f.verbatim_question()) for f in facts]
    paraphrased_q = [chat_prompt(tokenizer, f.paraphrased_question()) for f in facts]
    generated, seconds_per_answer = generate(base, adapter, verbatim_q + paraphrased_q)
    probes = {
        "verbatim": list(
            zip(verbatim_q, [answer_ids(tokenizer, f.trained_answer()) for f in facts], strict=True)
        ),
        "paraphrased": list(
            zip(
                paraphrased_q,
                [answer_ids(tokenizer, f.paraphrased_answer()) for f in facts],
                strict=True,
            )
        ),
        "generated_verbatim": list(zip(verbatim_q, generated[: len(facts)], strict=True)),
        "generated_paraphrased": list(zip(paraphrased_q, generated[len(facts) :], strict=True)),
    }
    states_fact = {
        kind: [
            f.value in tokenizer.decode(a) for f, (_, a) in zip(facts, probes[kind], strict=True)
        ]
        for kind in ("generated_verbatim", "generated_paraphrased")
    }

    # the four gradient variants: loss weighting x preconditioner (unit sketches kept)
    unit_informative = stats.unit_sketches
    mean_settings = SketchSettings(loss="mean")
    information = TokenInformation(index.document_frequency, len(index.corpus))
    mean_sketcher = Sketcher(base, adapter, mean_settings, tokenizer.pad_token_id, information)
    rows = planted_rows(tokenizer, examples)
    unit_mean = mean_sketcher.unit_sketches(rows, threads=torch.get_num_threads())
    training = {
        (loss, pre): quantize_training(precondition(unit, pre, 1.0))[0]
        for loss, unit in (("informative", unit_informative), ("mean", unit_mean))
        for pre in ("trak", "none")
    }

    results: dict[str, Any] = {}
    sketch_seconds = []
    for kind, queries in probes.items():
        started = time.perf_counter()
        sketches = attributor.sketches(queries)
        sketch_seconds.append((time.perf_counter() - started) / len(queries))
        mean_sketches = quantize_query(
            mean_sketcher.unit_sketches([query_row(p, a) for p, a in queries]), 14
        )
        ranks: dict[str, list[int]] = {"spans": [], "gradients": [], "combined": []}
        variant_ranks: dict[str, list[int]] = {f"{loss}+{pre}": [] for loss, pre in training}
        for i, ((prompt, answer), fact) in enumerate(zip(queries, facts, strict=True)):
            evidence = span_evidence(index, prompt, answer)
            record = make_record(index, cid, 1, 1, prompt, answer, evidence, sketches[i])
            span_c = per_contribution(evidence.document_scores_array(len(index.corpus)), owners)
            grad_c = per_contribution(gradient_scores(index, sketches[i]), owners)
            shares = [0] * CONTRIBUTORS
            for c in record.contributions:
                shares[c.contribution_id - 1] = c.share
            ranks["spans"].append(rank(span_c, fact.contributor))
            ranks["gradients"].append(rank(grad_c, fact.contributor))
            ranks["combined"].append(rank(shares, fact.contributor))
            for (loss, pre), matrix in training.items():
                q = sketches[i] if loss == "informative" else mean_sketches[i]
                scores = exact_scores(matrix, q[None, :])[0]
                variant_ranks[f"{loss}+{pre}"].append(
                    rank(per_contribution(scores, owners), fact.contributor)
                )
        results[kind] = {name: summary(r) for name, r in ranks.items()}
        results[kind]["gradient_variants"] = {name: summary(r) for name, r in variant_ranks.items()}
        if kind in states_fact:
            said = states_fact[kind]
            results[kind]["states_the_fact"] = round(float(np.mean(said)), 3)
            results[kind]["combined_when_stated"] = summary(
                [r for r, s in zip(ranks["combined"], said, strict=True) if s]
            )
    results["index"] = {
        "documents": stats.documents,
        "tokens": stats.tokens,
        "spans_seconds": round(stats.spans_seconds, 3),
        "sketch_seconds": round(stats.sketch_seconds, 1),
        "sketch_seconds_per_example": round(stats.sketch_seconds / stats.documents, 3),
        "cid": cid,
    }
    results["generation_seconds_per_answer"] = round(seconds_per_answer, 3)
    results["query_sketch_seconds_per_answer"] = round(statistics.median(sketch_seconds), 3)
    return results
