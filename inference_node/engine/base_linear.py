"""The base model's projections on a CPU: oneDNN on weights prepacked once, when that is faster.

``F.linear`` on a CPU goes to MKL's sgemm, which repacks the weight on every call. Decode
batches are small (one token per running request), so that repacking is much of the work:
oneDNN's inner-product on a weight reordered once into its blocked layout
(``torch.ops.mkldnn._reorder_linear_weight`` / ``_linear_pointwise``, what torch.compile's
CPU freezing pass emits) runs SmolLM2's projections 2.3-2.5x faster at 1 to 800 rows on a
2-core Zen CPU, with fp32 accumulation (results differ from MKL's only in summation order).

Whether it wins is measured, not assumed (:func:`calibrate_base_matmul`, run at start-up with
the LoRA kernels' calibration): every projection of the model, in order, with a decode batch
on each path. When the packed path wins, the plain weights that nothing else reads are
released (the packed copy converts back exactly, ``to_dense``, for the rare plain call): the
engine holds one copy of the model, not two. A tied LM head keeps its weight (the embedding).
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional

log = logging.getLogger(__name__)

BaseMatmul = Literal["torch", "onednn"]
ROWS_HINT = 32  # the batch size oneDNN is told to expect when it reorders a weight


def onednn_available() -> bool:
    """Whether this torch has oneDNN's prepacked linear ops (CPU builds with MKL-DNN)."""
    return (
        torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


class BaseLinear(nn.Module):
    """An ``nn.Linear`` that multiplies by a oneDNN-prepacked copy of its weight when one is
    made (:meth:`pack`), and with ``F.linear`` otherwise: on other devices or dtypes, and
    whenever autograd records (the packed copy has no gradient)."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.linear = linear
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.packed: torch.Tensor | None = None
        self.released = False  # the plain weight's storage is freed; ``packed`` holds it

    @property
    def weight(self) -> torch.Tensor:
        """What code reading ``module.weight`` expects (a dense copy once released)."""
        if self.released:
            assert self.packed is not None
            return self.packed.to_dense()
        return self.linear.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.linear.bias

    @torch.no_grad()
    def pack(self, rows_hint: int = ROWS_HINT) -> None:
        weight = self.weight
        if weight.device.type != "cpu":
            raise ValueError(f"oneDNN packing is for CPU weights, this one is on {weight.device}")
        self.packed = torch.ops.mkldnn._reorder_linear_weight(weight.detach(), rows_hint)

    @torch.no_grad()
    def release(self) -> int:
        """Frees the plain weight (packed only); the bytes freed. Only for a weight nothing
        else holds: a tied LM head's is the embedding matrix."""
        if self.packed is None:
            raise ValueError("release needs a packed weight: pack() first")
        if self.released:
            return 0
        freed = self.linear.weight.nbytes
        with torch.inference_mode(False):  # a normal tensor, usable outside inference mode
            self.linear.weight.data = torch.empty(0, dtype=self.packed.dtype)
        self.released = True
        return freed

    @torch.no_grad()
    def unpack(self) -> None:
        """Back to ``F.linear`` on the plain weight (restored exactly if it was released)."""
        if self.released:
            assert self.packed is not None
            with torch.inference_mode(False):  # as release: a tensor autograd may use later
                self.linear.weight.data = self.packed.to_dense()
            self.released = False
        self.packed = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        packed = self.packed
        if packed is None or x.dtype != packed.dtype or x.is_cuda or torch.is_grad_enabled():
            return functional.linear(x, self.weight, self.linear.bias)
        return torch.ops.mkldnn._linear_pointwise(x, packed, self.linear.bias, "none", [], "")

    def extra_repr(self) -> str:
        state = "released" if self.released else self.packed is not None
        return f"{self.in_features}, {self.out_features}, packed={state}"


def wrap_base_linears(model: nn.Module) -> list[BaseLinear]:
    """Replaces every ``nn.Linear`` under ``model`` (the LoRA wrappers' bases included) by a
    :class:`BaseLinear` around it, in forward order; returns them."""
    wrapped = []
    for parent in list(model.modules()):
        if isinstance(parent, BaseLinear):
            continue
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear:
                base = BaseLinear(child)
                setattr(parent, name, base)
                wrapped.append(base)
    return wrapped


@dataclass(frozen=True)
class BaseMeasured:
    seconds: dict[BaseMatmul, float]  # median seconds of every projection once, per path
    rows: int

    @property
    def best(self) -> BaseMatmul:
        return min(self.seconds, key=self.seconds.__getitem__)


def _inputs(linears: list[BaseLinear], rows: int) -> Iterator[torch.Tensor]:
    by_width: dict[int, torch.Tensor] = {}
    generator = torch.Generator().manual_seed(0)
    for linear in linears:
        weight = linear.linear.weight
        if linear.in_features not in by_width:
            x = torch.randn(rows, linear.in_features, generator=generator)
            by_width[linear.in_features] = x.to(weight.device, weight.dtype)
        yield by_width[linear.in_features]


def _time_all(linears: list[BaseLinear], inputs: list[torch.Tensor], repeats: int) -> float:
    times = []
    for i in range(repeats + 1):  # one warm-up pass
        start = time.perf_counter()
        for linear, x in zip(linears, inputs, strict=True):
            linear(x)
        if i:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.inference_mode()
def calibrate_base_matmul(
    linears: list[BaseLinear], rows: int, repeats: int = 3, keep: frozenset[int] = frozenset()
) -> BaseMeasured | None:
    """Times every projection once per path with ``rows`` tokens (each weight read from
    memory, as in a forward) and keeps the faster: packed copies stay only if oneDNN wins,
    and then the plain weights are released, except those whose ``id`` is in ``keep``
    (shared with another module). None when there is nothing to choose (not a CPU, or no
    oneDNN)."""
    if not linears or linears[0].linear.weight.device.type != "cpu" or not onednn_available():
        return None
    inputs = list(_inputs(linears, rows))
    for linear in linears:
        linear.unpack()
    seconds: dict[BaseMatmul, float] = {"torch": _time_all(linears, inputs, repeats)}
    for linear in linears:
        linear.pack(rows)
    seconds["onednn"] = _time_all(linears, inputs, repeats)
    measured = BaseMeasured(seconds, rows)
    freed = 0
    for linear in linears:
        if measured.best == "torch":
            linear.unpack()
        elif id(linear.linear.weight) not in keep:
            freed += linear.release()
    log.info(
        "base projections, %d rows: %s -> %s%s",
        rows,
        ", ".join(f"{k} {s * 1e3:.1f} ms" for k, s in seconds.items()),
        measured.best,
        f" (plain weights released: {freed / 2**20:.0f} MiB)" if freed else "",
    )
    return measured
