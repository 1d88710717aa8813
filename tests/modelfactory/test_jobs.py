"""ModelFactory jobs through ``ape run modelfactory`` on a real chain and content store, with a
tiny chat model: train on a published Datanet version, publish the model with its provenance,
refuse unpublished versions and tampered data, publish a new version, re-run safely."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoTokenizer

from backend.attribution.attributor import AttributionError, Attributor
from backend.attribution.audit import check_record
from backend.attribution.index import FILES, MANIFEST_FILE, AttributionIndex
from backend.attribution.verify import verify_model_version
from backend.datanets.formats import DataFormat, DatanetMetadata
from backend.datanets.manifest import Manifest
from backend.datanets.registry import read_history
from backend.modelfactory.provenance import TrainingManifest
from backend.models.adapter_archive import pack_adapter, unpack_adapter
from backend.storage.unixfs import compute_cid
from tests.datanets.conftest import invoke, load_script
from tests.engine.tiny_tokenizer import build_tiny_checkpoint

CURATOR, ALICE, BOB, DEVELOPER = "TEST::0", "TEST::1", "TEST::2", "TEST::3"
Run = Callable[..., str]
TRAIN_ARGS = ("--steps", "4", "--batch-size", "4", "--max-length", "64", "--quiet")


def pairs(tag: str, n: int) -> bytes:
    rows = ({"prompt": f"{tag}: what is {i} plus {i}?", "response": f"It is {2 * i}."}
            for i in range(n))  # fmt: skip
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def number(label: str, output: str) -> int:
    match = re.search(rf"{label} (\d+)", output)
    assert match, f"no '{label} <n>' in:\n{output}"
    return int(match.group(1))


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_chat"))


@pytest.fixture(scope="module")
def mf(protocol: Any) -> Run:
    cli = load_script("modelfactory").cli

    def run(*args: Any, account: str | None = None, code: int = 0) -> str:
        return invoke(cli, *args, account=account, code=code)

    return run


@pytest.fixture(scope="module")
def datanet(datanet_cli: Run, protocol: Any, tmp_path_factory: pytest.TempPathFactory) -> int:
    """An instruction Datanet with version 1 published: two contributors' files approved."""
    folder = tmp_path_factory.mktemp("data")
    meta = folder / "meta.json"
    meta.write_bytes(
        DatanetMetadata("sums", "small sums", "CC0-1.0", DataFormat.INSTRUCTION).to_json_bytes()
    )
    datanet_id = number("datanet", datanet_cli("create", meta, account=CURATOR))
    for who, tag in ((ALICE, "alice"), (BOB, "bob")):
        (folder / f"{tag}.jsonl").write_bytes(pairs(tag, 12))
        datanet_cli("contribute", datanet_id, folder / f"{tag}.jsonl", account=who)
    ids = ",".join(str(c.id) for c in read_history(protocol.as_web3(), datanet_id).pending())
    datanet_cli("review", datanet_id, "--approve", ids, account=CURATOR)
    datanet_cli("publish", datanet_id, account=CURATOR)
    return datanet_id


