"""The seeded projection, int16 sketches, TRAK preconditioning and exact integer scores."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from backend.attribution.projection import SparseProjection, splitmix64
from backend.attribution.sketches import (
    INT16_MAX,
    SketchError,
    exact_scores,
    precondition,
    quantize_query,
    quantize_training,
    sketch_distance,
    unit_rows,
)


def test_splitmix64_matches_its_published_first_outputs() -> None:
    """splitmix64 seeded with 0 (state advanced by the golden gamma, then mixed):
    0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F."""
    gamma = 0x9E3779B97F4A7C15
    states = np.array([(k * gamma) % 2**64 for k in range(3)], dtype=np.uint64)
    assert [hex(int(v)) for v in splitmix64(states)] == [
        "0xe220a8397b1dcdaf",
        "0x6e789e6aa1b965f4",
        "0x6c45d188009454f",
    ]


def test_projection_is_rebuilt_from_its_seed_and_balanced() -> None:
    sizes = (1000, 37)
    a = SparseProjection(sizes, dims=16, nonzeros=4, seed=7)
    b = SparseProjection(sizes, dims=16, nonzeros=4, seed=7)
    c = SparseProjection(sizes, dims=16, nonzeros=4, seed=8)
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, n)).astype(np.float32) for n in sizes]
    assert np.array_equal(a.project(grads), b.project(grads))
    assert not np.array_equal(a.project(grads), c.project(grads))
    for g, n in enumerate(sizes):
        inputs, _ = a._blocks[g]
        assert inputs.shape[0] == 16  # every output sums the same number of slots
        real = inputs[inputs < n]
        assert np.array_equal(np.bincount(real, minlength=n), np.full(n, 4))  # 4 copies each


def test_projection_keeps_inner_products() -> None:
    """A Johnson-Lindenstrauss map: norms and inner products survive up to a few percent
    at 2,048 dimensions."""
    n, dims = 20_000, 2048
    projection = SparseProjection((n,), dims=dims, nonzeros=4, seed=1)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((1, n))
    y = 0.6 * x + 0.8 * rng.standard_normal((1, n))
    px, py = projection.project([x])[0], projection.project([y])[0]
    assert np.linalg.norm(px) ** 2 / np.linalg.norm(x) ** 2 == pytest.approx(1, abs=0.06)
    cos = float(x[0] @ y[0] / np.linalg.norm(x) / np.linalg.norm(y))
    assert float(unit_rows(px[None])[0] @ unit_rows(py[None])[0]) == pytest.approx(cos, abs=0.05)


@settings(max_examples=40, deadline=None)
@given(
    arrays(
        np.int16,
        st.tuples(st.integers(1, 6), st.integers(1, 64)),
        elements=st.integers(-INT16_MAX, INT16_MAX),
    ),
    st.integers(1, 3),
    st.integers(0, 2**32),
)
def test_exact_scores_equal_int64_arithmetic(training: np.ndarray, queries: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    q = rng.integers(-INT16_MAX, INT16_MAX + 1, (queries, training.shape[1])).astype(np.int16)
    expected = q.astype(np.int64) @ training.astype(np.int64).T
    assert np.array_equal(exact_scores(training, q), expected)


def test_exact_scores_hold_at_the_extremes() -> None:
    dims = 8192  # the largest width whose sums stay below 2^53
    training = np.full((2, dims), INT16_MAX, dtype=np.int16)
    training[1] = -INT16_MAX
    q = np.full((1, dims), INT16_MAX, dtype=np.int16)
    assert exact_scores(training, q).tolist() == [[dims * INT16_MAX**2, -dims * INT16_MAX**2]]
    with pytest.raises(SketchError, match="would not be exact"):
        exact_scores(np.zeros((1, dims + 1), np.int16), np.zeros((1, dims + 1), np.int16))
    with pytest.raises(SketchError, match="must be int16"):
        exact_scores(training.astype(np.int32), q)


def test_quantization_scales_and_rounds() -> None:
    unit = unit_rows(np.array([[3.0, -4.0, 0.0]]))[0]
    assert quantize_query(unit, 14).tolist() == [9830, -13107, 0]
    psi = np.array([[0.5, -2.0], [1.0, 0.25]])
    q, scale = quantize_training(psi)
    assert scale == 13 and q.tolist() == [[4096, -16384], [8192, 2048]]
    assert quantize_training(np.zeros((2, 2)))[1] == 0
    assert unit_rows(np.zeros((1, 3))).tolist() == [[0.0, 0.0, 0.0]]


def test_trak_preconditioner_is_the_same_in_both_forms() -> None:
    """(Phi Phi^T + l I)^-1 Phi (fewer examples than dims) equals Phi (Phi^T Phi + l I)^-1."""
    rng = np.random.default_rng(2)
    phi = unit_rows(rng.standard_normal((5, 12)))
    small = precondition(phi, "trak", 0.5)
    damping = 0.5 * 5 / 12
    direct = phi @ np.linalg.inv(phi.T @ phi + damping * np.eye(12))
    assert np.allclose(small, direct)
    tall = unit_rows(rng.standard_normal((20, 6)))
    assert np.allclose(
        precondition(tall, "trak", 0.5),
        tall @ np.linalg.inv(tall.T @ tall + 0.5 * 20 / 6 * np.eye(6)),
    )
    assert np.array_equal(precondition(phi, "none", 0.5), phi)


def test_sketch_distance_counts_coordinates() -> None:
    a = np.array([1, 2, 3, 4], dtype=np.int16)
    assert sketch_distance(a, np.array([1, 3, 3, 1], dtype=np.int16)) == (3, 2)
    assert sketch_distance(a, a) == (0, 0)
