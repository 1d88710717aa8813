"""The read API and the upload endpoint over an index filled from a real anvil."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from backend.api.config import Settings
from backend.api.main import content_store
from backend.protocol.merkle import leaf_hash, process_proof
from backend.storage.ipfs import IPFSStore
from backend.storage.unixfs import compute_cid

OPEN = 10**18


def test_status_reports_the_indexed_head(client, stack):
    body = client.get("/status").json()
    assert body["block"] == stack.history.protocol.w3.eth.block_number
    assert body["chain_id"] == 31337
    assert body["contracts"] == stack.history.protocol.deployment.contracts
    assert body["events"] > 50


def test_lists_are_paged_with_totals(client):
    first = client.get("/contributions", params={"limit": 2}).json()
    assert [c["id"] for c in first["items"]] == [1, 2]
    assert (first["total"], first["limit"], first["offset"]) == (6, 2, 0)
    last = client.get("/contributions", params={"limit": 2, "offset": 5}).json()
    assert [c["id"] for c in last["items"]] == [6]


def test_bad_paging_and_unknown_ids_are_json_errors(client):
    for params in ({"limit": 0}, {"limit": 10_000}, {"offset": -1}):
        answer = client.get("/datanets", params=params)
        assert answer.status_code == 422
        assert answer.json()["reason"] == "invalid request"
        assert answer.json()["errors"][0]["loc"][0] == "query"
    missing = client.get("/datanets/999")
    assert missing.status_code == 404
    assert missing.json() == {"reason": "datanet 999 not found"}
    assert client.get("/nodes/0x1234").status_code == 422
    assert client.get("/contributions/99999999999999999999999").status_code == 422


def test_datanet_detail_and_contributions_by_status_and_contributor(client, stack):
    roles = stack.history.roles
    datanet = client.get("/datanets/1").json()
    assert datanet["metadata_cid"] == stack.history.metadata_cid
    assert (datanet["contribution_count"], datanet["approved_count"], datanet["pending_count"]) == (
        6, 5, 0,
    )  # fmt: skip
    assert datanet["curators"] == [roles.governance]
    rejected = client.get("/datanets/1/contributions", params={"status": "rejected"}).json()
    assert [c["id"] for c in rejected["items"]] == [5]
    assert rejected["items"][0]["curator"] == roles.curator
    bobs = client.get("/contributions", params={"contributor": roles.bob.lower()}).json()
    assert [c["id"] for c in bobs["items"]] == [4, 5]
    assert client.get("/contributions/3").json()["curator"] == roles.governance


def test_version_proofs_verify_against_the_chain(client, stack):
    registry = stack.history.protocol["DatanetRegistry"].functions
    versions = client.get("/datanets/1/versions").json()
    assert [(v["version"], v["contribution_count"]) for v in versions["items"]] == [(1, 4), (2, 5)]
    members = client.get("/datanets/1/versions/1/contributions").json()
    assert [c["id"] for c in members["items"]] == [1, 2, 3, 4]
    for version, contribution_id in ((1, 3), (2, 6)):
        proof = client.get(f"/datanets/1/versions/{version}/proofs/{contribution_id}").json()
        leaf = proof["leaf"]
        values = (leaf["contribution_id"], leaf["contributor"], leaf["cid"])
        assert (
            "0x" + leaf_hash(("uint256", "address", "string"), values).hex() == proof["leaf_hash"]
        )
        siblings = [bytes.fromhex(p[2:]) for p in proof["proof"]]
        root = process_proof(bytes.fromhex(proof["leaf_hash"][2:]), siblings)
        assert "0x" + root.hex() == proof["merkle_root"]
        assert registry.isInVersion(1, version, contribution_id, leaf["cid"], siblings).call()
    assert client.get("/datanets/1/versions/1/proofs/6").status_code == 404  # after v1
    assert client.get("/datanets/1/versions/1/proofs/5").status_code == 404  # rejected
    assert client.get("/datanets/1/versions/3").json() == {
        "reason": "version 3 of datanet 1 not found"
    }


def test_models_nodes_payments_and_usage_proofs(client, stack):
    roles = stack.history.roles
    model = client.get("/models/1").json()
    assert model["split"] == {"developer": 6_000, "contributors": 2_000, "node": 1_500,
                              "protocol": 500}  # fmt: skip
    assert model["scheduled_split"] is None
    assert model["pricing"]["per_request"] == str(OPEN // 10)
    assert client.get("/models", params={"datanet_id": 1}).json()["total"] == 1
    assert client.get("/models", params={"datanet_id": 2}).json()["total"] == 0
    versions = client.get("/models/1/versions").json()["items"]
    assert [(v["version"], v["datanet_version"]) for v in versions] == [(1, 1), (2, 2)]
    node = client.get(f"/nodes/{roles.node.lower()}").json()
    assert node["active"] is True
    assert node["slashed"] == str(500 * OPEN)
    account = client.get(f"/payments/accounts/{roles.payer}").json()
    assert (account["balance"], account["channel_count"]) == (str(85 * OPEN), 1)
    (channel,) = account["channels"]
    assert (channel["node"], channel["balance"], channel["withdrawn"]) == (
        roles.node, str(85 * OPEN), str(5 * OPEN),
    )  # fmt: skip
    assert channel["withdrawal_status"] == "none"
    assert [(k["signer"], k["expiry"], k["allowance"], k["revoked"], k["live"])
            for k in channel["session_keys"]] == [
        (roles.challenger, 2**40, str(50 * OPEN), False, True)
    ]  # fmt: skip
    by_node = client.get("/payments/channels", params={"node": roles.node.lower()}).json()
    assert [(c["payer"], c["spent"]) for c in by_node["items"]] == [(roles.payer, str(10 * OPEN))]
    redemptions = client.get("/payments/redemptions", params={"node": roles.node}).json()
    assert redemptions["total"] == 1 and redemptions["items"][0]["paid"] == str(10 * OPEN)
    proof = client.get("/usage-proofs/1").json()
    assert proof["receipt_count"] == 3
    assert [r["payer"] for r in proof["redemptions"]] == [roles.payer]
    assert proof["skipped"] == []
    assert proof["splits"][0]["contributors_share"] == str(2 * OPEN)


def test_claimable_rewards_come_with_proofs_that_claim_on_chain(client, stack):
    roles, p = stack.history.roles, stack.history.protocol
    epochs = client.get("/attribution/epochs").json()["items"]
    assert [(e["status"], e["claimable"]) for e in epochs] == [("posted", True),
                                                               ("rejected", False)]  # fmt: skip
    owed = client.get(f"/attribution/accounts/{roles.bob}/claimable").json()
    assert owed["total"] == 1 and owed["unavailable_epochs"] == []
    entry = owed["items"][0]
    assert (entry["epoch_id"], entry["index"], entry["amount"], entry["claimable"]) == (
        1, 1, str(OPEN // 2), True,
    )  # fmt: skip
    proof = [bytes.fromhex(x[2:]) for x in entry["proof"]]
    claim = p["AttributionRewards"].functions.claim(1, 1, roles.bob, OPEN // 2, proof)
    p.transact(roles.bob, claim)
    stack.reindex()
    assert client.get(f"/attribution/accounts/{roles.bob}/claimable").json()["total"] == 0
    claims = client.get("/attribution/epochs/1/claims").json()["items"]
    assert [(c["index"], c["account"]) for c in claims] == [(0, roles.alice), (1, roles.bob)]
    alice = client.get(f"/attribution/accounts/{roles.alice}/claimable",
                       params={"include_claimed": True}).json()  # fmt: skip
    assert [(e["index"], e["claimed"], e["claimable"]) for e in alice["items"]] == [
        (0, True, False)
    ]
    assert client.get("/attribution/epochs/1/leaves/1").json()["claimed"] is True
    pool = client.get("/attribution/pools/1").json()
    assert pool["claimed"] == str(2 * OPEN)
    unreadable = client.get("/attribution/epochs/2/leaves/0")
    assert unreadable.status_code == 409
    assert "bafkreport2" in unreadable.json()["reason"]


def test_events_are_served_decoded(client):
    page = client.get("/events", params={"contract": "DatanetRegistry", "event": "Contributed",
                                         "limit": 3}).json()  # fmt: skip
    assert page["total"] == 6
    assert page["items"][0]["args"]["contributionId"] == 1


def test_upload_validates_stores_and_pins(client, stack):
    data = b'{"prompt": "When is high tide?", "response": "Twice a day, roughly."}\n'
    answer = client.post("/datanets/1/uploads", files={"file": ("tides.jsonl", data)})
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body == {"datanet_id": 1, "cid": compute_cid(data), "size": len(data), "records": 1,
                    "pinned": True, "contribution_id": None}  # fmt: skip
    assert stack.store.get(body["cid"]) == data and stack.store.is_pinned(body["cid"])
    known_cid, known = next(iter(stack.history.files.items()))
    again = client.post("/datanets/1/uploads", files={"file": ("known.jsonl", known)}).json()
    assert again["cid"] == known_cid and again["contribution_id"] == 1


def test_upload_format_errors_list_line_and_reason(client):
    data = b'{"prompt": "ok", "response": "fine"}\nnot json\n{"prompt": "no answer"}\n'
    answer = client.post("/datanets/1/uploads", files={"file": ("bad.jsonl", data)})
    assert answer.status_code == 422
    body = answer.json()
    assert body["reason"].startswith("not valid instruction data")
    assert [e["line"] for e in body["errors"]] == [2, 3]
    assert "missing 'response'" in body["errors"][1]["reason"]


def test_upload_refuses_too_large_unknown_datanet_and_non_multipart(client):
    big = b'{"prompt": "p", "response": "' + b"x" * 5_000 + b'"}\n'  # the Datanet allows 4,096
    too_big = client.post("/datanets/1/uploads", files={"file": ("big.jsonl", big)})
    assert too_big.status_code == 413
    assert "4096" in too_big.json()["reason"]
    small = b'{"prompt": "p", "response": "r"}\n'
    assert client.post("/datanets/9/uploads", files={"file": ("a", small)}).status_code == 404
    raw = client.post("/datanets/1/uploads", content=small, headers={"content-type": "text/plain"})
    assert raw.status_code == 400
    assert "multipart" in raw.json()["reason"]
    no_file = client.post("/datanets/1/uploads", files={"other": ("a", small)})
    assert no_file.status_code == 400


def test_openapi_is_served(app):
    with TestClient(app) as root:
        spec = root.get("/openapi.json").json()
    assert (
        "/api/v1/datanets/{datanet_id}/versions/{version}/proofs/{contribution_id}"
        in (spec["paths"])
    )
    assert root.get("/docs").status_code == 200


@pytest.mark.parametrize(
    ("setting", "value", "why"),
    [
        ("ipfs_read_timeout", 0, "ipfs_read_timeout must be positive"),
        ("max_upload_bytes", 0, "max_upload_bytes must be positive"),
        ("max_jobs", 0, "max_jobs must be at least 1"),
    ],
)
def test_settings_refuse_values_that_cannot_work(setting: str, value: int, why: str) -> None:
    with pytest.raises(ValidationError, match=why):
        Settings(**{setting: value})


def test_the_ipfs_store_gets_the_configured_read_timeout() -> None:
    store = content_store(Settings(ipfs_api="http://127.0.0.1:5001", ipfs_read_timeout=4))
    assert isinstance(store, IPFSStore)
    assert (store.api, store.read_timeout) == ("/ip4/127.0.0.1/tcp/5001/http", 4)
    store.close()


def test_earnings_per_model_and_epoch_come_from_the_reports(client, stack):
    roles = stack.history.roles
    alice = client.get(f"/attribution/accounts/{roles.alice}/earnings").json()
    # Epoch 1 paid Alice 1.5 OPEN (claimed in the history); epoch 2 was rejected: nothing.
    assert alice["items"] == [
        {"epoch_id": 1, "model_id": 1, "status": "posted", "amount": str(3 * OPEN // 2),
         "claimed": True, "contributions": []}
    ]  # fmt: skip
    assert (alice["total_earned"], alice["total_claimed"]) == (str(3 * OPEN // 2),) * 2
    nobody = client.get(f"/attribution/accounts/{roles.node}/earnings").json()
    assert nobody["items"] == [] and nobody["total_earned"] == "0"
