"""The combination rule: span and gradient evidence -> shares per contribution, in parts per
million that sum to exactly one million.

1. ``span_mass = 10^6 * covered // total`` of the answer's token weight (:mod:`.spans`): the
   part of the answer's information found verbatim in the training data goes by spans, split
   in proportion to each contribution's span score (the sum over its examples).
2. The rest goes by gradients, in proportion to each contribution's positive gradient score
   (the sum of its examples' integer scores: TRAK's linear datamodel adds the effects of the
   examples of a group; a contribution whose examples together pushed the answer away gets
   nothing). With no positive gradient score at all (or no sketch yet), it is unattributed.
3. Exact fractions are rounded by largest remainder (ties: the lower contribution index), so
   the shares sum to the attributed mass exactly.
4. A record names the ``top`` contributions by share (ties: lower index); the shares of the
   others are summed as its ``tail``.

``unattributed`` and ``tail`` are paid by the epoch rule (see :func:`pro_rata`): to every
contribution of the model's lineage in proportion to its number of training examples, since
the data trained the model as a whole even where no single answer points at it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

SCALE = 1_000_000  # parts per million


@dataclass(frozen=True)
class ContributionShare:
    contribution: int  # index into the index's contributions
    span_score: int
    gradient_score: int
    share: int  # parts per million


@dataclass(frozen=True)
class Shares:
    contributions: tuple[ContributionShare, ...]  # by share, descending
    span_mass: int
    gradient_mass: int
    unattributed: int  # no evidence for it
    tail: int  # attributed to contributions beyond the top ones

    def total(self) -> int:
        return sum(c.share for c in self.contributions) + self.unattributed + self.tail


def per_contribution(document_scores: np.ndarray, owners: np.ndarray, count: int) -> list[int]:
    """Sums of integer per-document scores by owning contribution, exact: in int64 when no sum
    can reach 2^62 (the per-answer hot path), else in Python integers."""
    scores = np.asarray(document_scores)
    if not np.issubdtype(scores.dtype, np.integer):
        raise TypeError(f"scores must be integers, not {scores.dtype}")
    peak = int(np.abs(scores).max()) if scores.size else 0
    if peak * max(len(scores), 1) < 2**62:
        sums = np.zeros(count, dtype=np.int64)
        np.add.at(sums, owners, scores.astype(np.int64))
        return [int(v) for v in sums]
    exact = [0] * count
    for owner, score in zip(owners.tolist(), scores.tolist(), strict=True):
        exact[owner] += int(score)
    return exact


def combine(
    owners: np.ndarray,
    contributions: int,
    span_scores: np.ndarray,
    covered_weight: int,
    total_weight: int,
    gradient_scores: np.ndarray | None,
    top: int,
) -> Shares:
    """``owners`` [documents] -> contribution index; ``span_scores`` and ``gradient_scores``
    [documents] integers (``gradient_scores`` None: no sketch)."""
    spans = per_contribution(span_scores, owners, contributions)
    gradients = (
        per_contribution(gradient_scores, owners, contributions)
        if gradient_scores is not None
        else [0] * contributions
    )
    span_total = sum(spans)
    span_mass = SCALE * covered_weight // total_weight if total_weight and span_total else 0
    positive = [max(g, 0) for g in gradients]
    positive_total = sum(positive)
    gradient_mass = SCALE - span_mass if positive_total else 0
    exact = [Fraction(0)] * contributions
    for c in range(contributions):
        if span_mass:
            exact[c] += Fraction(span_mass * spans[c], span_total)
        if gradient_mass:
            exact[c] += Fraction(gradient_mass * positive[c], positive_total)
    shares = largest_remainder(exact, span_mass + gradient_mass)
    ranked = sorted((c for c in range(contributions) if shares[c]), key=lambda c: (-shares[c], c))
    named = ranked[:top]
    return Shares(
        contributions=tuple(ContributionShare(c, spans[c], gradients[c], shares[c]) for c in named),
        span_mass=span_mass,
        gradient_mass=gradient_mass,
        unattributed=SCALE - span_mass - gradient_mass,
        tail=sum(shares[c] for c in ranked[top:]),
    )


def largest_remainder(exact: Sequence[Fraction], total: int) -> list[int]:
    """Integers that sum to ``total`` (the exact values' sum), each the floor of its exact
    value or one more: the largest remainders round up, ties to the lower index."""
    floors = [int(x) for x in exact]  # exact values are non-negative: int() is the floor
    missing = total - sum(floors)
    if missing < 0 or missing > len(exact):
        raise ValueError(f"the exact values do not sum to {total}")
    order = sorted(range(len(exact)), key=lambda i: (-(exact[i] - floors[i]), i))
    for i in order[:missing]:
        floors[i] += 1
    return floors


def pro_rata(amount: int, weights: Sequence[int]) -> list[int]:
    """``amount`` split in proportion to non-negative integer ``weights`` (largest remainder):
    how an epoch pays what records leave unattributed, by training examples per
    contribution."""
    whole = sum(weights)
    if whole <= 0:
        raise ValueError("no weight to split by")
    return largest_remainder([Fraction(amount * w, whole) for w in weights], amount)
