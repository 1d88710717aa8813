"""Counterfactual checks of Proof of Attribution: do the scores predict what retraining
without the data does? Run once and committed (``make bench-counterfactual``): it retrains
SmolLM2's planted-facts adapter 32 times, about an hour on this 2-core CPU.

Setup: bench/attribution.py's planted Datanet (12 contributors x 4 facts, 2 phrasings each,
96 examples), the same SFT settings and seed. Probes: the 48 verbatim and 48 paraphrased
teacher-forced probes of bench/attribution.py; a probe's model output is the log-likelihood
of its answer given its question.

1. Leave one contributor out (12 retrains): for every probe and contributor, the drop in
   the probe's log-likelihood when that contributor's examples are left out, against the
   score each method gives that contributor for that probe. Reported: Spearman across
   contributors per probe, averaged over probes; how often the contributor whose removal
   hurts the probe most is the method's top contributor; and, per contributor, its mean score
   on its own probes against their mean drop, Spearman across the 12 contributors.
2. Linear datamodeling score (TRAK, dattri): 20 retrains on seeded random halves of the
   training examples; per probe, Spearman across the 20 subsets between the probe's
   log-likelihood under the subset's model and the sum of the method's per-example scores
   over the subset; averaged over probes.

Methods, all on the full model's adapter:
- ours: the record's shares (combined), and gradients alone (exact int16 sketch scores);
- gradient dot product: full LoRA gradients (921,600 coordinates), no projection, no
  normalization (TracIn at the last checkpoint);
- DataInf: the closed form dattri 0.3.0's ``IFAttributorDataInf`` computes (one layer per
  LoRA weight tensor, regularization 0.1; and with the paper's per-layer damping,
  0.1 x the mean squared gradient norm), evaluated on the full gradients above through
  per-layer Gram matrices, because dattri's own run grows past this machine's 24 GB at 96
  examples; every run checks it against dattri itself on 8 examples x 4 probes (eager
  attention) and records the gap. Scores are g_train . H^-1 g_probe: positive when the
  example helped, our convention too.
For per-example LDS, ours-combined splits a contribution's share over its examples by their
span and gradient evidence as the combination rule does.

Writes bench/results/attribution-counterfactual.json and prints a table.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from attribution_setup import (
    CONTRIBUTORS,
    FACTS_EACH,
    LORA,
    TRAIN,
    answer_ids,
    bench_args,
    chat_prompt,
    planted_examples,
    planted_index,
    planted_rows,
    train,
)
from common import at_least, finish, table
from peft import PeftModel
from planted_facts import planted_facts
from transformers import AutoModelForCausalLM, AutoTokenizer

from backend.attribution.attributor import Attributor
from backend.attribution.gradients import LoraGradients
from backend.attribution.scoring import gradient_scores, span_evidence
from backend.attribution.shares import SCALE
from backend.attribution.sketcher import query_row
from backend.modelfactory.dpo import answer_logprobs
from backend.modelfactory.lora_training import IGNORE, Row
from backend.models.base_models import ensure_smollm2
from backend.protocol.deployments import PROJECT_ROOT

LDS_SUBSETS = 20
log = logging.getLogger("bench.counterfactual")


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho with average ranks for ties; nan when either side is constant."""
    from scipy.stats import spearmanr

    if np.all(x == x[0]) or np.all(y == y[0]):
        return float("nan")
    return float(spearmanr(x, y).statistic)


def loglikelihoods(base: Path, adapter: Path, probes: list[Row]) -> np.ndarray:
    """[probes] summed log-probability of each probe's answer under base + adapter."""
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    model = PeftModel.from_pretrained(model, adapter).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    out = []
    with torch.no_grad():
        for i in range(0, len(probes), 16):
            out.append(answer_logprobs(model, probes[i : i + 16], tokenizer.pad_token_id, False))
    return torch.cat(out).numpy().astype(np.float64)


def full_gradients(gradients: LoraGradients, rows: list[Row], pad: int) -> np.ndarray:
    """[rows, parameters] float32: every row's full LoRA gradient (mean answer-token loss)."""
    out = []
    for i in range(0, len(rows), 8):
        out.append(np.concatenate(gradients.per_example(rows[i : i + 8], pad), axis=1))
    return np.concatenate(out)