def test_train_then_publish_registers_the_model_with_its_provenance(
    mf: Run, datanet: int, base: Path, protocol: Any, store: Any, accounts: list[Any],
    tmp_path: Path,
) -> None:  # fmt: skip
    work = tmp_path / "job"
    out = mf("train", datanet, 1, "--base", base, "--workdir", work, *TRAIN_ARGS)
    assert "held-out loss" in out and "0 malformed rows skipped" in out
    assert {p.name for p in work.iterdir()} >= {
        "adapter", "training_manifest.json", "eval_report.json", "loss_curve.json",
        "loss_curve.png", "job.json",
    }  # fmt: skip
    datanet_manifest = Manifest.from_json(
        store.get(protocol.datanets.version(datanet, 1).manifestCID)
    )
    training = TrainingManifest.from_json((work / "training_manifest.json").read_bytes())
    training.verify_against(datanet_manifest)  # every example -> an approved contribution
    assert {r.contribution_id for r in training.examples} == {
        e.id for e in datanet_manifest.contributions
    }
    assert len(training.examples) == 24

    attributor = accounts[4].address
    out = mf("publish", work, "--name", "sums", "--price-per-request", "0.01",
             "--attributor", attributor, account=DEVELOPER)  # fmt: skip
    model_id = number("registered model", out)
    model = protocol.models.model(model_id)
    version = protocol.models.modelVersion(model_id, 1)
    assert model.developer == accounts[3].address and model.attributor == attributor
    assert version.adapterCID == compute_cid(pack_adapter(work / "adapter"))
    assert (int(version.datanetId), int(version.datanetVersion)) == (datanet, 1)
    assert model.baseModelCID == compute_cid((base / "model.safetensors").read_bytes())
    served = unpack_adapter(store.get(version.adapterCID))
    assert (
        served["adapter_model.safetensors"]
        == (work / "adapter" / "adapter_model.safetensors").read_bytes()
    )
    assert store.get(version.trainingManifestCID) == (work / "training_manifest.json").read_bytes()
    metadata = json.loads(store.get(model.metadataCID))
    assert metadata["artifacts"]["adapter"] == version.adapterCID
    report = json.loads(store.get(metadata["artifacts"]["eval_report"]))
    assert report["adapter_loss"] < report["base_loss"]

    # the job's attribution index: every trained example, published with the adapter
    index, index_cid = AttributionIndex.read_folder(work / "attribution")
    assert training.attribution == index_cid and index.adapter == version.adapterCID
    trained = [r.index for r in training.split("train") if r.index not in training.unused]
    assert [d.example for d in index.corpus.documents] == trained
    names = json.loads((work / "attribution" / MANIFEST_FILE).read_bytes())["files"]
    assert set(names) == set(FILES) and all(store.has(c) for c in [index_cid, *names.values()])
    assert metadata["artifacts"]["attribution_index"] == index_cid
    node = Attributor.for_model_version(protocol.as_web3(), store, model_id, 1, base,
                                        tmp_path / "node")  # fmt: skip
    tok = AutoTokenizer.from_pretrained(base)
    prompt = tok.apply_chat_template([{"role": "user", "content": "alice: what is 3 plus 3?"}],
                                     add_generation_prompt=True)  # fmt: skip
    answer = tok("It is 6.", add_special_tokens=False)["input_ids"]
    record = node.attribute(prompt, answer)
    assert {c.contributor for c in record.contributions} <= {accounts[1].address,
                                                            accounts[2].address}  # fmt: skip
    assert record.span_mass > 0 and (record.model_id, record.version) == (model_id, 1)
    assert check_record(node.index, index_cid, record, prompt, answer) == []

    again = mf("publish", work, "--name", "sums", "--attributor", attributor, account=DEVELOPER)
    assert f"already on-chain as model {model_id} version 1" in again and "tx 0x" not in again
    assert int(protocol.models.modelCount()) == model_id

    # the next version of the same model: only its developer may publish it
    work2 = tmp_path / "job2"
    mf("train", datanet, 1, "--base", base, "--workdir", work2, "--model", model_id,
       "--seed", 1, *TRAIN_ARGS)  # fmt: skip
    refused = mf("publish", work2, "--name", "sums", account=ALICE, code=1)
    assert f"would revert: NotModelDeveloper(modelId={model_id}, caller=" in refused
    out = mf("publish", work2, "--name", "sums", account=DEVELOPER)
    assert f"published model {model_id} version 2" in out
    assert protocol.models.model(model_id).versionCount == 2

    # a version whose training manifest names another adapter's index is not attributed
    v1, v2 = (protocol.models.modelVersion(model_id, v) for v in (1, 2))
    protocol.models.publishVersion(model_id, v2.adapterCID, v1.trainingManifestCID, datanet, 1,
                                   sender=accounts[3])  # fmt: skip
    with pytest.raises(AttributionError, match=f"is of adapter {v1.adapterCID}"):
        Attributor.for_model_version(protocol.as_web3(), store, model_id, 3, base, tmp_path / "n")


def test_train_refuses_unknown_and_unpublished_versions(
    mf: Run, datanet: int, base: Path, tmp_path: Path
) -> None:
    out = mf("train", datanet, 2, "--base", base, "--workdir", tmp_path / "a", code=1)
    assert f"Datanet {datanet} version 2 is not published (published versions: 1..1)" in out
    out = mf("train", 999, 1, "--base", base, "--workdir", tmp_path / "b", code=1)
    assert "Datanet 999 does not exist" in out
    assert not (tmp_path / "a").exists() or not any((tmp_path / "a").iterdir())


def test_train_aborts_on_a_contribution_that_fails_its_cid(
    mf: Run, datanet: int, base: Path, protocol: Any, store_dir: Path, tmp_path: Path
) -> None:
    entry = Manifest.from_json(
        (store_dir / "blocks" / str(protocol.datanets.version(datanet, 1).manifestCID)).read_bytes()
    ).contributions[0]
    block = store_dir / "blocks" / entry.cid
    original = block.read_bytes()
    block.write_bytes(original.replace(b"plus", b"minus"))
    try:
        out = mf("train", datanet, 1, "--base", base, "--workdir", tmp_path / "w", code=1)
    finally:
        block.write_bytes(original)
    assert f"contribution {entry.id}" in out and entry.cid in out
    assert not (tmp_path / "w" / "adapter").exists()


