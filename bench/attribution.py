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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import RESULTS_DIR, finish, machine, table
from peft import PeftModel
from planted_facts import Fact, contributor_files, planted_facts
from serving import NoStopTokenizer, engine_once
from transformers import AutoModelForCausalLM, AutoTokenizer

from backend.attribution import shares
from backend.attribution.attributor import Attributor
from backend.attribution.audit import TOLERANCE
from backend.attribution.build import MemberExamples, build_index, training_rows
from backend.attribution.corpus import Contribution, Corpus
from backend.attribution.index import AttributionIndex, LineageMember
from backend.attribution.scoring import gradient_scores, make_record, span_evidence
from backend.attribution.settings import AttributionSettings, SketchSettings
from backend.attribution.sketcher import Sketcher, TokenInformation, query_row
from backend.attribution.sketches import (
    exact_scores,
    precondition,
    quantize_query,
    quantize_training,
    sketch_distance,
)
from backend.attribution.spans import find_spans
from backend.attribution.suffix_array import SuffixArray
from backend.datanets.formats import DataFormat
from backend.modelfactory.dataset import Example, contribution_examples
from backend.modelfactory.sft import train_sft
from backend.modelfactory.spec import LoraSettings, TrainSettings
from backend.models.base_models import ensure_smollm2
from backend.protocol.deployments import PROJECT_ROOT
from backend.storage.local import DirectoryStore
from inference_node.engine import AdapterPool, MultiLoraModel, Scheduler
from inference_node.engine.packaging import put_adapter
from inference_node.server.settings import NodeSettings

CONTRIBUTORS, FACTS_EACH = 12, 4
LORA = LoraSettings(rank=8, alpha=16.0)
TRAIN = TrainSettings(epochs=8, batch_size=8, learning_rate=2e-3, max_length=128, seed=0)
NEW_TOKENS = 32  # the quality probes' generated answers (facts are short)
GENERATION_BATCH = 16
ENGINE_REQUESTS, ENGINE_TOKENS = 32, 64  # the cost comparison, as bench/serving.py measures
TARGETS = {"verbatim": 0.95, "paraphrased": 0.80, "spans_overhead": 0.05, "gradient_overhead": 0.5}
log = logging.getLogger("bench.attribution")


def address(contributor: int) -> str:
    return "0x" + f"{contributor + 1:040x}"


def planted_examples(facts: list[Fact]) -> list[Example]:
    """The contributors' files as a job sees them: contribution id = contributor + 1, the
    file's CID, and every row's line and byte range."""
    examples = []
    for c, data in enumerate(contributor_files(facts, CONTRIBUTORS)):
        examples += contribution_examples(data, DataFormat.INSTRUCTION, c + 1, address(c))[0]
    return examples


def train(base: Path, examples: list[Example], train_settings: TrainSettings, work: Path) -> Path:
    """The planted adapter, reused when the same data and settings trained it before."""
    key = hashlib.sha256(
        json.dumps([[e.content() for e in examples], str(train_settings), str(LORA)]).encode()
    ).hexdigest()[:16]
    adapter = work / f"adapter-{key}"
    if (adapter / "adapter_config.json").is_file():
        log.info("reusing the adapter trained before in %s", adapter)
        return adapter
    started = time.perf_counter()
    train_sft(base, examples, LORA, train_settings, adapter, progress=True)
    log.info("trained in %.0f s", time.perf_counter() - started)
    return adapter


def chat_prompt(tokenizer: Any, question: str) -> list[int]:
    return list(
        tokenizer.apply_chat_template(
            [{"role": "user", "content": question}], add_generation_prompt=True
        )
    )


