"""Batched multi-LoRA linear layer: one forward for tokens on different adapters.

Semantics, for every token ``t`` with slot ``i = idx[t]``:
``y[t] = base(x[t]) + B[i] @ (A[i] @ x[t])`` when ``i >= 0``, else ``y[t] = base(x[t])``,
with B already multiplied by the adapter's scaling. The slots are preallocated and
zero-padded past each adapter's rank: ``lora_a: [slots + 1, max_rank, in]`` (A) and
``lora_b: [slots + 1, max_rank, out]`` (B transposed, so one slot's rank rows are contiguous).

Three kernels compute the LoRA term:

- ``segments`` (LoRAX/Punica SGMV style): tokens are split into contiguous runs of the same
  slot; each run does two dense matmuls at the slot's true rank. No weight copies, but two
  ops per run: cheap for prefill and for a batch on few adapters.
- ``gather`` (Punica BGMV style): per-token weights ``A[idx]``, ``B[idx]`` gathered at the
  batch's largest true rank, then a broadcast multiply-sum (shrink) and one ``bmm`` (expand):
  five ops per layer whatever the number of adapters, but it copies
  ``tokens * rank * (in + out)`` weights — cheap in decode (one token per row), wasteful in
  prefill. The copies go into scratch buffers every layer reuses (fresh tensors would be new
  pages to fault in on every layer of every step).

- ``fused`` (serving): one compiled op that reads each token's adapter rows in place, shrink
  and expand together: no copies and no per-run ops. On a CPU the C++ op ``csrc/bgmv.cpp``
  (built by ``make kernels``, see ``cpu_kernels``), on CUDA two Triton launches
  (``triton_lora``). Without them, or under autograd, a layer asked for it runs ``gather``.

``auto`` (the default) sorts each forward pass into a regime by the batch's shape, ``decode``
when runs are shorter than ``GATHER_BELOW_TOKENS_PER_RUN`` tokens on average (decode rows on
many adapters) and ``prefill`` otherwise, and runs the kernel chosen for that regime. The
choice is measured on the machine (:func:`calibrate`, which the engine runs at start-up), not
fixed: which kernel wins moves with the CPU, its threads and the shapes (on one 2-core CPU
gather beat segments for 32 decode rows, on one twice as fast segments won).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from inference_node.engine.cpu_kernels import fused_lora_available
from inference_node.engine.triton_lora import triton_available, triton_bgmv_

Kernel = Literal["auto", "segments", "gather", "fused"]
Regime = Literal["decode", "prefill"]
NO_ADAPTER = -1
GATHER_BELOW_TOKENS_PER_RUN = 4


@dataclass
class LoraBatch:
    """Per-forward adapter routing, computed once and shared by every LoRA layer."""

    indices: torch.Tensor  # [tokens] slot per token, -1 = no adapter
    segments: list[tuple[int, int, int]]  # (start, end, slot) contiguous runs, slot >= 0
    # the largest adapter rank among the batch's slots (None: each layer finds its own); the
    # gather and fused kernels read this many rows, which past a layer's own rank are zeros
    max_rank: int | None = None
    # the same per projection name: a projection no adapter of the batch targets (q/k/v/o
    # adapters on an engine that wraps the MLP too) is skipped, not run over zero rows
    module_ranks: dict[str, int] = field(default_factory=dict)
    _gather_indices: dict[int, torch.Tensor] = field(default_factory=dict, repr=False)

    @classmethod
    def from_indices(
        cls,
        indices: torch.Tensor,
        slot_ranks: list[int] | None = None,
        module_slot_ranks: dict[str, list[int]] | None = None,
    ) -> LoraBatch:
        """``slot_ranks[slot]``: the rank of the adapter in each slot; ``module_slot_ranks``:
        the same per projection name (0 where the adapter does not target it)."""
        # [tokens]; contiguous: one row's slots expanded over its tokens reshape to stride 0
        flat = indices.reshape(-1).to(torch.long).contiguous()
        slots, counts = torch.unique_consecutive(flat, return_counts=True)
        segments: list[tuple[int, int, int]] = []
        start = 0
        for slot, count in zip(slots.tolist(), counts.tolist(), strict=True):
            if slot != NO_ADAPTER:
                segments.append((start, start + count, slot))
            start += count
        max_rank = None
        used = {slot for _, _, slot in segments}
        if slot_ranks is not None and segments:
            max_rank = max(slot_ranks[slot] for slot in used)
        module_ranks = {}
        if module_slot_ranks is not None and segments:
            module_ranks = {m: max(r[slot] for slot in used) for m, r in module_slot_ranks.items()}
        return cls(indices=flat, segments=segments, max_rank=max_rank, module_ranks=module_ranks)

    def rank_of(self, module: str | None) -> int | None:
        """The batch's largest rank on projection ``module`` (None: not known here)."""
        if module is not None and module in self.module_ranks:
            return self.module_ranks[module]
        return self.max_rank

    @property
    def prefers_gather(self) -> bool:
        """Many short runs (decode rows on different adapters): the ``decode`` regime."""
        runs = len(self.segments)
        return runs > 1 and self.indices.shape[0] < GATHER_BELOW_TOKENS_PER_RUN * runs

    @property
    def regime(self) -> Regime:
        return "decode" if self.prefers_gather else "prefill"

    def gather_indices(self, zero_slot: int) -> torch.Tensor:
        """Indices with no-adapter tokens routed to the all-zero ``zero_slot`` (computed once)."""
        cached = self._gather_indices.get(zero_slot)
        if cached is None:
            cached = torch.where(self.indices < 0, zero_slot, self.indices)
            self._gather_indices[zero_slot] = cached
        return cached


