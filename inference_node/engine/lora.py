"""Batched multi-LoRA linear layer: one forward for tokens on different adapters.

Semantics, for every token ``t`` with slot ``i = idx[t]``:
``y[t] = base(x[t]) + B[i] @ (A[i] @ x[t])`` when ``i >= 0``, else ``y[t] = base(x[t])``,
with ``A: [slots, max_rank, in]`` and ``B: [slots, out, max_rank]`` preallocated, zero-padded
past each adapter's rank, and B already multiplied by the adapter's scaling.

Two kernels compute the LoRA term:

- ``segments`` (LoRAX/Punica SGMV style): tokens are split into contiguous runs of the same
  slot; each run does two dense matmuls at the slot's true rank. No weight copies.
- ``gather``: per-token gathered weights ``A[idx]`` and two ``torch.bmm``. Copies
  ``tokens * max_rank * (in + out)`` weights per layer, which costs more than it saves on CPU.

``segments`` is the default: on this CPU (SmolLM2-sized 576x576 projection, rank 8, 32 rows)
it ties ``gather`` in decode with 8-32 distinct adapters, is 2x faster with one adapter, and
3-5x faster in prefill, where ``gather`` copies weights for every token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

Kernel = Literal["segments", "gather"]
NO_ADAPTER = -1


@dataclass
class LoraBatch:
    """Per-forward adapter routing, computed once and shared by every LoRA layer."""

    indices: torch.Tensor  # [tokens] slot per token, -1 = no adapter
    segments: list[tuple[int, int, int]]  # (start, end, slot) contiguous runs, slot >= 0

    @classmethod
    def from_indices(cls, indices: torch.Tensor) -> LoraBatch:
        flat = indices.reshape(-1).to(torch.long)  # [tokens]
        slots, counts = torch.unique_consecutive(flat, return_counts=True)
        segments: list[tuple[int, int, int]] = []
        start = 0
        for slot, count in zip(slots.tolist(), counts.tolist(), strict=True):
            if slot != NO_ADAPTER:
                segments.append((start, start + count, slot))
            start += count
        return cls(indices=flat, segments=segments)


class LoraContext:
    """Holds the current ``LoraBatch``; the model sets it before each forward."""

    def __init__(self) -> None:
        self.batch: LoraBatch | None = None


class BatchedLoraLinear(nn.Module):
    """Wraps a base ``nn.Linear`` with ``slots`` LoRA adapters applied by per-token index."""

    def __init__(
        self,
        base: nn.Linear,
        slots: int,
        max_rank: int,
        context: LoraContext,
        kernel: Kernel = "segments",
    ) -> None:
        super().__init__()
        self.base = base
        self.context = context
        self.kernel: Kernel = kernel
        self.max_rank = max_rank
        weight, dev = base.weight, base.weight.device
        self.in_features, self.out_features = base.in_features, base.out_features
        # one extra all-zero slot at index `slots` so the gather kernel can route -1 there
        self.register_buffer(
            "lora_a",
            torch.zeros(slots + 1, max_rank, self.in_features, dtype=weight.dtype, device=dev),
            persistent=False,
        )  # [slots + 1, max_rank, in]
        self.register_buffer(
            "lora_b",
            torch.zeros(slots + 1, self.out_features, max_rank, dtype=weight.dtype, device=dev),
            persistent=False,
        )  # [slots + 1, out, max_rank]
        self.ranks = [0] * slots

    @property
    def slots(self) -> int:
        return len(self.ranks)

    @torch.no_grad()
    def set_slot(self, slot: int, a: torch.Tensor, b: torch.Tensor) -> None:
        """Copy ``a: [rank, in]`` and scaled ``b: [out, rank]`` into ``slot`` in place.

        Only the ranks in use are touched (the rest of the slot is zero already): a load costs
        O(rank), not O(max_rank), and stays below the size at which torch spreads an op over
        threads — on a busy CPU each such op waits for a time slice of its second thread.
        """
        rank, old = a.shape[0], self.ranks[slot]
        if old > rank:
            self.lora_a[slot, rank:old].zero_()
            self.lora_b[slot, :, rank:old].zero_()
        self.lora_a[slot, :rank].copy_(a)
        self.lora_b[slot, :, :rank].copy_(b)
        self.ranks[slot] = rank

    @torch.no_grad()
    def clear_slot(self, slot: int) -> None:
        old = self.ranks[slot]
        self.lora_a[slot, :old].zero_()
        self.lora_b[slot, :, :old].zero_()
        self.ranks[slot] = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # [..., out]
        batch = self.context.batch
        if batch is None or not batch.segments:
            return y
        x2 = x.reshape(-1, self.in_features)  # [tokens, in]
        y2 = y.reshape(-1, self.out_features)  # [tokens, out]
        if x2.shape[0] != batch.indices.shape[0]:
            raise ValueError(
                f"LoRA batch has {batch.indices.shape[0]} token indices, input has "
                f"{x2.shape[0]} tokens"
            )
        if self.kernel == "segments":
            self._segments(x2, y2, batch)
            return y2.reshape(y.shape)
        return (y2 + self._gather(x2, batch)).reshape(y.shape)

    def _segments(self, x: torch.Tensor, y: torch.Tensor, batch: LoraBatch) -> None:
        for start, end, slot in batch.segments:
            rank = self.ranks[slot]
            if rank == 0:
                continue
            shrink = x[start:end] @ self.lora_a[slot, :rank].T  # [run, rank]
            y[start:end].addmm_(shrink, self.lora_b[slot, :, :rank].T)  # [run, out]

    def _gather(self, x: torch.Tensor, batch: LoraBatch) -> torch.Tensor:
        idx = torch.where(batch.indices < 0, self.slots, batch.indices)  # [tokens]
        rank = max(self.ranks[slot] for _, _, slot in batch.segments)  # the batch's, not max_rank
        a = self.lora_a[:, :rank].index_select(0, idx)  # [tokens, rank, in]
        b = self.lora_b[:, :, :rank].index_select(0, idx)  # [tokens, out, rank]
        shrink = torch.bmm(a, x.unsqueeze(-1))  # [tokens, rank, 1]
        return torch.bmm(b, shrink).squeeze(-1)  # [tokens, out]