def answer_ids(tokenizer: Any, text: str) -> list[int]:
    return [*tokenizer(text, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]


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


def engine_answers(
    base: Path, adapter: Path, prompts: list[list[int]], work: Path
) -> tuple[list[list[int]], float]:
    """64-token greedy answers through the node's own engine (one scheduler batch, every
    request on the planted adapter, as bench/serving.py runs it) and the seconds per answer
    of the timed run (after a warm-up)."""
    fields = NodeSettings.model_fields
    model = MultiLoraModel.from_pretrained(
        base, slots=fields["slots"].default, max_rank=fields["max_rank"].default
    )
    store = DirectoryStore(work / "engine-store")
    pool = AdapterPool(model, store, work / "engine-cache", fields["cpu_cache_bytes"].default)
    pool.register("planted", put_adapter(store, adapter))
    tokenizer = NoStopTokenizer(AutoTokenizer.from_pretrained(base))
    scheduler = Scheduler(model, tokenizer, pool, max_batch=fields["max_batch"].default).start()
    try:
        adapters = ["planted"] * len(prompts)
        engine_once(scheduler, prompts, adapters, 2)  # warm-up: the adapter into its slot
        seconds, answers, _, _ = engine_once(scheduler, prompts, adapters, ENGINE_TOKENS)
    finally:
        scheduler.close()
    return answers, seconds / len(prompts)


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


# ---------------------------------------------------------------- 1. quality


def quality(
    base: Path, adapter: Path, examples: list[Example], facts: list[Fact], work: Path
) -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(base)
    member = MemberExamples(LineageMember(None, 1, 1, "sft"), list(enumerate(examples)))
    index, stats = build_index(
        base,
        adapter,
        [member],
        AttributionSettings(),
        TRAIN.max_length,
        "planted",
        None,
        keep_unit=True,
    )
    cid = index.write(work / "index")
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
    rows = [
        r
        for _, e in member.examples
        for r in training_rows(tokenizer, "sft", e, TRAIN.max_length) or []
    ]
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


# ---------------------------------------------------------------- 2. cost


def cost(
    base: Path,
    adapter: Path,
    examples: list[Example],
    facts: list[Fact],
    quality_result: dict[str, Any],
    work: Path,
) -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(base)
    rng = np.random.default_rng(0)
    texts = [t for e in examples for t in (e.prompt, e.response)]
    ids = np.concatenate([tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts])
    tokens, counts = np.unique(ids, return_counts=True)
    probs = counts / counts.sum()
    docs, total = [], 0
    who = Contribution(1, 1, address(0))
    while total < 1_000_000:  # documents of 40-120 tokens from the planted unigram distribution
        doc = rng.choice(tokens, size=int(rng.integers(40, 121)), p=probs).tolist()
        docs.append((0, len(docs), who, [doc]))
        total += len(doc) + 1
    started = time.perf_counter()
    corpus = Corpus.build(docs, 49152)
    corpus_seconds = time.perf_counter() - started
    started = time.perf_counter()
    array = SuffixArray.build(corpus.tokens)
    frequency = corpus.document_frequency()
    build_seconds = time.perf_counter() - started
    millions = len(corpus.tokens) / 1e6
    sizes = {
        "tokens": corpus.tokens.nbytes,
        "suffixes": 4 * len(corpus.tokens),
        "document_frequency": 4 * 49152,
        "documents_json": len(
            json.dumps([[0, i, 0, d.start, d.end] for i, d in enumerate(corpus.documents)])
        ),
    }
    # 64-token answers: half copied from a document (long spans), half fresh samples
    settings = AttributionSettings().spans

    times = []
    for i in range(60):
        if i % 2:
            doc = corpus.documents[int(rng.integers(len(corpus.documents)))]
            copied = corpus.tokens[doc.start : min(doc.end, doc.start + 64)].astype(np.int64)
            answer = np.concatenate([copied, rng.choice(tokens, size=64 - len(copied), p=probs)])
        else:
            answer = rng.choice(tokens, size=64, p=probs)
        prompt = rng.choice(tokens, size=30, p=probs)
        started = time.perf_counter()
        find_spans(array, corpus, frequency, prompt, answer, settings)
        times.append(time.perf_counter() - started)
    span_seconds = statistics.median(times)

    scoring = {}
    dims = 3840
    for n in (10_000, 100_000):
        training = rng.integers(-2000, 2000, (n, dims)).astype(np.int16)
        queries = rng.integers(-500, 500, (64, dims)).astype(np.int16)
        started = time.perf_counter()
        exact_scores(training, queries)
        batched = (time.perf_counter() - started) / 64
        started = time.perf_counter()
        for q in queries[:4]:
            exact_scores(training, q[None, :])
        alone = (time.perf_counter() - started) / 4
        scoring[str(n)] = {
            "batched_64_seconds": round(batched, 5),
            "alone_seconds": round(alone, 4),
        }
        del training

    # the gradient path against generating the same answers with the node's engine
    questions = [f.paraphrased_question() for f in facts] + [f.verbatim_question() for f in facts]
    prompts = [chat_prompt(tokenizer, q) for q in questions][:ENGINE_REQUESTS]
    answers, generation = engine_answers(base, adapter, prompts, work)
    index, cid = AttributionIndex.read_folder(work / "index")
    attributor = Attributor(index, cid, 1, 1, base, adapter)
    queries = list(zip(prompts, answers, strict=True))
    attributor.sketches(queries[:2])  # loads the model
    started = time.perf_counter()
    attributor.sketches(queries)
    sketch = (time.perf_counter() - started) / len(queries)
    started = time.perf_counter()
    for prompt, answer in queries:
        attributor.spans(prompt, answer)
    planted_spans = (time.perf_counter() - started) / len(queries)
    gradient_10k = sketch + scoring["10000"]["batched_64_seconds"]
    gradient_100k = sketch + scoring["100000"]["batched_64_seconds"]
    return {
        "index_1m_tokens": {
            "tokens": len(corpus.tokens),
            "documents": len(corpus),
            "corpus_seconds": round(corpus_seconds, 2),
            "build_seconds": round(build_seconds, 2),
            "bytes_per_million_tokens": round(sum(sizes.values()) / millions),
            "bytes": sizes,
        },
        "span_query_seconds_64_tokens": round(span_seconds, 4),
        "span_query_seconds_planted_index": round(planted_spans, 4),
        "sketch_seconds_per_training_example": quality_result["index"][
            "sketch_seconds_per_example"
        ],
        "training_seconds_per_example_per_epoch": quality_result.get(
            "training_seconds_per_example"
        ),
        "gradient_scoring": scoring,
        "answers": {
            "requests": len(prompts),
            "new_tokens": ENGINE_TOKENS,
            "engine": "inference_node Scheduler, planted adapter, greedy",
            "sketch_batch": index.settings.sketches.batch_size,
            "sketch_threads": index.settings.sketches.threads,
        },
        "generation_seconds_per_answer": round(generation, 4),
        "query_sketch_seconds_per_answer": round(sketch, 4),
        "spans_overhead": round(span_seconds / generation, 4),
        "gradient_overhead_10k": round(gradient_10k / generation, 3),
        "gradient_overhead_100k": round(gradient_100k / generation, 3),
    }


# ---------------------------------------------------------------- 3. determinism


FRESH = """
import json, sys
from pathlib import Path
from backend.attribution.attributor import Attributor
from backend.attribution.index import AttributionIndex
base, adapter, folder, queries = json.loads(sys.stdin.read())
index, cid = AttributionIndex.read_folder(Path(folder))
a = Attributor(index, cid, 1, 1, Path(base), Path(adapter))
print(json.dumps([a.attribute(p, q).to_bytes().decode() for p, q in queries]))
"""


def determinism(base: Path, adapter: Path, facts: list[Fact], work: Path) -> dict[str, Any]:
    tokenizer = AutoTokenizer.from_pretrained(base)
    index, cid = AttributionIndex.read_folder(work / "index")
    attributor = Attributor(index, cid, 1, 1, base, adapter)
    queries = [
        (
            chat_prompt(tokenizer, f.paraphrased_question()),
            answer_ids(tokenizer, f.paraphrased_answer()),
        )
        for f in facts[:16]
    ]
    ours = [attributor.attribute(p, a).to_bytes().decode() for p, a in queries[:4]]
    fresh = subprocess.run(
        [sys.executable, "-c", FRESH],
        capture_output=True,
        text=True,
        input=json.dumps([str(base), str(adapter), str(work / "index"), queries[:4]]),
        check=True,
        cwd=PROJECT_ROOT,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    identical = json.loads(fresh.stdout) == ours
    sketcher = attributor.sketcher
    rows = [query_row(p, a) for p, a in queries]
    one = quantize_query(sketcher.unit_sketches(rows, threads=1), 14)
    two = quantize_query(sketcher.unit_sketches(rows, threads=2), 14)
    alone = np.stack([quantize_query(sketcher.unit_sketches([r], threads=1), 14)[0] for r in rows])
    dims = one.shape[1]

    def moved(a: np.ndarray, b: np.ndarray) -> dict[str, Any]:
        pairs = [sketch_distance(x, y) for x, y in zip(a, b, strict=True)]
        worst = max(p[0] for p in pairs)
        share = max(p[1] for p in pairs) / dims
        return {
            "max_lsb": worst,
            "max_share_of_coordinates": round(share, 5),
            "within_tolerance": worst <= TOLERANCE.max_difference
            and share <= TOLERANCE.max_differing,
        }

    return {
        "fresh_process_records_identical": identical,
        "threads_1_vs_2": moved(one, two),
        "batched_vs_alone": moved(one, alone),
        "tolerance": {
            "max_difference": TOLERANCE.max_difference,
            "max_differing": TOLERANCE.max_differing,
        },
        "queries": len(rows),
    }


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
    print(
        table(
            ["target", "value", "threshold", ""],
            [
                [t["target"], t["value"], t["threshold"], "PASS" if t["met"] else "FAIL"]
                for t in result["targets"]
            ],
        )
    )
    d = result["determinism"]
    print(
        f"fresh process records identical: {d['fresh_process_records_identical']}; "
        f"1 vs 2 threads: {d['threads_1_vs_2']}; batched vs alone: {d['batched_vs_alone']}"
    )


def bench_args(doc: str, quick_help: str, name: str) -> tuple[argparse.Namespace, Path]:
    """The attribution benchmarks' options (``--out``, ``--work``, ``--quick``), logging set up,
    and where the results go (bench/results/NAME.json; a temporary file for ``--quick``)."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--work", type=Path, default=PROJECT_ROOT / ".data" / "bench" / "attribution"
    )
    parser.add_argument("--quick", action="store_true", help=quick_help)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    temporary = Path(tempfile.mkdtemp()) / f"{name}.json"
    return args, args.out or (temporary if args.quick else RESULTS_DIR / f"{name}.json")


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
        "machine": machine(),
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
    rows = [
        (
            "combined top-1, verbatim probes",
            q["verbatim"]["combined"]["top1"],
            ">= 0.95",
            q["verbatim"]["combined"]["top1"] >= TARGETS["verbatim"],
        ),
        (
            "combined top-1, paraphrased probes",
            q["paraphrased"]["combined"]["top1"],
            ">= 0.80",
            q["paraphrased"]["combined"]["top1"] >= TARGETS["paraphrased"],
        ),
        (
            "span query / generation",
            c["spans_overhead"],
            "<= 0.05",
            c["spans_overhead"] <= TARGETS["spans_overhead"],
        ),
        (
            "gradient path / generation (10k examples)",
            c["gradient_overhead_10k"],
            "<= 0.5",
            c["gradient_overhead_10k"] <= TARGETS["gradient_overhead"],
        ),
        (
            "records from a fresh process identical",
            d["fresh_process_records_identical"],
            "true",
            d["fresh_process_records_identical"],
        ),
        ("recomputed sketches within the auditor's tolerance", within, "true", within),
    ]
    return [{"target": n, "value": v, "threshold": t, "met": bool(m)} for n, v, t, m in rows]


def _measure_training_step(base: Path, examples: list[Example]) -> float:
    """Seconds per example of one SFT epoch's steps (the loop's own timing)."""
    with tempfile.TemporaryDirectory() as folder:
        one = TrainSettings(**{**TRAIN.__dict__, "epochs": 1, "max_steps": 4})
        result = train_sft(base, examples, LORA, one, Path(folder) / "a", progress=False)
    return round(result.seconds / (result.steps * TRAIN.batch_size), 3)


if __name__ == "__main__":
    sys.exit(main())
