"""Which tensors a PEFT LoRA adapter must hold on a base model, by name and shape.

A PEFT adapter's ``adapter_model.safetensors`` holds, for each target projection ``W: [out, in]``
of each layer, ``base_model.model.model.layers.{i}.{self_attn|mlp}.{name}.lora_A.weight``
``[r, in]`` and ``...lora_B.weight`` ``[out, r]``. PEFT builds LoRA layers exactly where the
config says (``target_modules`` on ``layers_to_transform``) and ignores other weights, so the
weights must cover exactly those projections: an extra or a missing pair would be served by the
engine and not by PEFT. Checked on names and shapes only (no tensor is read), so the node
(zero-copy views) and ModelFactory's import (torch tensors) share it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from backend.models.adapter_config import (
    CONFIG_FILE,
    MAX_PROBLEMS_NAMED,
    AdapterConfig,
    UnservableAdapterError,
)

WEIGHTS_FILE = "adapter_model.safetensors"
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
LLAMA_PROJECTIONS = ATTENTION_PROJECTIONS + MLP_PROJECTIONS
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)  # what the engine serves

_KEY_RE = re.compile(
    r"^base_model\.model\.model\.layers\.(\d+)\.(self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$"
)

Layout = dict[str, dict[int, tuple[str, str]]]  # module -> layer -> (key of A, key of B)


@dataclass(frozen=True)
class BaseModelSpec:
    """What an adapter must match: layer count and the ``(in, out)`` of each projection."""

    num_layers: int
    projections: dict[str, tuple[int, int]]  # name -> (in_features, out_features)

    @classmethod
    def from_model(cls, model: nn.Module) -> BaseModelSpec:
        """Of a Llama-family causal LM (``model.model.layers[i].self_attn|mlp.*_proj``); the
        model may live on the meta device (shapes only)."""
        layers = model.model.layers
        first = layers[0]
        shapes: dict[str, tuple[int, int]] = {}
        for name in LLAMA_PROJECTIONS:
            parent = first.self_attn if name in ATTENTION_PROJECTIONS else first.mlp
            linear = getattr(parent, name)
            base = getattr(linear, "base", linear)
            shapes[name] = (base.in_features, base.out_features)
        return cls(num_layers=len(layers), projections=shapes)


def _where(layer: int, module: str) -> str:
    return f"layers.{layer}.{module}"


def _named(items: list[str]) -> str:
    more = len(items) - MAX_PROBLEMS_NAMED
    return ", ".join(items[:MAX_PROBLEMS_NAMED]) + (f" (and {more} more)" if more > 0 else "")


def check_targets(source: str | Path, config: AdapterConfig, spec: BaseModelSpec) -> None:
    """The config's target modules and layers exist in the base model."""
    supported = set(spec.projections)
    unknown = sorted(config.target_modules - supported)
    if unknown:
        raise UnservableAdapterError(
            f"adapter {source}: unknown target modules {unknown}, supported: {sorted(supported)}"
        )
    beyond = sorted(i for i in config.layers or () if i >= spec.num_layers)
    if beyond:
        raise UnservableAdapterError(
            f"adapter {source}: layers_to_transform names layers {beyond}, "
            f"the base model has {spec.num_layers}"
        )


def match_weights(
    source: str | Path,
    shapes: Mapping[str, tuple[int, ...]],
    config: AdapterConfig,
    spec: BaseModelSpec,
) -> Layout:
    """``module -> layer -> (key of A, key of B)`` for the tensors named in ``shapes`` (name ->
    shape): every name, shape and projection checked against ``config`` and ``spec``; anything
    else raises :class:`UnservableAdapterError` naming ``source`` and the tensor."""
    check_targets(source, config, spec)
    supported = set(spec.projections)
    found: dict[tuple[int, str], dict[str, str]] = {}
    for key in shapes:
        match = _KEY_RE.match(key)
        if match is None:
            raise UnservableAdapterError(f"adapter {source}: unexpected tensor {key!r}")
        layer, module, which = int(match[1]), match[3], match[4]
        if module not in supported:
            raise UnservableAdapterError(
                f"adapter {source}: unknown target module {module!r} in {key!r}, "
                f"supported: {sorted(supported)}"
            )
        if layer >= spec.num_layers:
            raise UnservableAdapterError(
                f"adapter {source}: layer {layer} in {key!r}, base model has {spec.num_layers}"
            )
        found.setdefault((layer, module), {})[which] = key
    if not found:
        raise UnservableAdapterError(f"adapter {source}: {WEIGHTS_FILE} holds no LoRA weights")
    _check_coverage(source, set(found), config, spec)

    layout: Layout = {}
    for (layer, module), pair in sorted(found.items()):
        where = _where(layer, module)
        if set(pair) != {"A", "B"}:
            raise UnservableAdapterError(f"adapter {source}: {where} has lora_{''.join(pair)} only")
        in_features, out_features = spec.projections[module]
        a, b = tuple(shapes[pair["A"]]), tuple(shapes[pair["B"]])
        if a != (config.rank, in_features):
            raise UnservableAdapterError(
                f"adapter {source}: {where}.lora_A shape {a}, expected {(config.rank, in_features)}"
            )
        if b != (out_features, config.rank):
            raise UnservableAdapterError(
                f"adapter {source}: {where}.lora_B shape {b}, "
                f"expected {(out_features, config.rank)}"
            )
        layout.setdefault(module, {})[layer] = (pair["A"], pair["B"])
    return layout


def _check_coverage(
    source: str | Path, found: set[tuple[int, str]], config: AdapterConfig, spec: BaseModelSpec
) -> None:
    """The weights cover exactly the projections PEFT builds from the config."""
    layers = config.layers if config.layers is not None else range(spec.num_layers)
    targeted = {(layer, module) for layer in layers for module in config.target_modules}
    extra = [_where(*lm) for lm in sorted(found - targeted)]
    if extra:
        raise UnservableAdapterError(
            f"adapter {source}: weights for {_named(extra)} not targeted by {CONFIG_FILE} "
            f"(target_modules, layers_to_transform); PEFT would ignore them"
        )
    missing = [_where(*lm) for lm in sorted(targeted - found)]
    if missing:
        raise UnservableAdapterError(
            f"adapter {source}: {CONFIG_FILE} targets {_named(missing)}, which have no weights"
        )
