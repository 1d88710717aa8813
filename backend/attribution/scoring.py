"""Scoring an answer against an index, given its query sketch: no model needed.

This is the exact, integer part of attribution: spans (exact by nature), gradient scores
from the int16 query sketch and the int16 training sketches, and the combination rule. The
node runs it after computing the sketch; an auditor runs it on a record's committed sketch
and must get the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from backend.attribution.corpus import token_ids, tokens_hash
from backend.attribution.index import AttributionIndex
from backend.attribution.record import AttributionRecord, ContributionRecord, SpanRecord
from backend.attribution.shares import combine
from backend.attribution.sketches import SketchError, exact_scores
from backend.attribution.spans import SpanEvidence, find_spans


def span_evidence(
    index: AttributionIndex, prompt: Sequence[int] | np.ndarray, answer: Sequence[int] | np.ndarray
) -> SpanEvidence:
    vocab = index.tokenizer.vocab_size
    return find_spans(
        index.suffixes,
        index.corpus,
        index.document_frequency,
        token_ids(prompt, vocab, "prompt"),
        token_ids(answer, vocab, "answer"),
        index.settings.spans,
    )


def gradient_scores(index: AttributionIndex, sketch: np.ndarray) -> np.ndarray:
    """[documents] int64: the query sketch's exact score against every training sketch."""
    sketch = np.asarray(sketch)
    if sketch.shape != (index.dims,) or sketch.dtype != np.int16:
        raise SketchError(
            f"a query sketch must be int16 of {index.dims} dims, not {sketch.dtype} {sketch.shape}"
        )
    return exact_scores(index.sketches, sketch[None, :])[0]


def make_record(
    index: AttributionIndex,
    index_cid: str,
    model_id: int,
    version: int,
    prompt: Sequence[int] | np.ndarray,
    answer: Sequence[int] | np.ndarray,
    evidence: SpanEvidence,
    sketch: np.ndarray | None,
) -> AttributionRecord:
    """The record of ``answer``: ``evidence`` from :func:`span_evidence`, ``sketch`` the
    int16 query sketch (None: gradients not computed, their part unattributed)."""
    scores = None if sketch is None else gradient_scores(index, sketch)
    owners = index.owners
    shares = combine(
        owners,
        len(index.corpus.contributions),
        evidence.document_scores_array(len(index.corpus)),
        evidence.covered_weight,
        evidence.total_weight,
        scores,
        index.settings.top_contributions,
    )
    contributions = index.corpus.contributions
    return AttributionRecord(
        model_id=model_id,
        version=version,
        index=index_cid,
        prompt_hash=tokens_hash(prompt),
        answer_hash=tokens_hash(answer),
        answer_tokens=len(answer),
        spans=tuple(
            SpanRecord(s.start, s.length, s.occurrences, s.documents) for s in evidence.spans
        ),
        covered_weight=evidence.covered_weight,
        total_weight=evidence.total_weight,
        query_sketch=None if sketch is None else np.asarray(sketch, dtype="<i2").tobytes(),
        contributions=tuple(
            ContributionRecord(
                contributions[c.contribution].datanet_id,
                contributions[c.contribution].contribution_id,
                contributions[c.contribution].contributor,
                c.span_score,
                c.gradient_score,
                c.share,
            )
            for c in shares.contributions
        ),
        span_mass=shares.span_mass,
        gradient_mass=shares.gradient_mass,
        unattributed=shares.unattributed,
        tail=shares.tail,
    )
