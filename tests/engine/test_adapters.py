"""PEFT adapters are validated against the base model and refused with a clear reason."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from peft import LoraConfig
from safetensors.torch import load_file, save_file

from inference_node.engine import AdapterError, BaseModelSpec, load_adapter
from tests.engine.conftest import (
    MAX_RANK,
    RECIPES,
    build_adapter,
    build_base,
    load_base,
    peft_reference,
)


@pytest.fixture(scope="module")
def spec(base_folder: Path) -> BaseModelSpec:
    return BaseModelSpec.from_model(load_base(base_folder))


def copy_adapter(source: Path, target: Path) -> Path:
    shutil.copytree(source, target)
    return target


def edit_config(folder: Path, **changes: object) -> None:
    path = folder / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_load_adapter_folds_scaling_into_b(
    adapter_folders: dict[str, Path], spec: BaseModelSpec
) -> None:
    raw = load_file(adapter_folders["all_r8"] / "adapter_model.safetensors")
    adapter = load_adapter(adapter_folders["all_r8"], spec, MAX_RANK)
    assert adapter.rank == 8
    assert adapter.scaling == 16 / 8
    assert adapter.target_modules == set(RECIPES["all_r8"].targets)
    assert len(adapter.weights) == spec.num_layers * 7
    a, b = adapter.weights[(1, "down_proj")]
    prefix = "base_model.model.model.layers.1.mlp.down_proj"
    torch.testing.assert_close(a, raw[f"{prefix}.lora_A.weight"])
    torch.testing.assert_close(b, raw[f"{prefix}.lora_B.weight"] * 2.0)


def test_load_adapter_uses_rslora_scaling(
    adapter_folders: dict[str, Path], spec: BaseModelSpec
) -> None:
    adapter = load_adapter(adapter_folders["mlp_r2_rslora"], spec, MAX_RANK)
    assert adapter.scaling == pytest.approx(4 / math.sqrt(2))
    assert adapter.target_modules == {"gate_proj", "up_proj", "down_proj"}


def test_load_adapter_refuses_rank_above_max(
    adapter_folders: dict[str, Path], spec: BaseModelSpec
) -> None:
    with pytest.raises(AdapterError, match="rank 16 exceeds the configured max 8"):
        load_adapter(adapter_folders["ko_r16"], spec, max_rank=8)


def test_load_adapter_refuses_unknown_target_module(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path
) -> None:
    folder = copy_adapter(adapter_folders["attn_qv_r4"], tmp_path / "lm_head")
    edit_config(folder, target_modules=["q_proj", "lm_head"])
    with pytest.raises(AdapterError, match=r"unknown target modules \['lm_head'\]"):
        load_adapter(folder, spec, MAX_RANK)


def test_load_adapter_refuses_unknown_module_in_weights(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path
) -> None:
    folder = copy_adapter(adapter_folders["attn_qv_r4"], tmp_path / "fc1")
    path = folder / "adapter_model.safetensors"
    renamed = {key.replace("q_proj", "fc1"): value for key, value in load_file(path).items()}
    save_file(renamed, path)
    with pytest.raises(AdapterError, match="unknown target module 'fc1'"):
        load_adapter(folder, spec, MAX_RANK)


def test_load_adapter_refuses_wrong_shapes(spec: BaseModelSpec, tmp_path: Path) -> None:
    other_base = build_base(tmp_path / "wider_base", hidden=96)
    folder = build_adapter(other_base, tmp_path / "wider", RECIPES["attn_qv_r4"], seed=9)
    with pytest.raises(AdapterError, match=r"lora_A shape \(4, 96\), expected \(4, 64\)"):
        load_adapter(folder, spec, MAX_RANK)


def test_load_adapter_refuses_rank_mismatch_with_config(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path
) -> None:
    folder = copy_adapter(adapter_folders["attn_qv_r4"], tmp_path / "lying")
    edit_config(folder, r=2)
    with pytest.raises(AdapterError, match=r"lora_A shape \(4, 64\), expected \(2, 64\)"):
        load_adapter(folder, spec, MAX_RANK)


@pytest.mark.parametrize("missing", ["adapter_config.json", "adapter_model.safetensors"])
def test_load_adapter_refuses_missing_file(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path, missing: str
) -> None:
    folder = copy_adapter(adapter_folders["attn_qv_r4"], tmp_path / "partial")
    (folder / missing).unlink()
    with pytest.raises(AdapterError, match=re.escape(f"missing {missing}")):
        load_adapter(folder, spec, MAX_RANK)


def test_load_adapter_refuses_corrupt_weights(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path
) -> None:
    folder = copy_adapter(adapter_folders["attn_qv_r4"], tmp_path / "corrupt")
    (folder / "adapter_model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(AdapterError, match=r"unreadable adapter_model\.safetensors"):
        load_adapter(folder, spec, MAX_RANK)


def test_load_adapter_refuses_integer_dtype(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path
) -> None:
    folder = copy_adapter(adapter_folders["attn_qv_r4"], tmp_path / "int8")
    path = folder / "adapter_model.safetensors"
    save_file({key: value.to(torch.int8) for key, value in load_file(path).items()}, path)
    with pytest.raises(AdapterError, match=r"dtype torch\.int8"):
        load_adapter(folder, spec, MAX_RANK)


def test_load_adapter_refuses_dora(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path
) -> None:
    folder = copy_adapter(adapter_folders["attn_qv_r4"], tmp_path / "dora")
    edit_config(folder, use_dora=True)
    with pytest.raises(AdapterError, match=r"use_dora=true \(implemented: false\)"):
        load_adapter(folder, spec, MAX_RANK)


# Issue 13, point 13: options the engine does not implement are refused by an allow-list of
# adapter_config.json keys and values; before, only six options were looked at and anything
# else (aLoRA, new PEFT options, ...) was served as a plain LoRA with other answers than PEFT's.


def test_load_adapter_refuses_an_alora_adapter_peft_made(
    base_folder: Path, spec: BaseModelSpec, tmp_path: Path
) -> None:
    """aLoRA (PEFT >= 0.17) activates the adapter only from its invocation tokens on, so PEFT's
    answers differ from the same weights served as a plain LoRA: it must be refused by name."""
    folder = build_adapter(base_folder, tmp_path / "alora", RECIPES["attn_qv_r4"], seed=5,
                           alora_invocation_tokens=[5, 6])  # fmt: skip
    plain = copy_adapter(folder, tmp_path / "plain")
    edit_config(plain, alora_invocation_tokens=None)
    ids = torch.tensor([[10, 11, 12, 5, 6, 13, 14]])
    with torch.no_grad():
        alora_logits = peft_reference(base_folder, folder)(ids).logits
        plain_logits = peft_reference(base_folder, plain)(ids).logits
    assert not torch.allclose(alora_logits, plain_logits, atol=1e-3)  # why serving it is wrong
    with pytest.raises(
        AdapterError, match=r"alora_invocation_tokens=\[5, 6\] \(implemented: null\)"
    ):
        load_adapter(folder, spec, MAX_RANK)
    load_adapter(plain, spec, MAX_RANK)  # the same adapter without aLoRA is served


def test_load_adapter_refuses_unknown_keys_naming_every_offending_key(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path
) -> None:
    folder = copy_adapter(adapter_folders["attn_qv_r4"], tmp_path / "future")
    edit_config(folder, lora_future_option=True, alora_invocation_tokens=[7])
    with pytest.raises(AdapterError) as refused:
        load_adapter(folder, spec, MAX_RANK)
    message = str(refused.value)
    assert "lora_future_option (unknown key)" in message
    assert "alora_invocation_tokens=[7]" in message


def test_load_adapter_accepts_every_key_peft_writes_at_its_default(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path
) -> None:
    """The whole config PEFT writes today, every option at its default, still loads."""
    folder = copy_adapter(adapter_folders["attn_qv_r4"], tmp_path / "defaults")
    written = json.loads((folder / "adapter_config.json").read_text())
    defaults = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]).to_dict()
    defaults["target_modules"] = sorted(defaults["target_modules"])
    assert set(defaults) <= set(written) | {"task_type"}  # the fixture was saved by PEFT too
    (folder / "adapter_config.json").write_text(json.dumps(defaults))
    adapter = load_adapter(folder, spec, MAX_RANK)
    assert (adapter.rank, adapter.scaling, adapter.target_modules) == (4, 2.0, {"q_proj", "v_proj"})
    for informational in ({"task_type": None}, {"inference_mode": False, "lora_dropout": 0.1},
                          {"init_lora_weights": "gaussian", "revision": "main"}):  # fmt: skip
        edit_config(folder, **informational)
        load_adapter(folder, spec, MAX_RANK)


NOT_IMPLEMENTED = [
    ("use_dora", True),
    ("bias", "all"),
    ("lora_bias", True),
    ("fan_in_fan_out", True),
    ("modules_to_save", ["lm_head"]),
    ("rank_pattern", {"q_proj": 2}),
    ("alpha_pattern", {"q_proj": 2}),
    ("exclude_modules", ["layers.0.self_attn.q_proj"]),
    ("layer_replication", [[0, 2]]),
    ("layers_pattern", "blocks"),
    ("trainable_token_indices", [1, 2]),
    ("target_parameters", ["mlp.experts.gate_up_proj"]),
    ("target_modules", ".*q_proj"),
    ("use_qalora", True),
    ("init_lora_weights", "pissa"),
    ("init_lora_weights", "olora"),
    ("loftq_config", {"loftq_bits": 4}),
    ("eva_config", {"rho": 2.0}),
    ("megatron_config", {"tensor_model_parallel_size": 1}),
    ("use_bdlora", {"nblocks": 2}),
    ("task_type", "SEQ_CLS"),
    ("peft_type", "LOHA"),
]


@pytest.mark.parametrize(("key", "value"), NOT_IMPLEMENTED, ids=lambda v: str(v)[:20])
def test_load_adapter_refuses_options_it_does_not_implement(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path, key: str, value: object
) -> None:
    folder = copy_adapter(adapter_folders["attn_qv_r4"], tmp_path / "option")
    edit_config(folder, **{key: value})
    with pytest.raises(AdapterError, match=f"adapter_config.json refused, .*{re.escape(key)}="):
        load_adapter(folder, spec, MAX_RANK)


@pytest.mark.parametrize("key", ["r", "lora_alpha", "target_modules", "peft_type"])
def test_load_adapter_refuses_a_config_without_a_key_peft_always_writes(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path, key: str
) -> None:
    """A missing ``lora_alpha`` was taken as ``r`` (scaling 1); PEFT's default is 8."""
    folder = copy_adapter(adapter_folders["attn_qv_r4"], tmp_path / "lacking")
    config = json.loads((folder / "adapter_config.json").read_text())
    del config[key]
    (folder / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterError, match=f"lacks {key} \\(PEFT always writes them\\)"):
        load_adapter(folder, spec, MAX_RANK)


