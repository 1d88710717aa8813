"""The combination rule: integer shares that always sum to one million, and where the rest
goes."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from backend.attribution.shares import SCALE, combine, largest_remainder, pro_rata

OWNERS = np.array([0, 0, 1, 2])  # four documents of three contributions


def shares_of(result) -> dict[int, int]:
    return {c.contribution: c.share for c in result.contributions}


def test_no_evidence_leaves_everything_unattributed() -> None:
    none = combine(OWNERS, 3, np.zeros(4, np.int64), 0, 10, None, top=10)
    assert none.contributions == () and none.unattributed == SCALE
    negative = combine(OWNERS, 3, np.zeros(4, np.int64), 0, 10, np.array([-5, -1, -2, 0]), 10)
    assert negative.contributions == () and negative.unattributed == SCALE


def test_verbatim_coverage_splits_between_spans_and_gradients() -> None:
    # 3/4 of the answer's weight found verbatim in contribution 1's documents; gradients
    # favour contribution 0 (its documents' scores sum to 30) over 2 (10), 1 negative
    result = combine(OWNERS, 3, np.array([0, 0, 12, 0]), 3, 4, np.array([20, 10, -50, 10]), 10)
    assert (result.span_mass, result.gradient_mass, result.unattributed) == (750_000, 250_000, 0)
    assert shares_of(result) == {1: 750_000, 0: 187_500, 2: 62_500}
    assert [c.gradient_score for c in result.contributions] == [-50, 30, 10]
    spans_only = combine(OWNERS, 3, np.array([0, 0, 12, 0]), 3, 4, None, 10)
    assert shares_of(spans_only) == {1: 750_000} and spans_only.unattributed == 250_000


def test_contributions_beyond_the_top_ones_are_the_tail() -> None:
    result = combine(OWNERS, 3, np.zeros(4, np.int64), 0, 0, np.array([1, 1, 3, 2]), top=2)
    assert shares_of(result) == {1: 428_572, 0: 285_714} and result.tail == 285_714
    assert result.total() == SCALE


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 10**6), st.integers(-(10**12), 10**12)),
        min_size=1,
        max_size=30,
    ),
    st.integers(0, 100),
    st.integers(0, 100),
    st.booleans(),
    st.integers(1, 6),
)
def test_shares_always_sum_to_one_million(docs, covered, extra, with_sketch, top) -> None:
    owners = np.array([d[0] for d in docs])
    spans = np.array([d[1] for d in docs], dtype=np.int64)
    grads = np.array([d[2] for d in docs], dtype=np.int64) if with_sketch else None
    covered = covered if spans.sum() else 0
    result = combine(owners, 6, spans, covered, covered + extra, grads, top)
    assert result.total() == SCALE
    assert all(c.share > 0 for c in result.contributions) and len(result.contributions) <= top
    ranked = [c.share for c in result.contributions]
    assert ranked == sorted(ranked, reverse=True)
    if grads is not None:  # a contribution whose examples pushed the answer away gets no
        for c in result.contributions:  # gradient share; with no span score, nothing
            if c.gradient_score <= 0 and c.span_score == 0:
                pytest.fail(f"contribution {c.contribution} paid without evidence")


@given(st.lists(st.fractions(min_value=0, max_value=1000), min_size=1, max_size=20))
def test_largest_remainder_rounds_each_value_by_less_than_one(values: list[Fraction]) -> None:
    total = sum(values)
    if total.denominator != 1:
        values = [*values, Fraction(1) - (total - int(total))]
    whole = int(sum(values))
    rounded = largest_remainder(values, whole)
    assert sum(rounded) == whole
    assert all(abs(r - v) < 1 for r, v in zip(rounded, values, strict=True))


def test_pro_rata_splits_an_amount_exactly() -> None:
    assert pro_rata(100, [1, 1, 1]) == [34, 33, 33]
    assert pro_rata(10**18 + 1, [2, 1]) == [666_666_666_666_666_667, 333_333_333_333_333_334]
    with pytest.raises(ValueError, match="no weight"):
        pro_rata(5, [0, 0])
