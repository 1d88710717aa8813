"""Which LoRA kernel ``auto`` runs, measured on this machine at start-up.

The fastest kernel for a regime depends on the CPU (or GPU), its threads and the projection
shapes, so a fixed rule picks wrong somewhere (a faster CPU made ``segments`` beat ``gather``
for decode rows that ``gather`` won on a slower one). :func:`calibrate` times the LoRA term of
every kernel that can run here on a synthetic layer of the model's shape, for a decode batch
(``rows`` tokens on ``rows`` adapters) and a prefill batch (a few prompts on their own
adapters), and stores the winner of each regime in the model's :class:`LoraContext`.

The synthetic layers are as many as the model has (each with its own adapter weights), run one
after another per timing, so the weights come from memory as they do in a forward pass: one
layer timed in a loop keeps its few MB in cache and ranks the kernels differently (a kernel
that copies the weights looks cheap there, and is not).
"""

from __future__ import annotations

import logging
import statistics
import time
from dataclasses import dataclass

import torch
from torch import nn

from inference_node.engine.lora import (
    BatchedLoraLinear,
    Kernel,
    LoraBatch,
    LoraContext,
    Regime,
)

log = logging.getLogger(__name__)

PREFILL_PROMPTS = 4
PREFILL_TOKENS = 24  # per prompt
RANK = 8


@dataclass(frozen=True)
class Measured:
    regime: Regime
    seconds: dict[Kernel, float]  # median seconds of the LoRA term per kernel

    @property
    def best(self) -> Kernel:
        return min(self.seconds, key=self.seconds.__getitem__)


def _candidates(device: torch.device) -> list[Kernel]:
    kernels: list[Kernel] = ["segments", "gather"]
    if BatchedLoraLinear._can_fuse(torch.empty(0, device=device)):
        kernels.append("fused")  # the C++ op on a CPU, the Triton kernels on CUDA
    return kernels


def _time(layers: list[BatchedLoraLinear], kernel: Kernel, x: torch.Tensor, batch: LoraBatch,
          repeats: int) -> float:  # fmt: skip
    """Median seconds of the LoRA term of one layer, every layer run in turn."""
    y = torch.zeros(x.shape[0], layers[0].out_features, dtype=x.dtype, device=x.device)
    runs = [getattr(layer, f"_{kernel}") for layer in layers]
    times = []
    for i in range(repeats + 1):  # one warm-up pass (scratch buffers)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        start = time.perf_counter()
        for run in runs:
            run(x, y, batch)
        if x.is_cuda:
            torch.cuda.synchronize(x.device)
        if i >= 1:
            times.append((time.perf_counter() - start) / len(layers))
    return statistics.median(times)


@torch.inference_mode()
def calibrate(
    context: LoraContext,
    in_features: int,
    out_features: int,
    rows: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    num_layers: int = 30,
    repeats: int = 5,
) -> list[Measured]:
    """Measures every kernel in both regimes and sets ``context.choice`` to the winners."""
    device = torch.device(device)
    slots = max(rows, PREFILL_PROMPTS)
    generator = torch.Generator().manual_seed(0)
    base = nn.Linear(in_features, out_features, bias=False).to(device, dtype)
    shared = LoraContext()  # the gather kernel's scratch, shared as in the model
    layers = [BatchedLoraLinear(base, slots, RANK, shared) for _ in range(num_layers)]
    for layer in layers:
        a = torch.randn(slots, RANK, in_features, generator=generator) * 0.02
        b = torch.randn(slots, out_features, RANK, generator=generator) * 0.02
        for slot in range(slots):
            layer.set_slot(slot, a[slot].to(device, dtype), b[slot].to(device, dtype))
    decode = torch.arange(rows, device=device)  # [rows]: every row on its own adapter
    prefill = torch.arange(PREFILL_PROMPTS, device=device).repeat_interleave(PREFILL_TOKENS)
    measured = []
    for regime, indices in (("decode", decode), ("prefill", prefill)):
        batch = LoraBatch.from_indices(indices, layers[0].ranks)
        x = torch.randn(indices.shape[0], in_features, generator=generator).to(device, dtype)
        seconds = {k: _time(layers, k, x, batch, repeats) for k in _candidates(device)}
        result = Measured(regime, seconds)  # type: ignore[arg-type]
        context.choice[result.regime] = result.best
        measured.append(result)
        log.info(
            "LoRA kernels, %s (%d tokens, %d adapters, %dx%d): %s -> %s",
            regime, indices.shape[0], len(batch.segments), in_features, out_features,
            ", ".join(f"{k} {s * 1e3:.3f} ms" for k, s in seconds.items()), result.best,
        )  # fmt: skip
    return measured