def test_load_adapter_refuses_weights_its_config_does_not_target(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path
) -> None:
    """PEFT builds LoRA layers only where the config says and ignores other weights: serving
    them would answer differently."""
    folder = copy_adapter(adapter_folders["attn_qv_r4"], tmp_path / "layer1")
    edit_config(folder, layers_to_transform=[1])
    with pytest.raises(AdapterError, match=r"layers\.0\.q_proj.* not targeted by"):
        load_adapter(folder, spec, MAX_RANK)
    edit_config(folder, layers_to_transform=None, target_modules=["q_proj"])
    with pytest.raises(AdapterError, match=r"layers\.0\.v_proj.* not targeted by"):
        load_adapter(folder, spec, MAX_RANK)
    edit_config(folder, target_modules=["q_proj", "v_proj", "k_proj"])
    with pytest.raises(AdapterError, match=r"layers\.0\.k_proj.* no weights"):
        load_adapter(folder, spec, MAX_RANK)


def test_load_adapter_casts_to_engine_dtype(
    adapter_folders: dict[str, Path], spec: BaseModelSpec
) -> None:
    adapter = load_adapter(adapter_folders["attn_qv_r4"], spec, MAX_RANK, dtype=torch.bfloat16)
    a, b = adapter.weights[(0, "q_proj")]
    assert a.dtype == b.dtype == torch.bfloat16
    assert adapter.num_bytes == 2 * 2 * 4 * (64 + 64) + 2 * 2 * 4 * (64 + 32)