class LoraContext:
    """Holds the current ``LoraBatch``; the model sets it before each forward. Also the gather
    kernel's scratch buffers, shared by every layer (they run one after another): gathered
    weights are fresh ``tokens * rank * dim`` tensors per layer otherwise, and on a CPU each
    such allocation is new pages to fault in."""

    def __init__(self) -> None:
        self.batch: LoraBatch | None = None
        self._scratch: dict[tuple[str, torch.dtype, torch.device, bool], torch.Tensor] = {}
        # what ``auto`` runs per regime until :func:`calibrate` measures this machine
        self.choice: dict[Regime, Kernel] = {
            "decode": "fused" if fused_lora_available() else "gather",
            "prefill": "segments",
        }

    def scratch(
        self, name: str, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device
    ) -> torch.Tensor:
        """A reusable buffer of ``shape`` (grown as needed; its contents are garbage)."""
        # a buffer made under inference mode cannot be written outside it, nor the reverse
        key = (name, dtype, device, torch.is_inference_mode_enabled())
        size = math.prod(shape)
        buffer = self._scratch.get(key)
        if buffer is None or buffer.numel() < size:
            buffer = torch.empty(size, dtype=dtype, device=device)
            self._scratch[key] = buffer
        return buffer[:size].view(shape)


class BatchedLoraLinear(nn.Module):
    """Wraps a base ``nn.Linear`` with ``slots`` LoRA adapters applied by per-token index."""

    def __init__(
        self,
        base: nn.Linear,
        slots: int,
        max_rank: int,
        context: LoraContext,
        kernel: Kernel = "auto",
        buffers: tuple[torch.Tensor, torch.Tensor] | None = None,
        module: str | None = None,
    ) -> None:
        """``buffers`` (``lora_a``, ``lora_b`` shaped as below) lets a model keep one layer's
        slots inside a stack over layers, so that a slot load is one copy per projection;
        ``module`` names the projection (``q_proj``...) for the batch's per-projection ranks."""
        super().__init__()
        self.base = base
        self.module = module
        self.context = context
        self.kernel: Kernel = kernel
        self.max_rank = max_rank
        weight, dev = base.weight, base.weight.device
        self.in_features, self.out_features = base.in_features, base.out_features
        # one extra all-zero slot at index `slots` so the gather kernel can route -1 there
        shape_a = (slots + 1, max_rank, self.in_features)
        shape_b = (slots + 1, max_rank, self.out_features)
        if buffers is None:
            buffers = (
                torch.zeros(shape_a, dtype=weight.dtype, device=dev),
                torch.zeros(shape_b, dtype=weight.dtype, device=dev),
            )
        lora_a, lora_b = buffers
        if (tuple(lora_a.shape), tuple(lora_b.shape)) != (shape_a, shape_b):
            raise ValueError(
                f"LoRA buffers of shapes {tuple(lora_a.shape)}, {tuple(lora_b.shape)}, "
                f"expected {shape_a}, {shape_b}"
            )
        self.register_buffer("lora_a", lora_a, persistent=False)  # [slots + 1, max_rank, in]
        self.register_buffer("lora_b", lora_b, persistent=False)  # [slots + 1, max_rank, out]
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
            self.lora_b[slot, rank:old].zero_()
        self.lora_a[slot, :rank].copy_(a)
        self.lora_b[slot, :rank].copy_(b.T)
        self.ranks[slot] = rank

    @torch.no_grad()
    def clear_slot(self, slot: int) -> None:
        old = self.ranks[slot]
        self.lora_a[slot, :old].zero_()
        self.lora_b[slot, :old].zero_()
        self.ranks[slot] = 0

    def slot_weights(self, slot: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The slot's ``A: [rank, in]`` and scaled ``B: [out, rank]`` (views)."""
        rank = self.ranks[slot]
        return self.lora_a[slot, :rank], self.lora_b[slot, :rank].T

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base(x)  # [..., out]
        batch = self.context.batch
        if batch is None or not batch.segments or batch.rank_of(self.module) == 0:
            return y  # no adapter of this batch targets this projection
        x2 = x.reshape(-1, self.in_features)  # [tokens, in]
        y2 = y.reshape(-1, self.out_features)  # [tokens, out]
        if x2.shape[0] != batch.indices.shape[0]:
            raise ValueError(
                f"LoRA batch has {batch.indices.shape[0]} token indices, input has "
                f"{x2.shape[0]} tokens"
            )
        kernel = self.context.choice[batch.regime] if self.kernel == "auto" else self.kernel
        if kernel == "fused" and self._can_fuse(x2):
            self._fused(x2, y2, batch)
        elif kernel in ("gather", "fused"):
            self._gather(x2, y2, batch)
        else:
            self._segments(x2, y2, batch)
        return y2.reshape(y.shape)

    @staticmethod
    def _can_fuse(x: torch.Tensor) -> bool:
        """The fused op of the device runs here: the compiled CPU op, or the Triton kernels
        on CUDA; neither records gradients."""
        if torch.is_grad_enabled():
            return False
        return triton_available() if x.is_cuda else fused_lora_available()

    def _fused(self, x: torch.Tensor, y: torch.Tensor, batch: LoraBatch) -> None:
        rank = batch.rank_of(self.module)
        if rank is None:
            rank = max(self.ranks[slot] for _, _, slot in batch.segments)
        if rank == 0:
            return
        # y is the base output's own storage (a contiguous view), updated in place
        if x.is_cuda:
            triton_bgmv_(y, x, self.lora_a, self.lora_b, batch.indices, rank)
        else:
            torch.ops.openledger.bgmv_(
                y, x.contiguous(), self.lora_a, self.lora_b, batch.indices, rank
            )

    def _segments(self, x: torch.Tensor, y: torch.Tensor, batch: LoraBatch) -> None:
        for start, end, slot in batch.segments:
            rank = self.ranks[slot]
            if rank == 0:
                continue
            shrink = x[start:end] @ self.lora_a[slot, :rank].T  # [run, rank]
            y[start:end].addmm_(shrink, self.lora_b[slot, :rank])  # [run, out]

    def _gather(self, x: torch.Tensor, y: torch.Tensor, batch: LoraBatch) -> None:
        rank = batch.rank_of(self.module)  # the batch's largest, not max_rank
        if rank is None:
            rank = max(self.ranks[slot] for _, _, slot in batch.segments)
        if rank == 0:
            return
        idx = batch.gather_indices(self.slots)  # [tokens]
        a = self._gathered("a", self.lora_a[:, :rank], idx)  # [tokens, rank, in]
        if x.is_cuda:  # one kernel
            shrink = torch.bmm(a, x.unsqueeze(-1)).transpose(1, 2)  # [tokens, 1, rank]
        elif torch.is_grad_enabled():  # a broadcast multiply-sum beats bmm's overhead on CPU
            shrink = (a * x.unsqueeze(1)).sum(-1).unsqueeze(1)  # [tokens, 1, rank]
        else:  # the same, in the gathered copy
            shrink = a.mul_(x.unsqueeze(1)).sum(-1).unsqueeze(1)
        b = self._gathered("b", self.lora_b[:, :rank], idx)  # [tokens, rank, out]
        y.unsqueeze(1).baddbmm_(shrink, b)  # y[t] += shrink[t] @ B[t], in place

    def _gathered(self, name: str, weights: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """``weights[idx]``, into the context's scratch buffer when no autograd is recording
        (serving); a fresh tensor otherwise (autograd refuses ``out=`` and shared buffers)."""
        if torch.is_grad_enabled():
            return weights.index_select(0, idx)
        shape = (idx.shape[0], *weights.shape[1:])
        out = self.context.scratch(name, shape, weights.dtype, weights.device)
        return torch.index_select(weights, 0, idx, out=out)