def test_bad_settings_are_refused_before_any_work(
    mf: Run, datanet: int, base: Path, tmp_path: Path
) -> None:
    out = mf("train", datanet, 1, "--base", base, "--workdir", tmp_path / "w", "--rank", 0,
             code=1)  # fmt: skip
    assert "lora.rank must be a positive integer, not 0" in out
    out = mf("train", datanet, 1, "--base", base, "--workdir", tmp_path / "w",
             "--targets", "q_proj,lm_head", code=1)  # fmt: skip
    assert "unknown ['lm_head']" in out
    out = mf("train", datanet, 1, "--method", "dpo", "--base", base, "--workdir", tmp_path / "w",
             code=1)  # fmt: skip
    assert "method 'dpo' needs model_id" in out
    out = mf("train", datanet, 1, "--base", tmp_path, "--workdir", tmp_path / "w", code=1)
    assert "is not a model folder (no config.json)" in out
    out = mf("train", datanet, 1, "--base", base, "--workdir", tmp_path / "w", "--device", "tpu",
             code=2)  # fmt: skip
    assert "'tpu' is not one of 'cpu', 'cuda'" in out
    if not torch.cuda.is_available():
        out = mf("train", datanet, 1, "--base", base, "--workdir", tmp_path / "w",
                 "--device", "cuda", code=1)  # fmt: skip
        assert "train.device is 'cuda' but torch sees no CUDA device" in out
    assert not (tmp_path / "w").exists() or not any((tmp_path / "w").iterdir())


def preferences(n: int) -> bytes:
    rows = ({"prompt": f"what is {i} plus {i}?", "chosen": f"It is {2 * i}.",
             "rejected": f"It is {2 * i + 3}."} for i in range(n))  # fmt: skip
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


def test_dpo_on_a_preference_datanet_publishes_the_models_next_version(
    mf: Run, datanet: int, datanet_cli: Run, base: Path, protocol: Any, store: Any,
    accounts: list[Any], tmp_path: Path,
) -> None:  # fmt: skip
    sft = tmp_path / "sft"
    mf("train", datanet, 1, "--base", base, "--workdir", sft, *TRAIN_ARGS)
    out = mf("publish", sft, "--name", "to-improve", "--seed-note", "x",
             "--attributor", accounts[4].address, account=DEVELOPER, code=2)  # fmt: skip
    assert "No such option: --seed-note" in out  # a typo is refused, nothing is sent
    model_id = number("registered model", mf("publish", sft, "--name", "to-improve",
                      "--attributor", accounts[4].address, account=DEVELOPER))  # fmt: skip

    meta = tmp_path / "prefs.json"
    meta.write_bytes(
        DatanetMetadata("prefs", "feedback", "CC0-1.0", DataFormat.PREFERENCE).to_json_bytes()
    )
    prefs = number("datanet", datanet_cli("create", meta, account=CURATOR))
    (tmp_path / "p.jsonl").write_bytes(preferences(16))
    datanet_cli("contribute", prefs, tmp_path / "p.jsonl", account=BOB)
    ids = ",".join(str(c.id) for c in read_history(protocol.as_web3(), prefs).pending())
    datanet_cli("review", prefs, "--approve", ids, account=CURATOR)
    datanet_cli("publish", prefs, account=CURATOR)

    out = mf("train", datanet, 1, "--method", "dpo", "--model", model_id, "--base", base,
             "--workdir", tmp_path / "wrong", code=1)  # fmt: skip
    assert "needs a Datanet of preference pairs" in out and "holds instruction data" in out

    dpo = tmp_path / "dpo"
    out = mf("train", prefs, 1, "--method", "dpo", "--model", model_id, "--base", base,
             "--workdir", dpo, "--eval-fraction", "0.25", *TRAIN_ARGS)  # fmt: skip
    assert "held-out preference accuracy" in out
    report = json.loads((dpo / "eval_report.json").read_text())
    held = report["held_out_preferences"]
    assert set(held) == {"before", "after", "after_vs_current"}
    assert held["after"]["pairs"] == held["before"]["pairs"] > 0
    assert report["improves"]["adapter"] == protocol.models.modelVersion(model_id, 1).adapterCID
    out = mf("publish", dpo, "--name", "to-improve", account=DEVELOPER)
    assert f"published model {model_id} version 2" in out
    v2 = protocol.models.modelVersion(model_id, 2)
    assert (int(v2.datanetId), int(v2.datanetVersion)) == (prefs, 1)
    training = TrainingManifest.from_json(store.get(v2.trainingManifestCID))
    assert {r.contribution_id for r in training.examples} == {int(i) for i in ids.split(",")}
    # the DPO version's attribution index holds its lineage: the SFT parent's examples too
    index = Attributor.for_model_version(protocol.as_web3(), store, model_id, 2, base,
                                         tmp_path / "node").index  # fmt: skip
    parent = protocol.models.modelVersion(model_id, 1).trainingManifestCID
    assert [(m.training_manifest, m.datanet_id, m.method) for m in index.lineage] == [
        (parent, datanet, "sft"), (None, prefs, "dpo"),
    ]  # fmt: skip
    parent_trained = TrainingManifest.from_json(store.get(parent))
    assert sum(d.member == 0 for d in index.corpus.documents) == len(
        [r for r in parent_trained.split("train") if r.index not in parent_trained.unused]
    )
    assert sum(d.member == 1 for d in index.corpus.documents) == len(training.split("train"))
    datanets = {c.datanet_id for c in index.corpus.contributions}
    assert datanets == {datanet, prefs}
    # an auditor rebuilds both versions' indexes from the chain and the Datanets' data
    for version in (1, 2):
        assert verify_model_version(protocol.as_web3(), store, model_id, version, base,
                                    tmp_path / "audit") == []  # fmt: skip