def parameter_segments(gradients: LoraGradients) -> list[tuple[int, int]]:
    """[start, end) of every LoRA weight tensor in the concatenated gradient layout."""
    segments, offset = [], 0
    for group in gradients.groups:
        for module in group:
            for weight in (module.a.weight, module.b.weight):
                segments.append((offset, offset + weight.numel()))
                offset += weight.numel()
    return segments


def datainf_closed_form(
    g_train: np.ndarray,
    g_probe: np.ndarray,
    segments: list[tuple[int, int]],
    r: float | None = 0.1,
) -> np.ndarray:
    """[probes, examples] DataInf (Kwon et al. 2024) as dattri 0.3.0 computes it, one layer per
    LoRA weight tensor: q_l = mean_i (v_l - (v_l.g_il) / (r_l + |g_il|^2) g_il) / r_l and
    score_k = sum_l g_kl . q_l, through per-layer Gram matrices. ``r`` None: the paper's
    r_l = 0.1 * mean_i |g_il|^2 (dattri takes one constant)."""
    n = g_train.shape[0]
    scores = np.zeros((g_probe.shape[0], n))
    for start, end in segments:
        g = g_train[:, start:end].astype(np.float64)
        v = g_probe[:, start:end].astype(np.float64)
        gram = g @ g.T  # [n, n]
        vg = v @ g.T  # [probes, n]
        r_l = 0.1 * float(np.mean(np.diag(gram))) if r is None else r
        if r_l > 0:
            scores += (vg - (vg / (r_l + np.diag(gram))) @ gram / n) / r_l
    return scores


