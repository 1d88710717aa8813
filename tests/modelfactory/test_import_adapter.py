"""Issue 13, point 16: ``ape run modelfactory import`` serves an adapter trained elsewhere. A real
PEFT adapter (get_peft_model + save_pretrained on the tiny chat model) is checked against the
base model, its training data matched to a published Datanet version by content, stored as a
canonical archive and registered with a schema-3 training manifest, on anvil with a directory
store; wrong bases, missing files, unsupported configs and data that matches nothing are
refused by name and leave nothing registered."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM

from backend.attribution.lineage import chain_lineage
from backend.datanets.formats import DataFormat, DatanetMetadata
from backend.datanets.manifest import Manifest
from backend.datanets.registry import read_history
from backend.modelfactory.provenance import IMPORT_SCHEMA_VERSION, TrainingManifest
from backend.models.adapter_archive import pack_adapter, unpack_adapter
from backend.storage.unixfs import compute_cid
from inference_node.engine import BaseModelSpec, load_adapter, parse_adapter
from tests.datanets.conftest import invoke, load_script
from tests.engine.conftest import build_base
from tests.engine.tiny_tokenizer import build_tiny_checkpoint
from tests.modelfactory.test_jobs import number, pairs

CURATOR, ALICE, BOB, DEVELOPER = "TEST::0", "TEST::1", "TEST::2", "TEST::3"
Run = Callable[..., str]


def peft_adapter(base: Path, folder: Path, seed: int = 1, **options: Any) -> Path:
    """An adapter made by PEFT itself: LoRA on q/v of ``base``, random weights, saved."""
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                        task_type="CAUSAL_LM", **options)  # fmt: skip
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.normal_(0.0, 0.1)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("models") / "tiny_chat")


@pytest.fixture(scope="module")
def adapter(base: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return peft_adapter(base, tmp_path_factory.mktemp("adapters") / "sums")


@pytest.fixture(scope="module")
def mf(protocol: Any) -> Run:
    cli = load_script("modelfactory").cli

    def run(*args: Any, account: str | None = None, code: int = 0) -> str:
        return invoke(cli, *args, account=account, code=code)

    return run


@pytest.fixture(scope="module")
def datanet(datanet_cli: Run, protocol: Any, tmp_path_factory: pytest.TempPathFactory) -> int:
    """An instruction Datanet with version 1 published: alice's and bob's files approved."""
    folder = tmp_path_factory.mktemp("data")
    meta = folder / "meta.json"
    meta.write_bytes(
        DatanetMetadata("sums", "small sums", "CC0-1.0", DataFormat.INSTRUCTION).to_json_bytes()
    )
    datanet_id = number("datanet", datanet_cli("create", meta, account=CURATOR))
    for who, tag in ((ALICE, "alice"), (BOB, "bob")):
        (folder / f"{tag}.jsonl").write_bytes(pairs(tag, 6))
        datanet_cli("contribute", datanet_id, folder / f"{tag}.jsonl", account=who)
    ids = ",".join(str(c.id) for c in read_history(protocol.as_web3(), datanet_id).pending())
    datanet_cli("review", datanet_id, "--approve", ids, account=CURATOR)
    datanet_cli("publish", datanet_id, account=CURATOR)
    return datanet_id


def training_data(folder: Path) -> Path:
    """The developer's training file: 3 of alice's rows (keys reordered, other spacing), 1 of
    bob's, one of them twice, 2 rows of nobody's, 1 malformed row."""
    rows = [
        '{"response": "It is 0.",   "prompt": "alice: what is 0 plus 0?"}',
        json.dumps({"prompt": "alice: what is 1 plus 1?", "response": "It is 2."}),
        json.dumps({"prompt": "alice: what is 2 plus 2?", "response": "It is 4."}),
        json.dumps({"prompt": "elsewhere: what is 7 plus 7?", "response": "It is 14."}),
        json.dumps({"prompt": "elsewhere: what is 8 plus 8?", "response": "It is 16."}),
        json.dumps({"prompt": "bob: what is 5 plus 5?", "response": "It is 10."}),
        json.dumps({"prompt": "alice: what is 1 plus 1?", "response": "It is 2."}),
        '{"prompt": "no response"}',
    ]
    path = folder / "train.jsonl"
    path.write_text("\n".join(rows) + "\n")
    return path


def listing(attributor: str) -> tuple[str, ...]:
    return ("--name", "imported-sums", "--price-per-request", "0.01", "--attributor", attributor)


def test_import_registers_a_peft_adapter_with_its_matched_training_data(
    mf: Run, datanet: int, base: Path, adapter: Path, protocol: Any, store: Any,
    accounts: list[Any], tmp_path: Path,
) -> None:  # fmt: skip
    data = training_data(tmp_path)
    attributor = accounts[4].address
    out = mf("import", adapter, datanet, 1, "--base", base, "--data", data,
             *listing(attributor), account=DEVELOPER)  # fmt: skip
    assert "adapter: rank 4, alpha 8, targets q_proj,v_proj" in out
    assert ("train.jsonl: 4 of 7 examples matched, 2 unmatched (lines 4, 5), 1 repeated, "
            "1 malformed rows skipped") in out  # fmt: skip
    assert f"4 examples of Datanet {datanet} version 1 matched by content, 2 unmatched" in out
    model_id = number("registered model", out)

    model = protocol.models.model(model_id)
    version = protocol.models.modelVersion(model_id, 1)
    assert model.developer == accounts[3].address and model.attributor == attributor
    assert model.baseModelCID == compute_cid((base / "model.safetensors").read_bytes())
    assert (int(version.datanetId), int(version.datanetVersion)) == (datanet, 1)
    assert version.adapterCID == compute_cid(pack_adapter(adapter))

    # the manifest names exactly the 4 matched rows, as contributions of the version
    manifest = TrainingManifest.from_json(store.get(version.trainingManifestCID))
    assert manifest.schema_version == IMPORT_SCHEMA_VERSION and manifest.job is None
    assert manifest.imported is not None and manifest.imported.evidence == "content_sha256"
    assert manifest.method == "sft" and manifest.attribution is None
    version_manifest = Manifest.from_json(
        store.get(protocol.datanets.version(datanet, 1).manifestCID)
    )
    manifest.verify_against(version_manifest)
    alice, bob = accounts[1].address, accounts[2].address
    assert [(r.contributor, r.line) for r in manifest.examples] == [
        (alice, 1), (alice, 2), (alice, 3), (bob, 6),
    ]  # fmt: skip
    (file,) = manifest.imported.data_files
    assert (file.name, file.examples, file.matched, file.repeated, file.malformed,
            file.unmatched_lines) == ("train.jsonl", 7, 4, 1, 1, (4, 5))  # fmt: skip
    assert chain_lineage(protocol.as_web3(), store, model_id, 1)[0].method == "sft"
    metadata = json.loads(store.get(model.metadataCID))
    assert metadata["origin"] == "imported" and metadata["artifacts"] == {
        "adapter": version.adapterCID, "training_manifest": version.trainingManifestCID,
    }  # fmt: skip

    # the stored archive is what a node serves: PEFT's weights, unchanged
    files = unpack_adapter(store.get(version.adapterCID))
    spec = BaseModelSpec.from_model(AutoModelForCausalLM.from_pretrained(base))
    served = parse_adapter(files["adapter_config.json"], files["adapter_model.safetensors"],
                           spec, max_rank=16)  # fmt: skip
    local = load_adapter(adapter, spec, max_rank=16)
    assert served.scaling == local.scaling == 2.0
    for key, (a, b) in local.weights.items():
        assert torch.equal(served.weights[key][0], a) and torch.equal(served.weights[key][1], b)

    again = mf("import", adapter, datanet, 1, "--base", base, "--data", data,
               *listing(attributor), account=DEVELOPER)  # fmt: skip
    assert f"already on-chain as model {model_id} version 1" in again
    assert int(protocol.models.modelCount()) == model_id

    # the next version of the same model, from another PEFT adapter
    second = peft_adapter(base, tmp_path / "second", seed=2)
    out = mf("import", second, datanet, 1, "--base", base, "--data", data, "--model", model_id,
             "--name", "imported-sums", account=DEVELOPER)  # fmt: skip
    assert f"published model {model_id} version 2" in out
    assert protocol.models.modelVersion(model_id, 2).adapterCID == compute_cid(pack_adapter(second))
    refused = mf("import", second, datanet, 1, "--base", base, "--data", data, "--model",
                 model_id, "--name", "x", account=ALICE, code=1)  # fmt: skip
    assert f"model {model_id} belongs to {accounts[3].address}" in refused


def test_import_without_data_records_the_version_as_declared_unverified(
    mf: Run, datanet: int, base: Path, adapter: Path, protocol: Any, store: Any,
    accounts: list[Any], tmp_path: Path,
) -> None:  # fmt: skip
    attributor = accounts[4].address
    out = mf("import", adapter, datanet, 1, "--base", base, *listing(attributor),
             account=DEVELOPER, code=1)  # fmt: skip
    assert "give the training data (--data FILE" in out and "or --unverified" in out
    out = mf("import", adapter, datanet, 1, "--base", base, "--unverified", *listing(attributor),
             account=DEVELOPER)  # fmt: skip
    assert "recorded as declared by the developer, unverified" in out
    version = protocol.models.modelVersion(number("registered model", out), 1)
    manifest = TrainingManifest.from_json(store.get(version.trainingManifestCID))
    assert manifest.imported is not None and manifest.imported.evidence == "declared_unverified"
    assert manifest.examples == () and manifest.imported.data_files == ()


def refused_without_a_trace(mf: Run, protocol: Any, store: Any, adapter: Path | None,
                            *args: Any) -> str:  # fmt: skip
    """Runs an import that must fail; checks that nothing was registered or stored."""
    models = int(protocol.models.modelCount())
    out = mf("import", *args, account=DEVELOPER, code=1)
    assert "Error: " in out
    assert int(protocol.models.modelCount()) == models
    if adapter is not None:
        assert not store.has(compute_cid(pack_adapter(adapter)))
    return out


def test_import_refuses_bad_adapters_by_name_and_registers_nothing(
    mf: Run, datanet: int, base: Path, adapter: Path, protocol: Any, store: Any,
    accounts: list[Any], tmp_path: Path,
) -> None:  # fmt: skip
    data = training_data(tmp_path)
    common = ("--base", base, "--data", data, *listing(accounts[4].address))

    partial = shutil.copytree(adapter, tmp_path / "partial")
    (partial / "adapter_model.safetensors").unlink()
    out = refused_without_a_trace(mf, protocol, store, None, partial, datanet, 1, *common)
    assert f"adapter {partial}: missing adapter_model.safetensors" in out

    alora = peft_adapter(base, tmp_path / "alora", alora_invocation_tokens=[5, 6])
    out = refused_without_a_trace(mf, protocol, store, alora, alora, datanet, 1, *common)
    assert "alora_invocation_tokens=[5, 6] (implemented: null)" in out

    other_base = build_tiny_checkpoint(tmp_path / "other_chat", seed=1)  # same shapes
    wrong = peft_adapter(other_base, tmp_path / "wrong_base")
    out = refused_without_a_trace(mf, protocol, store, wrong, wrong, datanet, 1, *common)
    assert f"says it was trained on '{other_base}', not on the base model 'tiny_chat'" in out
    assert "--base-alias" in out

    wide = peft_adapter(build_base(tmp_path / "wider", hidden=96), tmp_path / "wide")
    out = refused_without_a_trace(mf, protocol, store, wide, wide, datanet, 1, *common,
                                  "--base-alias", "wider")  # fmt: skip
    assert "lora_A shape (4, 96), expected (4, 64)" in out


def test_import_refuses_bad_claims_by_name_and_registers_nothing(
    mf: Run, datanet: int, base: Path, adapter: Path, protocol: Any, store: Any,
    accounts: list[Any], tmp_path: Path,
) -> None:  # fmt: skip
    listed = listing(accounts[4].address)
    adapter = peft_adapter(base, tmp_path / "fresh", seed=3)  # never imported: never stored
    foreign = tmp_path / "foreign.jsonl"
    foreign.write_text(json.dumps({"prompt": "what is 9 plus 9?", "response": "18"}) + "\n")
    out = refused_without_a_trace(mf, protocol, store, adapter, adapter, datanet, 1, "--base",
                                  base, "--data", foreign, *listed)  # fmt: skip
    assert f"none of the 1 examples in foreign.jsonl is an example of Datanet {datanet}" in out

    data = training_data(tmp_path)
    out = refused_without_a_trace(mf, protocol, store, adapter, adapter, datanet, 2, "--base",
                                  base, "--data", data, *listed)  # fmt: skip
    assert f"Datanet {datanet} version 2 is not published" in out
    out = refused_without_a_trace(mf, protocol, store, adapter, adapter, datanet, 1, "--base",
                                  base, "--data", data, "--method", "dpo", *listed)  # fmt: skip
    assert "method 'dpo' needs a Datanet of preference pairs" in out
    out = refused_without_a_trace(mf, protocol, store, adapter, adapter, datanet, 1, "--base",
                                  base, "--data", tmp_path / "absent.jsonl", *listed)  # fmt: skip
    assert "absent.jsonl" in out
