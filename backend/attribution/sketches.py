"""From projected gradients to int16 sketches, and exact integer scores between them.

- Every projected gradient is scaled to unit length (a long example's large gradient does
  not drown the others: this is cosine similarity when nothing else is applied).
- Training side, TRAK-style: ``Psi = Phi (Phi^T Phi + lambda I)^-1`` over the unit training
  sketches ``Phi`` [examples, dims], ``lambda = ridge * trace(Phi^T Phi) / dims``; this whitens
  directions every example shares (the answer template), so what is particular to an example
  counts. ``Psi`` is stored as int16 with one power-of-two scale.
- Query side: the unit sketch as ``round(q * 2^query_scale_log2)`` in int16.
- Score of example ``i``: ``sum_d Psi_int[i, d] * q_int[d]``, an integer. Products are below
  2^30 and a row sums at most 2^13 of them, so float64 BLAS computes every partial sum
  exactly: the result is the same integer on any machine and in any summation order.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from backend.attribution.settings import Preconditioner

INT16_MAX = 32767
MAX_EXACT_DIMS = 1 << 13  # dims * 2^15 * 2^15 < 2^53 keeps float64 sums exact
SCORE_CHUNK_ROWS = 8192  # training rows converted to float64 at a time


class SketchError(ValueError):
    """Sketches of the wrong shape or range; the message says which."""


def unit_rows(matrix: np.ndarray) -> np.ndarray:
    """Each row scaled to unit L2 norm (a zero row stays zero), float64."""
    matrix = np.asarray(matrix, dtype=np.float64)
    norms = np.linalg.norm(matrix, axis=-1, keepdims=True)
    return np.divide(matrix, norms, out=np.zeros_like(matrix), where=norms > 0)


def quantize_query(unit: np.ndarray, scale_log2: int) -> np.ndarray:
    """A unit sketch [dims] (or [queries, dims]) as int16 ``round(q * 2^scale_log2)``."""
    scaled = np.rint(np.asarray(unit, dtype=np.float64) * float(2**scale_log2))
    return np.clip(scaled, -INT16_MAX, INT16_MAX).astype(np.int16)


def precondition(unit: np.ndarray, kind: Preconditioner, ridge: float) -> np.ndarray:
    """The training-side sketches ``Psi`` [examples, dims] float64 (see the module doc)."""
    if kind == "none" or unit.shape[0] == 0:
        return unit.copy()
    examples, dims = unit.shape
    damping = ridge * float(np.einsum("ij,ij->", unit, unit)) / dims
    if damping <= 0:
        return unit.copy()
    if examples <= dims:  # (Phi Phi^T + l I)^-1 Phi: the smaller system
        kernel = unit @ unit.T + damping * np.eye(examples)
        return np.linalg.solve(kernel, unit)
    covariance = unit.T @ unit + damping * np.eye(dims)
    return np.linalg.solve(covariance, unit.T).T


def quantize_training(psi: np.ndarray) -> tuple[np.ndarray, int]:
    """``(int16 [examples, dims], scale_log2)``: the largest power-of-two scale at which every
    value fits int16."""
    peak = float(np.abs(psi).max()) if psi.size else 0.0
    if peak == 0.0:
        return np.zeros(psi.shape, dtype=np.int16), 0
    scale_log2 = int(np.floor(np.log2(INT16_MAX / peak)))
    scaled = np.rint(psi * np.ldexp(1.0, scale_log2))
    return np.clip(scaled, -INT16_MAX, INT16_MAX).astype(np.int16), scale_log2


def exact_scores(training: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """[queries, examples] int64: every query's integer inner product with every training
    sketch (both int16)."""
    if training.dtype != np.int16 or queries.dtype != np.int16:
        raise SketchError("sketches must be int16")
    queries = np.atleast_2d(queries)
    if training.ndim != 2 or queries.shape[1] != training.shape[1]:
        raise SketchError(
            f"query sketches of {queries.shape[1]} dims, training sketches of "
            f"shape {training.shape}"
        )
    if training.shape[1] > MAX_EXACT_DIMS:
        raise SketchError(f"{training.shape[1]} dims: sums above 2^53 would not be exact")
    q = queries.astype(np.float64).T  # [dims, queries]
    out = np.empty((queries.shape[0], training.shape[0]), dtype=np.int64)
    for start, block in _row_blocks(training):
        out[:, start : start + len(block)] = (block.astype(np.float64) @ q).T.astype(np.int64)
    return out


def _row_blocks(matrix: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    for start in range(0, matrix.shape[0], SCORE_CHUNK_ROWS):
        yield start, matrix[start : start + SCORE_CHUNK_ROWS]


def sketch_distance(committed: np.ndarray, recomputed: np.ndarray) -> tuple[int, int]:
    """(largest coordinate difference, coordinates that differ) between two int16 sketches."""
    diff = np.abs(committed.astype(np.int32) - recomputed.astype(np.int32))
    return int(diff.max()) if diff.size else 0, int(np.count_nonzero(diff))
