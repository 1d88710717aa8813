"""What earned a contributor its share of an answer, in words: the spans of an attribution
record found in the training data, with the contributions whose examples hold them.

A record carries only token positions and document numbers; given the answer's token ids
(checked against the record's ``answer_hash``) and the index it was scored against, each span
becomes its tokens and the contributions behind it, for a person to read.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from backend.attribution.corpus import Contribution, tokens_hash
from backend.attribution.index import AttributionIndex
from backend.attribution.record import AttributionRecord


@dataclass(frozen=True)
class EarningSpan:
    tokens: tuple[int, ...]  # the answer's token ids of the span
    contributions: tuple[Contribution, ...]  # whose training examples hold it, in index order


def earning_spans(
    record: AttributionRecord, index: AttributionIndex, answer: Sequence[int]
) -> list[EarningSpan]:
    """The record's spans that occur in some training example (common spans, found
    everywhere, are left out), longest first; ``[]`` when ``answer`` is not the answer the
    record was made for (its hash differs)."""
    if tokens_hash(answer) != record.answer_hash:
        return []
    documents = index.corpus.documents
    contributions = index.corpus.contributions
    spans = []
    for span in sorted(record.spans, key=lambda s: (-s.length, s.start)):
        if not span.documents:
            continue
        owners = sorted({documents[d].contribution for d in span.documents})
        spans.append(EarningSpan(
            tuple(answer[span.start : span.start + span.length]),
            tuple(contributions[o] for o in owners),
        ))  # fmt: skip
    return spans
