"""Check a PEFT adapter folder against a base model, as a node will serve it.

The adapter's two files; its config against the nodes' allow-list
(:mod:`backend.models.adapter_config`); the base model its config names against the one given
(same shapes are not enough); the base model's architecture, and every tensor's name, layer,
shape, dtype and finiteness against it (:mod:`backend.models.adapter_weights`). The node applies
the same rules when it loads the adapter; checking them before registering means a model is
never registered that no node can serve.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as load_safetensors
from transformers import AutoConfig, AutoModelForCausalLM

from backend.modelfactory.spec import BUILTIN_BASE, MAX_RANK
from backend.models.adapter_config import (
    CONFIG_FILE,
    AdapterConfig,
    UnservableAdapterError,
    parse_adapter_config,
)
from backend.models.adapter_weights import (
    FLOAT_DTYPES,
    WEIGHTS_FILE,
    BaseModelSpec,
    match_weights,
)
from backend.models.base_models import SMOLLM2_NAME

log = logging.getLogger(__name__)


class AdapterCheckError(ValueError):
    """An adapter that does not fit the base model or that nodes would not serve; the message
    names the file, key or tensor."""


def base_name(base_model: str) -> str:
    """The name an adapter's ``base_model_name_or_path`` should end with for ``base_model``
    ("smollm2" or a model folder)."""
    return SMOLLM2_NAME if base_model == BUILTIN_BASE else Path(base_model).name


def base_spec(base_dir: Path) -> BaseModelSpec:
    """The projections' shapes of the base model in ``base_dir``, from its config alone (the
    model is built on the meta device: no weights are read)."""
    config = AutoConfig.from_pretrained(base_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    try:
        return BaseModelSpec.from_model(model)
    except AttributeError:
        raise AdapterCheckError(
            f"base model {base_dir} ({config.model_type}) is not a Llama-family decoder "
            "(model.layers[i].self_attn / mlp projections), which is what nodes serve"
        ) from None


def check_adapter(
    adapter_dir: Path, base_dir: Path, base: str, base_alias: str | None = None
) -> AdapterConfig:
    """The adapter in ``adapter_dir`` as the node will serve it on ``base_dir`` (named
    ``base``), or :class:`AdapterCheckError` naming what is wrong."""
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (adapter_dir / name).is_file()]
    if missing:
        raise AdapterCheckError(
            f"adapter {adapter_dir}: missing {', '.join(missing)} (a PEFT adapter folder, as "
            f"save_pretrained writes it, holds {CONFIG_FILE} and {WEIGHTS_FILE})"
        )
    try:
        config = parse_adapter_config((adapter_dir / CONFIG_FILE).read_bytes(), adapter_dir)
        if config.rank > MAX_RANK:
            raise AdapterCheckError(
                f"adapter {adapter_dir}: rank {config.rank} exceeds ModelFactory's {MAX_RANK}"
            )
        _check_base_name(adapter_dir, config, base, base_alias)
        tensors = _read_weights(adapter_dir)
        shapes = {key: tuple(tensor.shape) for key, tensor in tensors.items()}
        match_weights(adapter_dir, shapes, config, base_spec(base_dir))
    except UnservableAdapterError as why:
        raise AdapterCheckError(str(why)) from None
    bad = sorted(key for key, tensor in tensors.items() if not torch.isfinite(tensor).all())
    if bad:
        raise AdapterCheckError(f"adapter {adapter_dir}: {bad[0]} holds non-finite values")
    return config


def _check_base_name(
    adapter_dir: Path, config: AdapterConfig, base: str, base_alias: str | None
) -> None:
    """The base model the adapter's config names is ``base`` (by the last part of a hub id or
    path: ``HuggingFaceTB/SmolLM2-135M-Instruct`` names ``SmolLM2-135M-Instruct``) or the alias
    the developer vouches for. Same shapes are not enough: an adapter trained on another
    checkpoint of one architecture loads fine and answers nonsense."""
    declared = config.base_model
    if declared is None:
        log.warning("adapter %s names no base model; only shapes are checked", adapter_dir)
        return
    accepted = {base.lower()} | ({base_alias.lower()} if base_alias else set())
    if declared.lower() in accepted or declared.rstrip("/").split("/")[-1].lower() in accepted:
        return
    raise AdapterCheckError(
        f"adapter {adapter_dir}: {CONFIG_FILE} says it was trained on {declared!r}, not on the "
        f"base model {base!r}; if those are the same weights under another name, pass "
        f"--base-alias {declared!r}"
    )


def _read_weights(adapter_dir: Path) -> dict[str, torch.Tensor]:
    try:
        tensors = load_safetensors((adapter_dir / WEIGHTS_FILE).read_bytes())
    except (SafetensorError, OSError) as why:
        raise AdapterCheckError(
            f"adapter {adapter_dir}: unreadable {WEIGHTS_FILE}: {why}"
        ) from None
    for key, tensor in tensors.items():
        if tensor.dtype not in FLOAT_DTYPES:
            raise AdapterCheckError(
                f"adapter {adapter_dir}: {key!r} has dtype {tensor.dtype}, expected one of "
                f"{[str(d) for d in FLOAT_DTYPES]}"
            )
    return tensors
