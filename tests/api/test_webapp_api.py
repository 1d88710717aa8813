"""The web app's read routes over a real anvil of their own: a model version's lineage (with
artifacts stored by ModelFactory's own ``store_artifacts``), revenue per model and time bucket,
and contributors' attribution totals.

The scripted history is extended with: model 2, registered with real artifacts (an SFT eval
report, a loss curve and its PNG, written by ModelFactory's code) and given a version 2
whose metadata nothing on-chain names; model 3, whose metadata is not stored; a redemption
paying models 1 and 2 under one usage proof; and, two days later, one paying model 1 alone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from safetensors.numpy import save_file
from web3 import Web3

from backend.api.config import Settings
from backend.api.lineage import headline_metrics
from backend.api.main import create_app
from backend.devnet.anvil import Anvil, free_port
from backend.indexer.chain import ChainClient
from backend.indexer.sync import Indexer, IndexerConfig
from backend.modelfactory.publish import Artifacts, model_metadata, store_artifacts
from backend.modelfactory.training_loop import save_loss_curve
from backend.protocol.eip712 import Domain, Voucher, sign_voucher
from backend.storage.local import DirectoryStore
from backend.storage.unixfs import compute_cid
from tests.protocol_history import OPEN, History, make_history, private_key

DAY = 86_400
SPLIT = (6_000, 2_000, 1_500, 500)
SFT_REPORT = {  # the shape ModelFactory's SFT job writes (backend/modelfactory/jobs.py)
    "method": "sft", "adapter_loss": 0.25, "adapter_perplexity": 1.284, "base_loss": 3.0,
    "base_perplexity": 20.09, "relative_loss_reduction": 0.9167, "examples": 12, "tokens": 141,
    "samples": [{"prompt": "q", "base_answer": "a", "adapter_answer": "b"}],
    "build": {"kept": 12, "skipped": 0, "skipped_rows": [], "total_rows": 12},
    "training": {"steps": 3, "tokens": 300, "seconds": 1.5, "tokens_per_second": 200.0},
    "seconds": 9.5,
}  # fmt: skip
CURVE = [{"step": 1, "epoch": 0.5, "loss": 3.0}, {"step": 2, "epoch": 1.0, "loss": 1.5},
         {"step": 3, "epoch": 1.5, "loss": 0.25}]  # fmt: skip


@dataclass
class WebApp:
    history: History
    store: DirectoryStore
    artifacts: Artifacts  # model 2's
    client: TestClient


def _adapter(folder: Path) -> Path:
    folder.mkdir()
    config = {"peft_type": "LORA", "r": 2, "lora_alpha": 4, "target_modules": ["q_proj"]}
    (folder / "adapter_config.json").write_text(json.dumps(config))
    layer = "base_model.model.layers.0.self_attn.q_proj"
    weights = {f"{layer}.lora_A.weight": np.ones((2, 8), "f4"),
               f"{layer}.lora_B.weight": np.zeros((8, 2), "f4")}  # fmt: skip
    save_file(weights, str(folder / "adapter_model.safetensors"))
    return folder


def _register(h: History, metadata: str, adapter: str, manifest: str) -> int:
    p, r = h.protocol, h.roles
    spec = (metadata, "bafkbase", adapter, manifest, 1, 1, (OPEN // 10, 0), SPLIT, r.node)
    p.transact(r.developer, p["ModelRegistry"].functions.registerModel(spec))
    return int(p["ModelRegistry"].functions.modelCount().call())


def _redeem(h: History, vouchers: list[tuple[int, int]], receipts: int, tag: bytes) -> None:
    """The node redeems the payer's vouchers ``(model id, cumulative OPEN wei)`` under one
    usage proof of ``receipts`` receipts."""
    p, r, w3 = h.protocol, h.roles, h.protocol.w3
    payments = p["InferencePayments"]
    domain = Domain(w3.eth.chain_id, payments.address)
    deadline = w3.eth.get_block("latest")["timestamp"] + 10 * DAY
    signed = [
        sign_voucher(private_key(4), domain, Voucher(r.payer, r.node, model, amount, deadline))
        for model, amount in vouchers
    ]
    proof = (tag * 32, receipts, compute_cid(tag))
    p.transact(r.node, payments.functions.redeem([v.redemption_tuple() for v in signed], proof))


@pytest.fixture(scope="module")
def webapp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebApp]:
    root = tmp_path_factory.mktemp("webapp-api")
    store = DirectoryStore(root / "content")
    with Anvil(port=free_port()) as anvil:
        w3 = Web3(Web3.HTTPProvider(anvil.url))
        h = make_history(w3, store)
        save_loss_curve(CURVE, root / "loss_curve.json", root / "loss_curve.png")
        metadata = model_metadata("tide-sft", "tides", "CC0-1.0", "sft", "smollm2", 1, 1)
        artifacts = store_artifacts(
            store, _adapter(root / "adapter"), b'{"examples":[]}', metadata,
            eval_report=SFT_REPORT, loss_curve_json=root / "loss_curve.json",
            loss_plot_png=root / "loss_curve.png",
        )  # fmt: skip
        model = _register(h, artifacts.metadata, artifacts.adapter, artifacts.training_manifest)
        models = h.protocol["ModelRegistry"].functions
        h.protocol.transact(
            h.roles.developer, models.publishVersion(model, "bafkadapter-m2v2", "bafkm2v2", 1, 2)
        )
        _register(h, compute_cid(b"metadata never stored"), "bafkadapter3", "bafkmanifest3")
        # model 1 had 10 OPEN redeemed in the history: 12 pays 2; model 2's first pays 3
        _redeem(h, [(1, 12 * OPEN), (model, 3 * OPEN)], receipts=7, tag=b"\x31")
        w3.provider.make_request("evm_increaseTime", [2 * DAY])
        w3.provider.make_request("evm_mine", [])
        _redeem(h, [(1, 15 * OPEN)], receipts=4, tag=b"\x32")
        indexer = Indexer(root / "index.db", h.protocol.deployment, ChainClient(anvil.url),
                          IndexerConfig(confirmations=0))  # fmt: skip
        indexer.sync_once()
        indexer.close()
        settings = Settings(db_path=root / "index.db", content_dir=store.root)
        with TestClient(create_app(settings, store), base_url="http://testserver/api/v1") as c:
            yield WebApp(h, store, artifacts, c)


# --- lineage ------------------------------------------------------------------------------


def test_lineage_of_a_modelfactory_version_has_its_evaluation_and_loss_curve(webapp):
    client, artifacts = webapp.client, webapp.artifacts
    body = client.get("/models/2/versions/1/lineage").json()
    assert body["model"] == client.get("/models/2").json()
    assert body["version"] == client.get("/models/2/versions/1").json()
    assert body["version"]["adapter_cid"] == artifacts.adapter
    assert body["version"]["training_manifest_cid"] == artifacts.training_manifest
    assert body["datanet_version"] == client.get("/datanets/1/versions/1").json()
    assert body["metadata_cid"] == artifacts.metadata
    assert body["evaluation"] == {
        "report_cid": artifacts.eval_report, "method": "sft",
        "metrics": {"adapter_loss": 0.25, "adapter_perplexity": 1.284, "base_loss": 3.0,
                    "base_perplexity": 20.09, "relative_loss_reduction": 0.9167,
                    "examples": 12.0, "tokens": 141.0},
    }  # fmt: skip
    assert body["loss_curve"] == {
        "cid": artifacts.loss_curve, "plot_cid": artifacts.loss_plot,
        "points": [{"step": 1, "loss": 3.0}, {"step": 2, "loss": 1.5}, {"step": 3, "loss": 0.25}],
    }  # fmt: skip
    assert body["attribution_index_cid"] is None and body["notes"] == []
    # every CID it names is served by the content route, bytes that hash to it
    for cid in (artifacts.eval_report, artifacts.loss_plot, artifacts.adapter):
        served = client.get(f"/content/{cid}")
        assert served.status_code == 200 and compute_cid(served.content) == cid
    assert client.get(f"/content/{artifacts.loss_plot}").content.startswith(b"\x89PNG")


def test_lineage_of_a_later_version_says_its_metadata_is_not_named(webapp):
    body = webapp.client.get("/models/2/versions/2/lineage").json()
    assert body["version"]["adapter_cid"] == "bafkadapter-m2v2"
    assert body["datanet_version"]["version"] == 2
    assert (body["evaluation"], body["loss_curve"], body["attribution_index_cid"]) == (None,) * 3
    assert body["notes"] == [
        f"the model's metadata describes adapter {webapp.artifacts.adapter}, not this "
        "version's bafkadapter-m2v2; nothing on-chain names this version's metadata"
    ]


def test_lineage_with_metadata_missing_or_without_artifacts_has_null_pieces(webapp):
    bare = webapp.client.get("/models/1/versions/1/lineage").json()  # {"name": "tide-lora"}
    assert bare["notes"] == ["the model's metadata names no artifacts"]
    assert bare["model"]["split"] == dict(zip(("developer", "contributors", "node", "protocol"),
                                              SPLIT, strict=True))  # fmt: skip
    missing = webapp.client.get("/models/3/versions/1/lineage").json()
    cid = compute_cid(b"metadata never stored")
    assert missing["notes"] == [f"the model's metadata {cid} is not in the content store"]
    assert (missing["evaluation"], missing["loss_curve"]) == (None, None)


def test_lineage_of_an_unknown_model_or_version_is_not_found(webapp):
    client = webapp.client
    assert client.get("/models/9/versions/1/lineage").json() == {"reason": "model 9 not found"}
    answer = client.get("/models/2/versions/3/lineage")
    assert answer.status_code == 404
    assert answer.json() == {"reason": "version 3 of model 2 not found"}
    assert client.get("/models/2/versions/-1/lineage").status_code == 422


def test_headline_metrics_of_a_dpo_report_are_its_preference_numbers():
    report = {  # the shape ModelFactory's DPO job writes
        "method": "dpo", "seconds": 18.9, "improves": {"model_id": 1, "version": 1},
        "training": {"beta": 0.1, "losses": [0.69, 0.5]},
        "held_out_preferences": {
            "before": {"accuracy": 0.0, "mean_margin": -2.7, "pairs": 1},
            "after": {"accuracy": 1.0, "mean_margin": 0.2, "pairs": 1},
        },
    }  # fmt: skip
    assert headline_metrics(report) == {
        "held_out_preferences.before.accuracy": 0.0,
        "held_out_preferences.before.mean_margin": -2.7,
        "held_out_preferences.before.pairs": 1.0,
        "held_out_preferences.after.accuracy": 1.0,
        "held_out_preferences.after.mean_margin": 0.2,
        "held_out_preferences.after.pairs": 1.0,
    }


# --- revenue ------------------------------------------------------------------------------


def _redemption_times(client: TestClient) -> list[int]:
    rows = client.get("/payments/redemptions", params={"limit": 200}).json()["items"]
    return sorted({r["redeemed_at"] for r in rows})


def test_revenue_per_model_and_day_newest_first(webapp):
    client = webapp.client
    first, shared, last = _redemption_times(client)  # history; models 1 + 2; model 1 alone
    day = lambda t: t - t % DAY  # noqa: E731
    body = client.get("/stats/revenue", params={"bucket": "day"}).json()
    expected = [
        {"model_id": 1, "bucket_start": day(last), "paid": str(3 * OPEN), "redemptions": 1,
         "inferences": 4},
        # one usage proof paid both models: its 7 receipts cannot be split without its log
        {"model_id": 1, "bucket_start": day(shared), "paid": str(2 * OPEN), "redemptions": 1,
         "inferences": None},
        {"model_id": 2, "bucket_start": day(shared), "paid": str(3 * OPEN), "redemptions": 1,
         "inferences": None},
    ]  # fmt: skip
    if day(first) == day(shared):  # the history's redemption, 3 receipts, same day
        expected[1] = {**expected[1], "paid": str(12 * OPEN), "redemptions": 2}
    else:
        expected.append({"model_id": 1, "bucket_start": day(first), "paid": str(10 * OPEN),
                         "redemptions": 1, "inferences": 3})  # fmt: skip
    assert body["items"] == expected and body["total"] == len(expected)


def test_revenue_by_hour_for_one_model_is_paged(webapp):
    client = webapp.client
    first, _shared, last = _redemption_times(client)
    hour = lambda t: t - t % 3_600  # noqa: E731
    params = {"bucket": "hour", "model_id": 1, "limit": 1}
    newest = client.get("/stats/revenue", params=params).json()
    assert newest["items"] == [{"model_id": 1, "bucket_start": hour(last), "paid": str(3 * OPEN),
                                "redemptions": 1, "inferences": 4}]  # fmt: skip
    assert (newest["total"], newest["limit"], newest["offset"]) == (3, 1, 0)
    oldest = client.get("/stats/revenue", params={**params, "offset": 2}).json()["items"]
    assert oldest == [{"model_id": 1, "bucket_start": hour(first), "paid": str(10 * OPEN),
                       "redemptions": 1, "inferences": 3}]  # fmt: skip
    model2 = client.get("/stats/revenue", params={"model_id": 2}).json()
    assert [i["paid"] for i in model2["items"]] == [str(3 * OPEN)]
    assert client.get("/stats/revenue", params={"model_id": 9}).json()["items"] == []


@pytest.mark.parametrize(
    "params", [{"bucket": "week"}, {"model_id": -1}, {"limit": 0}, {"limit": 201}]
)
def test_revenue_refuses_bad_queries(webapp, params):
    answer = webapp.client.get("/stats/revenue", params=params)
    assert answer.status_code == 422 and answer.json()["errors"][0]["loc"][0] == "query"


# --- contributors -------------------------------------------------------------------------


def test_contributors_totals_come_from_the_reports_and_claims(webapp):
    r = webapp.history.roles
    body = webapp.client.get("/stats/contributors").json()
    # epoch 1 paid Alice 1.5 OPEN (claimed) and Bob 0.5 (claimable); epoch 2 was rejected
    assert body == {
        "items": [
            {"account": r.alice, "allocated": str(3 * OPEN // 2), "claimed": str(3 * OPEN // 2),
             "claimable": "0"},
            {"account": r.bob, "allocated": str(OPEN // 2), "claimed": "0",
             "claimable": str(OPEN // 2)},
        ],
        "total": 2, "limit": 50, "offset": 0, "unavailable_epochs": [],
    }  # fmt: skip
    second = webapp.client.get("/stats/contributors", params={"limit": 1, "offset": 1}).json()
    assert [i["account"] for i in second["items"]] == [r.bob] and second["total"] == 2
    assert webapp.client.get("/stats/contributors", params={"model_id": 2}).json()["items"] == []


def test_contributors_refuse_bad_queries(webapp):
    for params in ({"model_id": "x"}, {"offset": -1}):
        assert webapp.client.get("/stats/contributors", params=params).status_code == 422