def datainf_scores(
    base: Path, adapter: Path, train_rows: list[Row], probe_rows: list[Row], pad: int
) -> np.ndarray:
    """[probes, examples] dattri's DataInf scores (positive: the example helped)."""
    from dattri.algorithm.influence_function import IFAttributorDataInf
    from dattri.task import AttributionTask
    from torch.utils.data import DataLoader, TensorDataset

    model = AutoModelForCausalLM.from_pretrained(
        base, dtype=torch.float32, attn_implementation="eager"
    )
    model = PeftModel.from_pretrained(model, adapter, is_trainable=True).eval()
    names = [n for n, _ in model.named_parameters() if "lora_" in n]
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)  # dattri takes the parameters that need grads
    width = max(len(ids) for ids, _ in train_rows + probe_rows)

    def tensors(rows: list[Row]) -> TensorDataset:
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        labels = torch.full((len(rows), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for r, (i, lab) in enumerate(rows):
            ids[r, : len(i)], labels[r, : len(lab)], mask[r, : len(i)] = (
                torch.tensor(i),
                torch.tensor(lab),
                1,
            )
        return TensorDataset(ids, mask, labels)

    def loss(params: dict[str, torch.Tensor], data: tuple[torch.Tensor, ...]) -> torch.Tensor:
        # rows are right-padded and attention is causal: no real token sees a pad, so no mask
        # (transformers' eager mask breaks under dattri's vmap)
        ids, _, labels = data  # each [1, seq]: dattri's vmap hands one example at a time
        logits = torch.func.functional_call(model, params, (ids,)).logits
        return torch.nn.functional.cross_entropy(logits[0, :-1], labels[0, 1:], ignore_index=IGNORE)

    task = AttributionTask(loss_func=loss, model=model, checkpoints=model.state_dict())
    attributor = IFAttributorDataInf(task=task, layer_name=names, device="cpu", regularization=0.1)
    train_loader = DataLoader(tensors(train_rows), batch_size=4)
    attributor.cache(train_loader)
    with torch.no_grad():
        scores = attributor.attribute(train_loader, DataLoader(tensors(probe_rows), batch_size=4))
    # dattri returns g_train . (H^-1 g_test) [train, test], no minus sign: positive means a
    # descent step on the example lowers the probe's loss, as in our convention
    return scores.T.numpy().astype(np.float64)


def main() -> int:
    args, out = bench_args(__doc__, "2 LOO and 3 LDS retrains", "attribution-counterfactual")
    started = time.perf_counter()
    base = ensure_smollm2(PROJECT_ROOT / ".data")
    tokenizer = AutoTokenizer.from_pretrained(base)
    pad = tokenizer.pad_token_id
    facts = planted_facts(CONTRIBUTORS, FACTS_EACH)
    examples = planted_examples(facts)
    args.work.mkdir(parents=True, exist_ok=True)
    adapter = train(base, examples, TRAIN, args.work)
    probes = [
        (chat_prompt(tokenizer, f.verbatim_question()), answer_ids(tokenizer, f.trained_answer()))
        for f in facts
    ] + [
        (
            chat_prompt(tokenizer, f.paraphrased_question()),
            answer_ids(tokenizer, f.paraphrased_answer()),
        )
        for f in facts
    ]
    probe_rows = [query_row(p, a) for p, a in probes]
    owner = np.array([e.contribution_id - 1 for e in examples])

    # scores of every method on the full model: [probes, examples] and [probes, contributors]
    index, _, cid = planted_index(
        base, adapter, examples, args.work / "counterfactual-index", progress=False
    )
    attributor = Attributor(index, cid, 1, 1, base, adapter)
    sketches = attributor.sketches(probes)
    ours_grad = np.stack([gradient_scores(index, s) for s in sketches]).astype(np.float64)
    ours_combined_examples = np.zeros_like(ours_grad)
    ours_combined = np.zeros((len(probes), CONTRIBUTORS))
    for i, ((p, a), s) in enumerate(zip(probes, sketches, strict=True)):
        evidence = span_evidence(index, p, a)
        record = attributor.record(p, a, evidence, s)
        for c in record.contributions:
            ours_combined[i, c.contribution_id - 1] = c.share
        spans = evidence.document_scores_array(len(index.corpus)).astype(np.float64)
        positive = np.maximum(ours_grad[i], 0)
        if spans.sum():
            ours_combined_examples[i] += record.span_mass / SCALE * spans / spans.sum()
        if positive.sum():
            ours_combined_examples[i] += record.gradient_mass / SCALE * positive / positive.sum()
    # the baseline's gradients cover every layer's LoRA parameters (ours: the top 8)
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter, is_trainable=True
    ).eval()
    for name, param in model.named_parameters():
        param.requires_grad_("lora_" in name)
    gradients = LoraGradients(model)
    train_rows = planted_rows(tokenizer, examples)
    g_train = full_gradients(gradients, train_rows, pad)
    g_probe = full_gradients(gradients, probe_rows, pad)
    # a descent step on example i changes a probe's log-likelihood by +lr * g_probe . g_i
    grad_dot = g_probe.astype(np.float64) @ g_train.astype(np.float64).T
    # DataInf by its closed form on our full gradients (dattri's own run keeps growing past this
    # machine's 24 GB at 96 examples); checked equal to dattri's on a subset, in this run
    segments = parameter_segments(gradients)
    datainf = datainf_closed_form(g_train, g_probe, segments)
    datainf_paper = datainf_closed_form(g_train, g_probe, segments, r=None)
    subset = datainf_scores(base, adapter, train_rows[:8], probe_rows[:4], pad)
    ours_subset = datainf_closed_form(g_train[:8], g_probe[:4], segments)
    parity = float(np.max(np.abs(subset - ours_subset)) / np.max(np.abs(subset)))
    log.info(
        "DataInf closed form vs dattri on 8 examples x 4 probes: max relative gap %.2e", parity
    )
    del g_train, g_probe
    per_example = {
        "ours (combined)": ours_combined_examples,
        "ours (gradients)": ours_grad,
        "gradient dot product": grad_dot,
        "DataInf": datainf,
        "DataInf (paper's damping)": datainf_paper,
    }

    def by_contributor(scores: np.ndarray) -> np.ndarray:
        out = np.zeros((scores.shape[0], CONTRIBUTORS))
        for c in range(CONTRIBUTORS):
            out[:, c] = scores[:, owner == c].sum(axis=1)
        return out

    per_contributor = {name: by_contributor(s) for name, s in per_example.items()}
    per_contributor["ours (combined)"] = ours_combined
    truth = owner_of_probes(facts)
    owner_top1 = {
        name: round(float(np.mean(np.argmax(scores, axis=1) == truth)), 3)
        for name, scores in per_contributor.items()
    }
    log.info("top-1 of the fact's owner by method: %s", owner_top1)
    full = loglikelihoods(base, adapter, probe_rows)

    # 1. leave one contributor out
    leave_out = range(2) if args.quick else range(CONTRIBUTORS)
    drops = np.full((len(probes), CONTRIBUTORS), np.nan)
    for c in leave_out:
        kept = [e for e in examples if e.contribution_id - 1 != c]
        adapter_c = train(base, kept, TRAIN, args.work)
        drops[:, c] = full - loglikelihoods(base, adapter_c, probe_rows)
        log.info(
            "left out contributor %d: mean drop of its probes %.2f nats",
            c,
            float(np.nanmean(drops[owner_of_probes(facts) == c, c])),
        )
    measured = list(leave_out)
    loo = {}
    for name, scores in per_contributor.items():
        rhos = [spearman(scores[i, measured], drops[i, measured]) for i in range(len(probes))]
        hits = [
            int(np.argmax(scores[i, measured]) == np.argmax(drops[i, measured]))
            for i in range(len(probes))
        ]
        # the form: per contributor, the share it gets on its own probes against the
        # drop of those probes' log-likelihood without it; Spearman across contributors
        own_share = [float(np.mean(scores[truth == c, c])) for c in measured]
        own_drop = [float(np.mean(drops[truth == c, c])) for c in measured]
        loo[name] = {
            "spearman_mean": round(float(np.nanmean(rhos)), 3),
            "top_match": round(float(np.mean(hits)), 3),
            "spearman_own_probes": round(spearman(np.array(own_share), np.array(own_drop)), 3),
        }

    np.savez(args.work / "counterfactual-loo.npz", drops=drops, truth=truth,
             **{name.replace(" ", "_"): v for name, v in per_contributor.items()})  # fmt: skip

    # 2. linear datamodeling score
    rng = np.random.default_rng(0)
    subsets = 3 if args.quick else LDS_SUBSETS
    masks = np.zeros((subsets, len(examples)), dtype=bool)
    outputs = np.zeros((subsets, len(probes)))
    for s in range(subsets):
        chosen = rng.choice(len(examples), size=len(examples) // 2, replace=False)
        masks[s, chosen] = True
        adapter_s = train(base, [examples[i] for i in sorted(chosen)], TRAIN, args.work)
        outputs[s] = loglikelihoods(base, adapter_s, probe_rows)
        log.info("LDS subset %d/%d done", s + 1, subsets)
    lds = {}
    for name, scores in per_example.items():
        predicted = masks.astype(np.float64) @ scores.T  # [subsets, probes]
        rhos = [spearman(predicted[:, i], outputs[:, i]) for i in range(len(probes))]
        lds[name] = round(float(np.nanmean(rhos)), 3)

    baselines = ("gradient dot product", "DataInf", "DataInf (paper's damping)")
    best_baseline = max(lds[b] for b in baselines)
    result: dict[str, Any] = {
        "setup": {
            "contributors": CONTRIBUTORS,
            "facts_each": FACTS_EACH,
            "training_examples": len(examples),
            "probes": len(probes),
            "lora": LORA.__dict__,
            "train": dict(TRAIN.__dict__),
            "lds_subsets": subsets,
            "loo_retrains": len(measured),
            "quick": args.quick,
        },
        "owner_top1": owner_top1,
        "datainf_vs_dattri_max_relative_gap": parity,
        "leave_one_contributor_out": loo,
        "lds": lds,
        "anchors": {
            "kronfluence GPT-2/WikiText-2 LDS": {"EK-FAC": 0.44, "gradient dot": 0.12},
            "dattri nanoGPT/Shakespeare LDS": {"TRAK-10": 0.14},
        },
    }
    best_loo = max(loo[b]["spearman_mean"] for b in baselines)
    # "ours" is what a record pays by: the combined shares; gradients alone are reported beside
    ours_lds, ours_loo = lds["ours (combined)"], loo["ours (combined)"]["spearman_mean"]
    result["targets"] = [
        at_least("LDS, ours (combined) >= the best baseline", ours_lds, best_baseline),
        at_least("LOO Spearman, ours (combined) >= the best baseline", ours_loo, best_loo),
    ]
    result["elapsed_s"] = round(time.perf_counter() - started, 1)
    return finish(result, out, report)


def owner_of_probes(facts: list[Any]) -> np.ndarray:
    owners = np.array([f.contributor for f in facts])
    return np.concatenate([owners, owners])


def report(result: dict[str, Any]) -> None:
    loo, lds = result["leave_one_contributor_out"], result["lds"]
    print(
        table(
            [
                "method",
                "LOO Spearman (mean over probes)",
                "LOO top match",
                "LOO Spearman (own probes, across contributors)",
                "LDS",
            ],
            [
                [
                    name,
                    loo[name]["spearman_mean"],
                    loo[name]["top_match"],
                    loo[name]["spearman_own_probes"],
                    lds.get(name, ""),
                ]
                for name in loo
            ],
        )
    )


if __name__ == "__main__":
    sys.exit(main())
