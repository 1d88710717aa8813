"""Load and validate PEFT LoRA adapters against a base model, with the scaling folded into B.

A PEFT adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` whose
keys look like ``base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight``.
For a target projection ``W: [out, in]`` PEFT computes ``y = W x + s * B (A x)`` with
``A: [r, in]``, ``B: [out, r]`` and ``s = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with
rsLoRA). We store ``A`` and ``s * B`` so that serving is two plain matmuls, as vLLM does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from backend.models.adapter_archive import CONFIG_FILE, WEIGHTS_FILE
from backend.models.adapter_config import UnservableAdapterError, parse_adapter_config
from backend.models.adapter_weights import (
    ATTENTION_PROJECTIONS,
    FLOAT_DTYPES,
    LLAMA_PROJECTIONS,
    MLP_PROJECTIONS,
    BaseModelSpec,
    check_targets,
    match_weights,
)
from inference_node.engine.safetensors_view import (
    SafetensorsFormatError,
    TensorView,
    UnsupportedDtypeError,
    read_views,
    to_torch,
)

__all__ = [
    "ATTENTION_PROJECTIONS",
    "CONFIG_FILE",
    "FLOAT_DTYPES",
    "LLAMA_PROJECTIONS",
    "MLP_PROJECTIONS",
    "WEIGHTS_FILE",
    "AdapterError",
    "BaseModelSpec",
    "LoraAdapter",
    "ModuleWeights",
    "load_adapter",
    "parse_adapter",
]


class AdapterError(ValueError):
    """An adapter that cannot be served on this base model; the message says why."""


@dataclass(frozen=True)
class ModuleWeights:
    """One projection's LoRA weights over the layers it targets, stacked.

    Stacked so that loading an adapter into a slot is one copy per projection, not one per
    (layer, projection): ``a: [layers, rank, in]`` and ``b_t: [layers, rank, out]`` (the
    scaled B, transposed, the layout of :class:`BatchedLoraLinear`'s buffers).
    """

    layers: tuple[int, ...]  # ascending layer indices
    a: torch.Tensor  # [layers, rank, in]
    b_t: torch.Tensor  # [layers, rank, out]


@dataclass
class LoraAdapter:
    """A validated adapter, ready to be copied into a slot.

    ``modules[name]`` holds that projection's stacked weights, with the scaling already
    folded into B; :attr:`weights` gives the same per layer.
    """

    name: str
    rank: int
    target_modules: frozenset[str]
    scaling: float
    dtype: torch.dtype
    modules: dict[str, ModuleWeights] = field(repr=False)

    @property
    def weights(self) -> dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]:
        """``(layer, module) -> (A: [rank, in], scaled B: [out, rank])``, views."""
        return {
            (layer, module): (stack.a[i], stack.b_t[i].T)
            for module, stack in self.modules.items()
            for i, layer in enumerate(stack.layers)
        }

    @property
    def num_bytes(self) -> int:
        return sum(stack.a.nbytes + stack.b_t.nbytes for stack in self.modules.values())


def _parse_tensors(folder: str | Path, data: bytes) -> dict[str, TensorView]:
    try:
        return read_views(data)
    except SafetensorsFormatError as exc:
        raise AdapterError(f"adapter {folder}: unreadable {WEIGHTS_FILE}: {exc}") from exc
    except UnsupportedDtypeError as exc:
        raise AdapterError(
            f"adapter {folder}: {exc}, expected one of {[str(d) for d in FLOAT_DTYPES]}"
        ) from exc


def _read_file(folder: Path, name: str) -> bytes:
    path = folder / name
    if not path.is_file():
        raise AdapterError(f"adapter {folder}: missing {name}")
    try:
        return path.read_bytes()
    except OSError as exc:
        raise AdapterError(f"adapter {folder}: unreadable {name}: {exc}") from exc


def load_adapter(
    folder: str | Path,
    spec: BaseModelSpec,
    max_rank: int,
    dtype: torch.dtype = torch.float32,
    name: str | None = None,
) -> LoraAdapter:
    """Read a PEFT adapter folder, validate it against ``spec``, fold the scaling into B."""
    folder = Path(folder)
    config = _read_file(folder, CONFIG_FILE)
    weights = _read_file(folder, WEIGHTS_FILE)
    return parse_adapter(config, weights, spec, max_rank, dtype, name or folder.name, folder)


def parse_adapter(
    config_bytes: bytes,
    weights_bytes: bytes,
    spec: BaseModelSpec,
    max_rank: int,
    dtype: torch.dtype = torch.float32,
    name: str = "adapter",
    source: str | Path | None = None,
) -> LoraAdapter:
    """Validate a PEFT adapter given as its two files' bytes; errors name ``source``.

    The config must pass the allow-list of :mod:`backend.models.adapter_config` and the weights
    cover exactly what it targets (:mod:`backend.models.adapter_weights`): what PEFT computes
    is then exactly what the engine computes."""
    where_from = source if source is not None else name
    try:
        config = parse_adapter_config(config_bytes, where_from)
        if config.rank > max_rank:
            raise AdapterError(
                f"adapter {where_from}: rank {config.rank} exceeds the configured max {max_rank}"
            )
        check_targets(where_from, config, spec)  # before reading any weights
        tensors = _parse_tensors(where_from, weights_bytes)
        shapes = {key: view.shape for key, view in tensors.items()}
        layout = match_weights(where_from, shapes, config, spec)
    except UnservableAdapterError as exc:
        raise AdapterError(str(exc)) from exc
    pairs = {
        module: {layer: (tensors[a], tensors[b]) for layer, (a, b) in by_layer.items()}
        for module, by_layer in layout.items()
    }
    modules = _stack_modules(where_from, pairs, config.scaling, dtype)
    return LoraAdapter(
        name=name,
        rank=config.rank,
        target_modules=frozenset(modules),
        scaling=config.scaling,
        dtype=dtype,
        modules=modules,
    )


Pairs = dict[str, dict[int, tuple[TensorView, TensorView]]]  # module -> layer -> (A, B)


def _stack_modules(
    folder: str | Path, pairs: Pairs, scaling: float, dtype: torch.dtype
) -> dict[str, ModuleWeights]:
    """Stack each projection's pairs (a few ops per projection, not per layer), scale B.

    The stacks own their storage, apart from the file's bytes (which a view would keep
    alive whole, unscaled B included: ~40% more memory per resident adapter).
    """
    modules: dict[str, ModuleWeights] = {}
    totals: list[torch.Tensor] = []
    for module, by_layer in pairs.items():
        layers = tuple(sorted(by_layer))
        a_views = [by_layer[layer][0] for layer in layers]
        b_views = [by_layer[layer][1] for layer in layers]
        a = _stack(a_views, transpose=False)  # [n, rank, in] float32
        b_t = _stack(b_views, transpose=True)  # [n, rank, out] float32
        b_t.mul_(scaling)
        totals.append(a.sum() + b_t.sum())
        modules[module] = ModuleWeights(layers, a.to(dtype), b_t.to(dtype))
    # one check for the whole adapter: a NaN or inf anywhere makes the sum non-finite (so would
    # values near float32's limit, which no sane adapter holds); the slow search runs on failure
    if not bool(torch.isfinite(torch.stack(totals).sum())):
        raise AdapterError(f"adapter {folder}: {_first_non_finite(pairs)} holds non-finite values")
    return modules


def _stack(views: list[TensorView], transpose: bool) -> torch.Tensor:
    """One float32 tensor ``[n, *shape]`` (each matrix transposed if asked), a fresh copy."""
    dtypes = {view.dtype for view in views}
    if len(dtypes) == 1:  # the usual case: one NumPy stack of the raw values
        stacked = np.stack([view.array.T if transpose else view.array for view in views])
        return to_torch(stacked, dtypes.pop()).float()
    tensors = [to_torch(view.array.copy(), view.dtype).float() for view in views]
    return torch.stack([t.T if transpose else t for t in tensors])


def _first_non_finite(pairs: Pairs) -> str:
    for module, by_layer in sorted(pairs.items()):
        for layer, (a, b) in sorted(by_layer.items()):
            for view in (a, b):
                if not bool(torch.isfinite(to_torch(view.array.copy(), view.dtype)).all()):
                    return f"layers.{layer}.{module}"
    return "a projection"  # finite values whose sum overflowed float32
