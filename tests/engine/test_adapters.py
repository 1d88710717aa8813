"""PEFT adapters are validated against the base model and refused with a clear reason."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from inference_node.engine import AdapterError, BaseModelSpec, load_adapter
from tests.engine.conftest import MAX_RANK, RECIPES, build_adapter, build_base, load_base


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
    with pytest.raises(AdapterError, match="unsupported LoRA options set: use_dora"):
        load_adapter(folder, spec, MAX_RANK)


def test_load_adapter_casts_to_engine_dtype(
    adapter_folders: dict[str, Path], spec: BaseModelSpec
) -> None:
    adapter = load_adapter(adapter_folders["attn_qv_r4"], spec, MAX_RANK, dtype=torch.bfloat16)
    a, b = adapter.weights[(0, "q_proj")]
    assert a.dtype == b.dtype == torch.bfloat16
    assert adapter.num_bytes == 2 * 2 * 4 * (64 + 64) + 2 * 2 * 4 * (64 + 32)
