"""Span evidence: which training examples hold the answer's tokens verbatim, and how much
that says.

After OLMoTrace: the answer's maximal spans that occur in the training tokens (at least
``min_length`` tokens; a span held by more than ``max_documents`` examples is common, and
credits no one). Then token by token, in integers:

- a token's weight is how informative it is: ``floor(log2(documents / df))`` where ``df`` is
  the number of training examples holding it (a token in every example weighs 0), and 0 for a
  token the prompt already contains (an entity name the question gave is not knowledge the
  data supplied: this is what keeps "The capital of <entity> is" from crediting whoever wrote
  about the entity when the fact itself is missing);
- each weighted token is credited through the longest uncommon span covering it (ties: the
  earliest) to the examples holding that span, in equal parts: ``weight * L / k`` for ``k``
  examples, with ``L = lcm(1..max_documents)`` so that the division is exact;
- ``covered / total`` weight is the share of the answer's information found verbatim.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import reduce

import numpy as np

from backend.attribution.corpus import Corpus
from backend.attribution.settings import SpanSettings
from backend.attribution.suffix_array import SuffixArray

OCCURRENCES_PER_DOCUMENT = 4  # positions looked up per allowed document before calling it common


def parts_unit(max_documents: int) -> int:
    """lcm(1..max_documents): a weight split among k <= max_documents examples stays whole."""
    return reduce(math.lcm, range(1, max_documents + 1), 1)


def token_weight(document_frequency: int, documents: int) -> int:
    """floor(log2(documents / df)) in integers (a token no example holds counts as df = 1)."""
    return max((documents // max(document_frequency, 1)).bit_length() - 1, 0)


def informative_weights(
    context: np.ndarray | list[int],
    targets: list[int],
    document_frequency: np.ndarray,
    documents: int,
) -> list[int]:
    """Each target token's weight: 0 when ``context`` (the prompt) holds it, else
    :func:`token_weight`."""
    echoed = set(np.asarray(context).tolist())
    return [
        0 if token in echoed else token_weight(int(document_frequency[token]), documents)
        for token in targets
    ]


@dataclass(frozen=True)
class Span:
    """``answer[start:start + length]`` occurs ``occurrences`` times in the training tokens;
    ``documents`` lists the examples holding it, empty when it is common."""

    start: int
    length: int
    occurrences: int
    documents: tuple[int, ...]

    @property
    def common(self) -> bool:
        return not self.documents


@dataclass(frozen=True)
class SpanEvidence:
    spans: tuple[Span, ...]  # the maximal spans, by start
    weights: tuple[int, ...]  # [answer tokens] informativeness
    credited: tuple[int, ...]  # [answer tokens] the span each token is credited through, or -1
    total_weight: int
    covered_weight: int  # of the weighted tokens credited through some span
    document_scores: dict[int, int]  # document -> credited weight, in units of 1/parts_unit

    def document_scores_array(self, documents: int) -> np.ndarray:
        scores = np.zeros(documents, dtype=np.int64)
        for doc, score in self.document_scores.items():
            scores[doc] = score
        return scores


def find_spans(
    array: SuffixArray,
    corpus: Corpus,
    document_frequency: np.ndarray,
    prompt: np.ndarray,
    answer: np.ndarray,
    settings: SpanSettings,
) -> SpanEvidence:
    """The span evidence of ``answer`` (token ids) given its ``prompt`` (token ids)."""
    spans = _maximal_spans(array, corpus, answer, settings)
    weights = tuple(
        informative_weights(prompt, np.asarray(answer).tolist(), document_frequency, len(corpus))
    )
    credited = []
    unit = parts_unit(settings.max_documents)
    scores: dict[int, int] = {}
    covered = 0
    for position, weight in enumerate(weights):
        best = -1
        for index, span in enumerate(spans):
            if span.start > position:
                break
            inside = position < span.start + span.length
            if inside and not span.common and (best < 0 or span.length > spans[best].length):
                best = index
        credited.append(best)
        if best >= 0 and weight > 0:
            covered += weight
            holders = spans[best].documents
            for doc in holders:
                scores[doc] = scores.get(doc, 0) + weight * unit // len(holders)
    return SpanEvidence(
        spans=spans,
        weights=weights,
        credited=tuple(credited),
        total_weight=sum(weights),
        covered_weight=covered,
        document_scores=dict(sorted(scores.items())),
    )


def _maximal_spans(
    array: SuffixArray, corpus: Corpus, answer: np.ndarray, settings: SpanSettings
) -> tuple[Span, ...]:
    """A match is maximal when it ends later than the match one token before it (match ends
    never decrease along the answer, so this is containment in any earlier match)."""
    spans = []
    previous_end = 0
    cap = OCCURRENCES_PER_DOCUMENT * settings.max_documents
    for match in array.matching_statistics(np.asarray(answer)):
        end = match.start + match.length
        if end > previous_end and match.length >= settings.min_length:
            documents: tuple[int, ...] = ()
            if match.count <= cap:
                held = np.unique(corpus.documents_at(array.positions(match.lo, match.hi)))
                if len(held) <= settings.max_documents:
                    documents = tuple(int(d) for d in held)
            spans.append(Span(match.start, match.length, match.count, documents))
        previous_end = max(previous_end, end)
    return tuple(spans)
