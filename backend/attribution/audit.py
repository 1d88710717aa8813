"""Checking an attribution record from public inputs: what an auditor runs.

Public, by CID: the index (and through it the training tokens, documents, contributions and
training sketches), the adapter and base model; per answer, the record. A verifier also needs
the prompt's and answer's token ids (the record commits to them by hash only).

1. The record names this index and the hashes of these token ids.
2. Spans, scores and shares recomputed with the record's own query sketch give the record
   byte for byte: all of it is integer arithmetic on committed inputs.
3. The query sketch recomputed from the tokens (a forward and backward pass) lies within
   :data:`TOLERANCE` of the committed one, so a node cannot invent a sketch: float gradients
   move a few coordinates by an LSB across thread counts, CPUs and batchings (measured in
   bench/results/attribution.json), an invented sketch moves nearly all of them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from backend.attribution.corpus import tokens_hash
from backend.attribution.index import AttributionIndex
from backend.attribution.record import AttributionRecord
from backend.attribution.scoring import make_record, span_evidence
from backend.attribution.sketches import SketchError, sketch_distance


@dataclass(frozen=True)
class SketchTolerance:
    max_difference: int  # LSBs any one coordinate may differ by
    max_differing: float  # share of coordinates that may differ at all


TOLERANCE = SketchTolerance(max_difference=4, max_differing=0.02)


def check_record(
    index: AttributionIndex,
    index_cid: str,
    record: AttributionRecord,
    prompt: Sequence[int],
    answer: Sequence[int],
    recomputed_sketch: np.ndarray | None = None,
    tolerance: SketchTolerance = TOLERANCE,
) -> list[str]:
    """What is wrong with ``record`` (an empty list: nothing)."""
    problems = []
    if record.index != index_cid:
        problems.append(f"the record was scored against index {record.index}, not {index_cid}")
    if record.prompt_hash != tokens_hash(prompt):
        problems.append("the prompt's token ids do not hash to the record's prompt_hash")
    if record.answer_hash != tokens_hash(answer):
        problems.append("the answer's token ids do not hash to the record's answer_hash")
    if problems:
        return problems
    try:
        again = make_record(
            index,
            index_cid,
            record.model_id,
            record.version,
            prompt,
            answer,
            span_evidence(index, prompt, answer),
            record.sketch_array(),
        )
    except SketchError as why:
        return [f"the record's query sketch is unusable: {why}"]
    if again.to_bytes() != record.to_bytes():
        problems += _differences(record, again)
    if recomputed_sketch is not None and record.query_sketch is not None:
        committed = record.sketch_array()
        assert committed is not None
        largest, differing = sketch_distance(committed, recomputed_sketch)
        share = differing / max(len(committed), 1)
        if largest > tolerance.max_difference or share > tolerance.max_differing:
            problems.append(
                f"the committed query sketch is not the answer's: recomputed, {differing} of "
                f"{len(committed)} coordinates differ, by up to {largest} (tolerance "
                f"{tolerance.max_difference}, {tolerance.max_differing:.0%})"
            )
    return problems


def _differences(record: AttributionRecord, again: AttributionRecord) -> list[str]:
    ours, theirs = again.to_json(), record.to_json()
    named = [key for key in sorted(ours) if ours[key] != theirs.get(key)]
    return [f"recomputed from public inputs, the record differs in {', '.join(named)}"]
