"""The engine's safetensors reader agrees with safetensors' own and refuses malformed files."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save, save_file

from inference_node.engine import AdapterError, BaseModelSpec, load_adapter
from inference_node.engine.safetensors_view import (
    SafetensorsFormatError,
    UnsupportedDtypeError,
    read_views,
    to_torch,
)
from tests.engine.conftest import MAX_RANK, load_base


def raw_file(header: dict, payload: bytes) -> bytes:
    encoded = json.dumps(header).encode()
    return struct.pack("<Q", len(encoded)) + encoded + payload


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_views_equal_safetensors_own_reader(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(1)
    tensors = {
        "a": torch.randn(3, 5, generator=generator).to(dtype),
        "b": torch.randn(7, generator=generator).to(dtype),
        "scalar": torch.tensor(2.5).to(dtype),
    }
    views = read_views(save(tensors, metadata={"format": "pt"}))
    assert sorted(views) == sorted(tensors)
    for name, tensor in tensors.items():
        got = to_torch(views[name].array.copy(), views[name].dtype)
        assert got.dtype == dtype and torch.equal(got, tensor)


GOOD = {"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}
MALFORMED = {
    "short": (b"\x01\x00", "shorter than the 8-byte header length"),
    "header past end": (struct.pack("<Q", 1000) + b"{}", "exceeds the file"),
    "not json": (struct.pack("<Q", 3) + b"{x}", "not JSON"),
    "not an object": (raw_file([1], b""), "not a JSON object"),  # type: ignore[arg-type]
    "offsets past end": (
        raw_file({"t": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, b"\0" * 4),
        "outside the 4-byte data",
    ),
    "size mismatch": (
        raw_file({"t": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, b"\0" * 8),
        "8 bytes for shape",
    ),
    "bad shape": (
        raw_file({"t": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, b"\0" * 8),
        "shape",
    ),
    "bad entry": (raw_file({"t": "F32"}, b""), "not an object"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_refused_with_the_reason(case: str) -> None:
    data, reason = MALFORMED[case]
    with pytest.raises(SafetensorsFormatError, match=reason):
        read_views(data)


def test_good_minimal_file_reads() -> None:
    views = read_views(raw_file(GOOD, struct.pack("<2f", 1.0, 2.0)))
    assert views["t"].array.tolist() == [1.0, 2.0]


def test_integer_dtype_is_named_in_torch_spelling() -> None:
    with pytest.raises(UnsupportedDtypeError, match=r"'t' has dtype torch\.int64"):
        read_views(
            raw_file({"t": {"dtype": "I64", "shape": [1], "data_offsets": [0, 8]}}, b"\0" * 8)
        )


@pytest.fixture(scope="module")
def spec(base_folder: Path) -> BaseModelSpec:
    return BaseModelSpec.from_model(load_base(base_folder))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, "mixed"])
def test_adapter_saved_in_half_precision_loads_the_same_values(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path, dtype: object
) -> None:
    source = adapter_folders["attn_qv_r4"]
    raw = load_file(source / "adapter_model.safetensors")
    half = {
        key: value.to(torch.bfloat16 if dtype == "mixed" and "lora_B" in key else torch.float16)
        if dtype == "mixed"
        else value.to(dtype)  # type: ignore[arg-type]
        for key, value in raw.items()
    }
    folder = tmp_path / "half"
    folder.mkdir()
    (folder / "adapter_config.json").write_bytes((source / "adapter_config.json").read_bytes())
    save_file(half, folder / "adapter_model.safetensors")
    adapter = load_adapter(folder, spec, MAX_RANK)
    a, b = adapter.weights[(1, "v_proj")]
    prefix = "base_model.model.model.layers.1.self_attn.v_proj"
    assert a.dtype == b.dtype == torch.float32
    torch.testing.assert_close(a, half[f"{prefix}.lora_A.weight"].float(), atol=0, rtol=0)
    torch.testing.assert_close(
        b, half[f"{prefix}.lora_B.weight"].float() * adapter.scaling, atol=0, rtol=0
    )


def test_adapter_with_nan_names_the_projection(
    adapter_folders: dict[str, Path], spec: BaseModelSpec, tmp_path: Path
) -> None:
    source = adapter_folders["attn_qv_r4"]
    raw = load_file(source / "adapter_model.safetensors")
    raw["base_model.model.model.layers.1.self_attn.q_proj.lora_B.weight"][0, 0] = float("nan")
    folder = tmp_path / "nan"
    folder.mkdir()
    (folder / "adapter_config.json").write_bytes((source / "adapter_config.json").read_bytes())
    save_file(raw, folder / "adapter_model.safetensors")
    with pytest.raises(AdapterError, match=r"layers\.1\.q_proj holds non-finite values"):
        load_adapter(folder, spec, MAX_RANK)
