"""Load and validate PEFT LoRA adapters against a base model, with the scaling folded into B.

A PEFT adapter folder holds ``adapter_config.json`` and ``adapter_model.safetensors`` whose
keys look like ``base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight``.
For a target projection ``W: [out, in]`` PEFT computes ``y = W x + s * B (A x)`` with
``A: [r, in]``, ``B: [out, r]`` and ``s = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with
rsLoRA). We store ``A`` and ``s * B`` so that serving is two plain matmuls, as vLLM does.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from backend.models.adapter_archive import CONFIG_FILE, WEIGHTS_FILE
from inference_node.engine.safetensors_view import (
    SafetensorsFormatError,
    TensorView,
    UnsupportedDtypeError,
    read_views,
    to_torch,
)

ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
LLAMA_PROJECTIONS = ATTENTION_PROJECTIONS + MLP_PROJECTIONS

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)

_KEY_RE = re.compile(
    r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$"
)


class AdapterError(ValueError):
    """An adapter that cannot be served on this base model; the message says why."""


@dataclass(frozen=True)
class BaseModelSpec:
    """What an adapter must match: layer count and the ``(in, out)`` of each projection."""

    num_layers: int
    projections: dict[str, tuple[int, int]]  # name -> (in_features, out_features)

    @classmethod
    def from_model(cls, model: nn.Module) -> BaseModelSpec:
        layers = model.model.layers
        first = layers[0]
        shapes: dict[str, tuple[int, int]] = {}
        for name in LLAMA_PROJECTIONS:
            parent = first.self_attn if name in ATTENTION_PROJECTIONS else first.mlp
            linear = getattr(parent, name)
            base = getattr(linear, "base", linear)
            shapes[name] = (base.in_features, base.out_features)
        return cls(num_layers=len(layers), projections=shapes)


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


def _parse_config(folder: str | Path, data: bytes) -> dict:
    try:
        config = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise AdapterError(f"adapter {folder}: {CONFIG_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterError(f"adapter {folder}: {CONFIG_FILE} must hold a JSON object")
    return config


def _check_config(folder: str | Path, config: dict, max_rank: int) -> tuple[int, float]:
    peft_type = config.get("peft_type", "LORA")
    if peft_type != "LORA":
        raise AdapterError(f"adapter {folder}: peft_type {peft_type!r}, expected 'LORA'")
    unsupported = {
        "use_dora": bool(config.get("use_dora")),
        "fan_in_fan_out": bool(config.get("fan_in_fan_out")),
        "bias": config.get("bias", "none") != "none",
        "modules_to_save": bool(config.get("modules_to_save")),
        "rank_pattern": bool(config.get("rank_pattern")),
        "alpha_pattern": bool(config.get("alpha_pattern")),
    }
    bad = sorted(name for name, is_set in unsupported.items() if is_set)
    if bad:
        raise AdapterError(f"adapter {folder}: unsupported LoRA options set: {', '.join(bad)}")
    rank = config.get("r")
    if not isinstance(rank, int) or rank <= 0:
        raise AdapterError(f"adapter {folder}: rank r={rank!r}, expected a positive integer")
    if rank > max_rank:
        raise AdapterError(f"adapter {folder}: rank {rank} exceeds the configured max {max_rank}")
    alpha = config.get("lora_alpha", rank)
    if not isinstance(alpha, int | float):
        raise AdapterError(f"adapter {folder}: lora_alpha={alpha!r}, expected a number")
    scaling = alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank
    return rank, float(scaling)


def _check_target_list(folder: str | Path, config: dict, supported: set[str]) -> None:
    targets = config.get("target_modules")
    if isinstance(targets, list):
        unknown = sorted(set(targets) - supported)
        if unknown:
            raise AdapterError(
                f"adapter {folder}: unknown target modules {unknown}, "
                f"supported: {sorted(supported)}"
            )


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
    """Validate a PEFT adapter given as its two files' bytes; errors name ``source``."""
    where_from = source if source is not None else name
    config = _parse_config(where_from, config_bytes)
    rank, scaling = _check_config(where_from, config, max_rank)
    supported = set(spec.projections)
    _check_target_list(where_from, config, supported)
    tensors = _parse_tensors(where_from, weights_bytes)
    pairs = _pair_tensors(where_from, tensors, spec, rank)
    modules = _stack_modules(where_from, pairs, scaling, dtype)
    return LoraAdapter(
        name=name,
        rank=rank,
        target_modules=frozenset(modules),
        scaling=scaling,
        dtype=dtype,
        modules=modules,
    )


Pairs = dict[str, dict[int, tuple[TensorView, TensorView]]]  # module -> layer -> (A, B)


def _pair_tensors(
    folder: str | Path, tensors: dict[str, TensorView], spec: BaseModelSpec, rank: int
) -> Pairs:
    """``module -> layer -> (A, B)``, every name and shape checked (no tensor ops)."""
    supported = set(spec.projections)
    found: dict[tuple[int, str], dict[str, TensorView]] = {}
    for key, tensor in tensors.items():
        match = _KEY_RE.match(key)
        if match is None:
            raise AdapterError(f"adapter {folder}: unexpected tensor {key!r}")
        layer, _, module, which = int(match[1]), match[2], match[3], match[4]
        if module not in supported:
            raise AdapterError(
                f"adapter {folder}: unknown target module {module!r} in {key!r}, "
                f"supported: {sorted(supported)}"
            )
        if layer >= spec.num_layers:
            raise AdapterError(
                f"adapter {folder}: layer {layer} in {key!r}, base model has {spec.num_layers}"
            )
        found.setdefault((layer, module), {})[which] = tensor
    if not found:
        raise AdapterError(f"adapter {folder}: {WEIGHTS_FILE} holds no LoRA weights")

    pairs: Pairs = {}
    for (layer, module), pair in sorted(found.items()):
        where = f"layers.{layer}.{module}"
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"adapter {folder}: {where} has lora_{''.join(pair)} only")
        in_features, out_features = spec.projections[module]
        a, b = pair["A"], pair["B"]
        if a.shape != (rank, in_features):
            raise AdapterError(
                f"adapter {folder}: {where}.lora_A shape {a.shape}, expected {(rank, in_features)}"
            )
        if b.shape != (out_features, rank):
            raise AdapterError(
                f"adapter {folder}: {where}.lora_B shape {b.shape}, expected {(out_features, rank)}"
            )
        pairs.setdefault(module, {})[layer] = (a, b)
    return pairs


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
