"""Issue 13, point 15: one adapter is one CID. PEFT writes ``target_modules`` in set order (it
changes with Python's hash seed), so saving the same adapter twice could give two archives; the
archive holds a canonical ``adapter_config.json`` now, and unpacks to the same adapter."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from backend.models.adapter_archive import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    canonical_config,
    pack_adapter,
    unpack_adapter,
)
from backend.storage.unixfs import compute_cid
from inference_node.engine import BaseModelSpec, load_adapter
from tests.engine.conftest import AdapterRecipe, build_adapter, build_base, load_base

TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj")
RECIPE = AdapterRecipe(4, 8, TARGETS, layers=(1, 0))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_base(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="module")
def adapter(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_adapter(base, tmp_path_factory.mktemp("adapter") / "a", RECIPE, seed=1)


def config(folder: Path) -> dict:
    return json.loads((folder / CONFIG_FILE).read_text())


def rewrite(source: Path, target: Path, text: str) -> Path:
    shutil.copytree(source, target)
    (target / CONFIG_FILE).write_text(text)
    return target


def peft_writes_config(folder: Path, hash_seed: int) -> list[str]:
    """``adapter_config.json`` of :data:`RECIPE` written by PEFT itself in a fresh interpreter
    with ``hash_seed``; returns its target_modules in the order written."""
    code = (
        "import sys; from peft import LoraConfig; "
        "LoraConfig(r=4, lora_alpha=8, target_modules=sys.argv[2].split(','), "
        "layers_to_transform=[1, 0], init_lora_weights=False, lora_dropout=0.0, "
        "task_type='CAUSAL_LM').save_pretrained(sys.argv[1])"
    )
    env = {**os.environ, "PYTHONHASHSEED": str(hash_seed)}
    subprocess.run([sys.executable, "-c", code, str(folder), ",".join(TARGETS)], env=env,
                   check=True, capture_output=True)  # fmt: skip
    return config(folder)["target_modules"]


def test_peft_saves_of_the_same_adapter_in_another_set_order_give_one_cid(
    adapter: Path, tmp_path: Path
) -> None:
    orders: dict[tuple[str, ...], Path] = {}
    for seed in range(8):
        folder = shutil.copytree(adapter, tmp_path / f"seed{seed}")
        (folder / CONFIG_FILE).unlink()
        orders.setdefault(tuple(peft_writes_config(folder, seed)), folder)
        if len(orders) == 2:
            break
    assert len(orders) == 2, "PEFT wrote target_modules in one order under 8 hash seeds"
    first, second = orders.values()
    assert (first / CONFIG_FILE).read_bytes() != (second / CONFIG_FILE).read_bytes()
    assert pack_adapter(first) == pack_adapter(second)


def test_order_key_order_and_whitespace_do_not_change_the_cid(
    adapter: Path, tmp_path: Path
) -> None:
    original = config(adapter)
    reordered = {key: original[key] for key in reversed(list(original))}
    reordered["target_modules"] = list(reversed(original["target_modules"]))
    reordered["layers_to_transform"] = [0, 1]
    variants = [
        rewrite(adapter, tmp_path / "reordered", json.dumps(reordered)),
        rewrite(adapter, tmp_path / "compact", json.dumps(original, separators=(",", ":"))),
        rewrite(adapter, tmp_path / "spaced", json.dumps(original, indent=7) + "\n\n"),
    ]
    cid = compute_cid(pack_adapter(adapter))
    assert [compute_cid(pack_adapter(v)) for v in variants] == [cid] * len(variants)


@pytest.mark.parametrize(
    "change",
    [
        {"target_modules": ["q_proj", "k_proj", "v_proj", "o_proj", "up_proj"]},
        {"lora_alpha": 16},
        {"alora_invocation_tokens": [5, 6]},  # a sequence: its order has a meaning
        {"base_model_name_or_path": "another/base"},
    ],
    ids=lambda change: next(iter(change)),
)
def test_adapters_that_differ_keep_different_cids(
    adapter: Path, tmp_path: Path, change: dict
) -> None:
    other = rewrite(adapter, tmp_path / "other", json.dumps({**config(adapter), **change}))
    assert compute_cid(pack_adapter(other)) != compute_cid(pack_adapter(adapter))


def test_other_weights_keep_a_different_cid(base: Path, adapter: Path, tmp_path: Path) -> None:
    other = build_adapter(base, tmp_path / "other", RECIPE, seed=2)
    assert config(other) == config(adapter)
    assert compute_cid(pack_adapter(other)) != compute_cid(pack_adapter(adapter))


def test_canonical_config_keeps_the_order_of_sequences() -> None:
    raw = {"b": [3, 1], "target_modules": ["v", "q"], "alora_invocation_tokens": [9, 2],
           "layer_replication": [[2, 3], [0, 1]], "a": {"z": 1, "y": 2}}  # fmt: skip
    canonical = json.loads(canonical_config(json.dumps(raw).encode()))
    assert canonical == {**raw, "target_modules": ["q", "v"]}
    assert list(canonical) == sorted(raw) and list(canonical["a"]) == ["y", "z"]


def test_the_canonical_archive_unpacks_to_the_same_adapter(
    base: Path, adapter: Path, tmp_path: Path
) -> None:
    files = unpack_adapter(pack_adapter(adapter))
    assert files[WEIGHTS_FILE] == (adapter / WEIGHTS_FILE).read_bytes()
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    for name, content in files.items():
        (unpacked / name).write_bytes(content)
    saved, served = config(adapter), config(unpacked)
    assert {**saved, "target_modules": sorted(saved["target_modules"]),
            "layers_to_transform": sorted(saved["layers_to_transform"])} == served  # fmt: skip
    assert pack_adapter(unpacked) == pack_adapter(adapter)  # canonical is a fixed point
    spec = BaseModelSpec.from_model(load_base(base))
    before, after = load_adapter(adapter, spec, 16), load_adapter(unpacked, spec, 16)
    assert before.scaling == after.scaling and before.weights.keys() == after.weights.keys()
    for key, (a, b) in before.weights.items():
        assert torch.equal(a, after.weights[key][0]) and torch.equal(b, after.weights[key][1])


def test_a_config_that_is_not_json_cannot_be_packed(adapter: Path, tmp_path: Path) -> None:
    from backend.models.adapter_archive import AdapterArchiveError

    broken = rewrite(adapter, tmp_path / "broken", "{not json")
    with pytest.raises(AdapterArchiveError, match=r"adapter_config\.json is not JSON"):
        pack_adapter(broken)
