"""The ``adapter_config.json`` a node serves: an allow-list of PEFT LoRA options.

The engine computes exactly ``y = W x + s * B (A x)`` on the projections of the layers an
adapter has weights for, with ``s = lora_alpha / r`` (``lora_alpha / sqrt(r)`` with rsLoRA).
Every key PEFT writes (0.21) is listed in :data:`RULES` with the values whose meaning that
formula covers; any other key, any other value, or a missing required key refuses the adapter,
and the error names each of them.

An allow-list, not a deny-list: PEFT adds options in most releases (aLoRA, which turns the
adapter on only after its invocation tokens, came in 0.17), and an option the engine has not
heard of must fail loudly, not be served as a plain LoRA whose answers differ from PEFT's.

ModelFactory's import of adapters trained elsewhere and the node's engine apply the same rules.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CONFIG_FILE = "adapter_config.json"
MAX_PROBLEMS_NAMED = 10


class UnservableAdapterError(ValueError):
    """An adapter the engine cannot serve as PEFT would; the message names what and why."""


@dataclass(frozen=True)
class Rule:
    implemented: str  # what the engine implements, as the error message says it
    accepts: Callable[[Any], bool]


def _is(*values: Any) -> Callable[[Any], bool]:
    """Exactly one of ``values``, type included (JSON's ``true`` is not ``1``)."""
    return lambda v: any(type(v) is type(x) and v == x for x in values)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return (_int(v) or isinstance(v, float)) and math.isfinite(v)


def _optional_str(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _module_names(v: Any) -> bool:
    return isinstance(v, list) and bool(v) and all(isinstance(m, str) and m for m in v)


def _layers(v: Any) -> bool:
    """PEFT's ``layers_to_transform``: one layer index or a list of them (None: every layer)."""
    if v is None or (_int(v) and v >= 0):
        return True
    return isinstance(v, list) and bool(v) and all(_int(i) and i >= 0 for i in v)


def _default(v: Any, *defaults: Any) -> Rule:
    shown = " or ".join(json.dumps(d) for d in (v, *defaults))
    return Rule(shown, _is(v, *defaults))


RULES: dict[str, Rule] = {
    # what the engine computes with
    "peft_type": Rule('"LORA"', _is("LORA")),
    "r": Rule("a positive integer", lambda v: _int(v) and v > 0),
    "lora_alpha": Rule("a finite number", _number),
    "use_rslora": Rule("true or false", _is(True, False)),
    "target_modules": Rule("a list of module names", _module_names),  # a string is a regex
    "layers_to_transform": Rule("null, a layer index or a list of them", _layers),
    "layers_pattern": _default(None, "layers", ["layers"]),  # the Llama family's layer list
    # what changes nothing once the adapter is trained (metadata, training, initialisation)
    "task_type": _default(None, "CAUSAL_LM"),
    "base_model_name_or_path": Rule("null or a string", _optional_str),
    "revision": Rule("null or a string", _optional_str),
    "peft_version": Rule("null or a string", _optional_str),
    "auto_mapping": Rule("null or an object", lambda v: v is None or isinstance(v, dict)),
    "inference_mode": Rule("true or false", _is(True, False)),
    "lora_dropout": Rule("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1),
    # other initialisations change the base weights (pissa, olora, corda, loftq) or need
    # their own config (eva, lora_ga, mica)
    "init_lora_weights": _default(True, False, "gaussian", "orthogonal"),
    "megatron_core": Rule("null or a string", _optional_str),  # read only with megatron_config
    "qalora_group_size": Rule("an integer", _int),  # read only with use_qalora
    "ensure_weight_tying": Rule("true or false", _is(True, False)),  # acts on refused options
    # options the engine does not implement: only their "off" value
    "fan_in_fan_out": _default(False),
    "bias": _default("none"),
    "lora_bias": _default(False),
    "use_dora": _default(False),
    "use_qalora": _default(False),
    "alora_invocation_tokens": _default(None),
    "modules_to_save": _default(None, []),
    "exclude_modules": _default(None, []),
    "rank_pattern": _default({}, None),
    "alpha_pattern": _default({}, None),
    "layer_replication": _default(None),
    "trainable_token_indices": _default(None),
    "target_parameters": _default(None, []),
    "loftq_config": _default({}, None),
    "megatron_config": _default(None),
    "eva_config": _default(None),
    "corda_config": _default(None),
    "lora_ga_config": _default(None),
    "velora_config": _default(None),
    "monteclora_config": _default(None),
    "use_bdlora": _default(None),
    "arrow_config": _default(None),
    "kasa_config": _default(None),
}
# keys whose absence PEFT would fill with a guess (its defaults are r=8, lora_alpha=8 and the
# model type's target modules), so the config must state them
REQUIRED = ("peft_type", "r", "lora_alpha", "target_modules")


@dataclass(frozen=True)
class AdapterConfig:
    """What of an accepted ``adapter_config.json`` the engine computes with."""

    rank: int
    alpha: float
    use_rslora: bool
    target_modules: frozenset[str]
    layers: frozenset[int] | None  # layers_to_transform; None: every layer
    base_model: str | None  # base_model_name_or_path as written (a hub id or a local path)

    @property
    def scaling(self) -> float:
        """``s`` in ``y = W x + s * B (A x)``."""
        root = math.sqrt(self.rank) if self.use_rslora else self.rank
        return float(self.alpha / root)


def config_problems(config: dict[str, Any]) -> list[str]:
    """Every key of ``config`` that keeps the engine from computing what PEFT computes: the
    required keys it lacks, then ``key=value (implemented: ...)``; empty when it is served
    exactly."""
    missing = [key for key in REQUIRED if key not in config]
    problems = [f"lacks {', '.join(missing)} (PEFT always writes them)"] if missing else []
    for key, value in config.items():
        rule = RULES.get(key)
        if rule is None:
            problems.append(f"{key} (unknown key)")
        elif not rule.accepts(value):
            problems.append(f"{key}={json.dumps(value)} (implemented: {rule.implemented})")
    return problems


def parse_adapter_config(data: bytes, source: str | Path) -> AdapterConfig:
    """The accepted config in ``data`` (the bytes of an ``adapter_config.json``); anything
    else raises :class:`UnservableAdapterError` naming ``source`` and every offending key."""
    try:
        config = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UnservableAdapterError(
            f"adapter {source}: {CONFIG_FILE} is not valid JSON: {exc}"
        ) from exc
    if not isinstance(config, dict):
        raise UnservableAdapterError(f"adapter {source}: {CONFIG_FILE} must hold a JSON object")
    problems = config_problems(config)
    if problems:
        shown = "; ".join(problems[:MAX_PROBLEMS_NAMED])
        more = len(problems) - MAX_PROBLEMS_NAMED
        raise UnservableAdapterError(
            f"adapter {source}: {CONFIG_FILE} refused, the engine does not implement it as PEFT "
            f"does: {shown}{f' (and {more} more)' if more > 0 else ''}"
        )
    layers = config.get("layers_to_transform")
    return AdapterConfig(
        rank=config["r"],
        alpha=config["lora_alpha"],
        use_rslora=config.get("use_rslora", False),
        target_modules=frozenset(config["target_modules"]),
        layers=None if layers is None else frozenset([layers] if _int(layers) else layers),
        base_model=config.get("base_model_name_or_path"),
    )
