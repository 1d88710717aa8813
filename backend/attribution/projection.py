"""A seeded sparse random projection, one block per parameter group (transformer layer).

Within a group of ``n`` gradient coordinates projected to ``k`` dimensions, each coordinate is
copied into ``nonzeros`` slots; the ``n * nonzeros`` slots (padded with empty ones to a
multiple of ``k``) are ordered by a hash and cut into ``k`` equal blocks: output ``j`` is the
signed sum of block ``j``, scaled by ``1/sqrt(nonzeros)``. Every output sums the same number
of slots (a balanced sparse Johnson-Lindenstrauss map). Everything random comes from
splitmix64, defined here in a few lines, not from a library's generator (whose stream may
change between versions): anyone can rebuild the same projection from the seed.

Sums run in float64 over a fixed order with NumPy (single-threaded): the same gradient gives
the same sketch on any machine.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

MASK64 = (1 << 64) - 1


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer of uint64 ``values`` (Steele, Lea, Flood 2014)."""
    with np.errstate(over="ignore"):
        z = values.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _mix(value: int) -> int:
    return int(splitmix64(np.array([value & MASK64], dtype=np.uint64))[0])


class SparseProjection:
    """Projects per-group gradients [rows, n_g] to sketches [rows, k * groups]."""

    def __init__(self, group_sizes: Sequence[int], dims: int, nonzeros: int, seed: int) -> None:
        self.group_sizes = tuple(int(n) for n in group_sizes)
        self.dims = dims
        self.nonzeros = nonzeros
        self.seed = seed
        self._blocks = [self._block(g, n) for g, n in enumerate(self.group_sizes)]

    @property
    def output_dims(self) -> int:
        return self.dims * len(self.group_sizes)

    def _block(self, group: int, size: int) -> tuple[np.ndarray, np.ndarray]:
        """([k, per_output] input coordinate of each slot (``size``: an empty slot),
        [k, per_output] its signed scale)."""
        slots = size * self.nonzeros
        per_output = math.ceil(slots / self.dims)
        total = per_output * self.dims
        base = _mix(self.seed ^ _mix(group))
        with np.errstate(over="ignore"):
            keys = splitmix64(np.uint64(base) + np.arange(total, dtype=np.uint64))
        order = np.argsort(keys, kind="stable")  # slot ids in hash order
        inputs = np.where(order < slots, order // self.nonzeros, size).astype(np.int64)
        negative = (splitmix64(keys[order]) >> np.uint64(63)).astype(bool)
        signs = np.where(negative, -1.0, 1.0) / math.sqrt(self.nonzeros)
        return inputs.reshape(self.dims, per_output), signs.reshape(self.dims, per_output)

    def project(self, groups: Sequence[np.ndarray]) -> np.ndarray:
        """[rows, output_dims] float64 from one [rows, n_g] array per group."""
        if len(groups) != len(self.group_sizes):
            raise ValueError(
                f"{len(groups)} gradient groups, the projection has {len(self.group_sizes)}"
            )
        rows = groups[0].shape[0]
        out = np.empty((rows, self.output_dims), dtype=np.float64)
        for g, (grad, (inputs, signs)) in enumerate(zip(groups, self._blocks, strict=True)):
            if grad.shape != (rows, self.group_sizes[g]):
                raise ValueError(
                    f"group {g}: gradient of shape {grad.shape}, expected "
                    f"({rows}, {self.group_sizes[g]})"
                )
            padded = np.zeros((rows, grad.shape[1] + 1), dtype=np.float64)
            padded[:, :-1] = grad
            picked = padded[:, inputs] * signs  # [rows, k, per_output]
            out[:, g * self.dims : (g + 1) * self.dims] = picked.sum(axis=-1)
        return out
