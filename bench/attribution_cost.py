"""bench/attribution.py's cost and determinism parts: index and span-query cost on a 1M-token
corpus, gradient scoring at 10k and 100k training sketches, the overhead per answer against
generating it with the node's engine; records from a fresh process, sketches across threads
and batching."""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from attribution_setup import address, answer_ids, chat_prompt
from planted_facts import Fact
from serving_throughput import NoStopTokenizer, engine_once
from transformers import AutoTokenizer

from backend.attribution.attributor import Attributor
from backend.attribution.audit import TOLERANCE
from backend.attribution.corpus import Contribution, Corpus
from backend.attribution.index import AttributionIndex
from backend.attribution.settings import AttributionSettings
from backend.attribution.sketcher import query_row
from backend.attribution.sketches import exact_scores, quantize_query, sketch_distance
from backend.attribution.spans import find_spans
from backend.attribution.suffix_array import SuffixArray
from backend.modelfactory.dataset import Example
from backend.protocol.deployments import PROJECT_ROOT
from backend.storage.local import DirectoryStore
from inference_node.engine import AdapterPool, MultiLoraModel, Scheduler
from inference_node.engine.packaging import put_adapter
from inference_node.server.settings import NodeSettings

ENGINE_REQUESTS, ENGINE_TOKENS = 32, 64  # the cost comparison, as bench/serving.py measures


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
