"""The payments API over payments v2: a wallet's view of a payer (totals and channels with their
session keys), a node operator's view (its channels, the vouchers its redemptions skipped), and
a model's split in effect with its scheduled change, over the scripted history plus the
payments scenario on a real anvil of its own."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient
from web3 import Web3

from backend.api.config import Settings
from backend.api.main import create_app
from backend.api.routes.payments import withdrawal_status
from backend.api.schemas import WithdrawalStatus
from backend.devnet.anvil import Anvil, free_port
from backend.indexer.chain import ChainClient
from backend.indexer.projections import WITHDRAWAL_WINDOW
from backend.indexer.sync import Indexer, IndexerConfig
from backend.storage.local import DirectoryStore
from tests.indexer.payments_history import (
    DAY,
    FIRST_SPLIT,
    HUGE_MODEL_ID,
    SECOND_SPLIT,
    PaymentsHistory,
    add_payments_v2,
)
from tests.protocol_history import OPEN, History, make_history


@dataclass
class Scenario:
    history: History
    payments: PaymentsHistory
    client: TestClient


@pytest.fixture(scope="module")
def scenario(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scenario]:
    root = tmp_path_factory.mktemp("payments-api")
    store = DirectoryStore(root / "content")
    with Anvil(port=free_port()) as anvil:
        history = make_history(Web3(Web3.HTTPProvider(anvil.url)), store)
        payments = add_payments_v2(history)
        indexer = Indexer(root / "index.db", history.protocol.deployment,
                          ChainClient(anvil.url), IndexerConfig(confirmations=0))  # fmt: skip
        indexer.sync_once()
        indexer.close()
        app = create_app(Settings(db_path=root / "index.db", content_dir=store.root), store)
        with TestClient(app, base_url="http://testserver/api/v1") as client:
            yield Scenario(history, payments, client)


def _split(values: tuple[int, ...]) -> dict[str, int]:
    return dict(zip(("developer", "contributors", "node", "protocol"), values, strict=True))


def test_a_wallet_sees_its_totals_and_each_channel_with_its_keys(scenario):
    client, r, pay = scenario.client, scenario.history.roles, scenario.payments
    accounts = client.get("/payments/accounts").json()
    assert accounts["total"] == 1  # the payer without a channel has no account
    account = client.get(f"/payments/accounts/{r.payer.lower()}").json()
    assert accounts["items"][0] == {k: v for k, v in account.items() if k != "channels"}
    assert {k: account[k] for k in ("channel_count", "balance", "deposited", "spent",
                                    "withdrawn", "pending_withdrawal")} == {
        "channel_count": 2, "balance": str(102 * OPEN), "deposited": str(120 * OPEN),
        "spent": str(13 * OPEN), "withdrawn": str(5 * OPEN), "pending_withdrawal": str(3 * OPEN),
    }  # fmt: skip
    with_node, with_other = account["channels"]
    assert (with_node["node"], with_node["balance"], with_node["withdrawal_status"]) == (
        r.node, str(82 * OPEN), "none",
    )  # fmt: skip
    # The request was not used within its window after unlocking: it lapsed.
    assert (with_other["node"], with_other["pending_withdrawal"], with_other["withdraw_delay"],
            with_other["withdrawal_unlock_at"], with_other["withdrawal_lapses_at"],
            with_other["withdrawal_status"]) == (
        pay.other_node, str(3 * OPEN), DAY, pay.withdrawal_unlock_at,
        pay.withdrawal_unlock_at + WITHDRAWAL_WINDOW, "lapsed",
    )  # fmt: skip
    assert with_other["session_keys"] == []
    # Both keys of the channel with the node are revoked; the late one is still live.
    keys = {k["signer"]: k for k in with_node["session_keys"]}
    assert [(k["revoked"], k["valid_until"], k["live"]) for k in keys.values()] == [
        (True, pay.revoked_valid_until, False), (True, pay.late_valid_until, True),
    ]  # fmt: skip
    assert list(keys) == [r.challenger, pay.late_key]
    assert keys[pay.late_key]["allowance"] == str(OPEN)
    assert keys[pay.late_key]["revoked_at"] == pay.late_valid_until - DAY
    one = client.get(f"/payments/channels/{r.payer}/{r.node}").json()
    assert one == with_node


def test_a_node_operator_sees_its_channels_and_the_vouchers_it_was_not_paid(scenario):
    client, r, pay = scenario.client, scenario.history.roles, scenario.payments
    channels = client.get("/payments/channels", params={"node": r.node}).json()
    assert [(c["payer"], c["balance"]) for c in channels["items"]] == [(r.payer, str(82 * OPEN))]
    by_payer = client.get("/payments/channels", params={"payer": r.payer}).json()
    assert [c["node"] for c in by_payer["items"]] == [r.node, pay.other_node]
    missing = client.get(f"/payments/channels/{r.alice}/{r.node}")
    assert missing.status_code == 404
    assert missing.json()["reason"] == f"channel of payer {r.alice} with node {r.node} not found"

    skipped = client.get("/payments/skipped-vouchers", params={"node": r.node}).json()
    first, _, last = pay.proofs
    assert [(s["usage_proof_id"], s["index"], s["model_id"], s["reason"])
            for s in skipped["items"]] == [
        (first, 1, 1, "not_above_redeemed"), (first, 2, 1, "expired"),
        (first, 3, HUGE_MODEL_ID, "invalid_signer"), (last, 0, 1, "session_key_not_live"),
    ]  # fmt: skip
    expired = client.get("/payments/skipped-vouchers", params={"reason": "expired"}).json()
    assert [s["index"] for s in expired["items"]] == [2]
    assert client.get("/payments/skipped-vouchers", params={"model_id": 1}).json()["total"] == 3
    assert client.get("/payments/skipped-vouchers", params={"reason": "late"}).status_code == 422
    proof = client.get(f"/usage-proofs/{first}").json()
    assert [x["paid"] for x in proof["redemptions"]] == [str(2 * OPEN)]
    assert [x["index"] for x in proof["skipped"]] == [1, 2, 3]
    nothing = client.get("/payments/redemptions", params={"payer": r.alice}).json()["items"]
    assert [(x["model_id"], x["paid"], x["shortfall"]) for x in nothing] == [
        (HUGE_MODEL_ID, "0", str(OPEN))
    ]


def test_a_model_shows_its_split_in_effect_and_the_scheduled_change(scenario):
    client, pay = scenario.client, scenario.payments
    model = client.get("/models/1").json()
    assert model["split"] == _split(FIRST_SPLIT)
    assert model["scheduled_split"] == {**_split(SECOND_SPLIT), "effective_at": pay.second_split_at}
    assert client.get("/models").json()["items"] == [model]


def test_withdrawal_status_follows_the_contract_at_the_boundaries():
    row = {"pending_withdrawal": str(OPEN), "withdrawal_unlock_at": 1_000}
    at = {t: withdrawal_status(row, t) for t in (None, 999, 1_000, 1_000 + WITHDRAWAL_WINDOW,
                                                 1_001 + WITHDRAWAL_WINDOW)}  # fmt: skip
    assert list(at.values()) == [
        WithdrawalStatus.LOCKED, WithdrawalStatus.LOCKED, WithdrawalStatus.WITHDRAWABLE,
        WithdrawalStatus.WITHDRAWABLE, WithdrawalStatus.LAPSED,
    ]  # fmt: skip
    assert withdrawal_status({**row, "pending_withdrawal": "0"}, 5_000) == WithdrawalStatus.NONE
