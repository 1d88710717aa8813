"""Feedback over HTTP on a real anvil: the node's real receipts log is recorded on-chain by a
voucher redemption, the indexer indexes the usage proof, and payers' EIP-712 signatures (their
anvil keys) are checked against it. Every refusal answers with the status of its check."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from eth_utils import keccak
from fastapi.testclient import TestClient
from web3 import Web3

from backend.api.config import Settings
from backend.api.main import create_app
from backend.devnet.anvil import Anvil, free_port
from backend.indexer.chain import ChainClient
from backend.indexer.sync import Indexer, IndexerConfig
from backend.modelfactory.feedback_types import (
    Preference,
    Rating,
    comment_hash,
    sign_preference,
    sign_rating,
)
from backend.protocol.eip712 import Domain, Voucher, feedback_domain, sign_voucher
from backend.protocol.receipts import Receipt, receipts_log, receipts_tree
from backend.storage.local import DirectoryStore
from tests.protocol_history import OPEN, History, make_history, private_key

PROMPT = "When is high tide at Brest?"
OTHER_PROMPT = "Why are there two tides a day?"
GOOD, BAD = "Around 6 am and 6:30 pm today.", "Tides do not exist."
PAYER_KEY, ALICE_KEY = private_key(4), private_key(5)


@dataclass
class Chain:
    anvil: Anvil
    history: History
    store: DirectoryStore
    db_path: Path
    cumulative: dict[str, int]  # payer -> the last voucher's cumulative amount
    served: int = 0  # requests answered so far

    def reindex(self) -> None:
        indexer = Indexer(self.db_path, self.history.protocol.deployment,
                          ChainClient(self.anvil.url), IndexerConfig(confirmations=0))  # fmt: skip
        indexer.sync_once()
        indexer.close()

    def redeem(self, answers: list[tuple[str, str]], forged_log: bool = False) -> list[bytes]:
        """The node answered ``(payer, text)`` pairs (model 1) and redeems their vouchers with a
        usage proof of the real receipts log (``forged_log``: the stored log claims other
        answers than the proven one); returns the request hashes."""
        p, r = self.history.protocol, self.history.roles
        payments = p["InferencePayments"]
        domain = Domain(p.w3.eth.chain_id, payments.address)
        deadline = p.w3.eth.get_block("latest")["timestamp"] + 86_400
        keys = {r.payer: PAYER_KEY, r.alice: ALICE_KEY}
        receipts, vouchers = [], {}
        for payer, text in answers:
            self.cumulative[payer] = self.cumulative.get(payer, 0) + OPEN // 10
            self.served += 1
            request_hash, output_hash = keccak(text=f"request {self.served}"), keccak(text=text)
            receipt = Receipt(
                request_hash, payer, r.node, 1, 2, 12, 8, OPEN // 10, output_hash, bytes(32),
                self.cumulative[payer], 1_700_000_000,
            )  # fmt: skip
            receipts.append(receipt)
            vouchers[payer] = sign_voucher(
                keys[payer], domain, Voucher(payer, r.node, 1, self.cumulative[payer], deadline)
            )
        log_cid = self.store.put(receipts_log(receipts))
        proven = receipts
        if forged_log:
            proven = [replace(x, output_hash=keccak(text="what was answered")) for x in receipts]
        proof = (receipts_tree(proven).root, len(receipts), log_cid)
        redeemed = [v.redemption_tuple() for v in vouchers.values()]
        p.transact(r.node, payments.functions.redeem(redeemed, proof))
        self.reindex()
        return [receipt.request_hash for receipt in receipts]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Chain]:
    root = tmp_path_factory.mktemp("feedback")
    store = DirectoryStore(root / "content")
    with Anvil(port=free_port()) as anvil:
        history = make_history(Web3(Web3.HTTPProvider(anvil.url)), store)
        p, r = history.protocol, history.roles
        token, payments = p["OpenToken"].functions, p["InferencePayments"]
        p.transact(r.alice, token.approve(payments.address, 2**256 - 1))
        p.transact(r.alice, payments.functions.deposit(r.node, 10 * OPEN))
        # the history already redeemed 10 OPEN of the payer's channel (with a junk receipts log)
        yield Chain(anvil, history, store, root / "index.db", {r.payer: 10 * OPEN})


@dataclass(frozen=True)
class Answers:
    good: bytes  # the payer's answers to PROMPT
    bad: bytes
    other: bytes  # the payer's answer to OTHER_PROMPT
    alices: bytes  # Alice's answer to PROMPT


@pytest.fixture(scope="module")
def answers(chain: Chain) -> Answers:
    r = chain.history.roles
    hashes = chain.redeem([(r.payer, GOOD), (r.payer, BAD), (r.payer, GOOD), (r.alice, GOOD)])
    return Answers(*hashes)


@pytest.fixture(scope="module")
def app(chain: Chain, answers: Answers):
    settings = Settings(db_path=chain.db_path, content_dir=chain.store.root,
                        data_dir=chain.db_path.parent / "api")  # fmt: skip
    return create_app(settings, chain.store)


@pytest.fixture(scope="module")
def client(app) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://testserver/api/v1") as client:
        yield client


@pytest.fixture(scope="module")
def domain(chain: Chain) -> Domain:
    p = chain.history.protocol
    return feedback_domain(p.w3.eth.chain_id, p["ModelRegistry"].address)


def rating(domain: Domain, key: bytes, request: bytes, score: int, *, answer: str = GOOD,
           prompt: str = PROMPT, comment: str | None = None) -> dict:  # fmt: skip
    signed = sign_rating(key, domain, Rating(request, score, comment_hash(comment)))
    body = {**signed.to_json(), "prompt": prompt, "answer": answer}
    return body if comment is None else {**body, "comment": comment}


def preference(domain: Domain, key: bytes, chosen: bytes, rejected: bytes, *,
               texts: tuple[str, str] = (GOOD, BAD), prompt: str = PROMPT) -> dict:  # fmt: skip
    signed = sign_preference(key, domain, Preference(chosen, rejected))
    return {**signed.to_json(), "prompt": prompt, "chosen_answer": texts[0],
            "rejected_answer": texts[1]}  # fmt: skip


def test_the_payer_rates_an_answer_once_and_a_retry_is_idempotent(client, domain, answers, chain):
    body = rating(domain, PAYER_KEY, answers.good, 5, comment="spot on")
    first = client.post("/feedback/ratings", json=body)
    assert first.status_code == 201, first.text
    assert first.json() == {"kind": "rating", "new": True, "model_id": 1,
                            "signer": chain.history.roles.payer}  # fmt: skip
    again = client.post("/feedback/ratings", json=body)
    assert again.status_code == 200 and again.json()["new"] is False
    changed = client.post("/feedback/ratings", json=rating(domain, PAYER_KEY, answers.good, 1,
                                                           comment="spot on"))  # fmt: skip
    assert changed.status_code == 409
    assert "already rated 5" in changed.json()["reason"]
    counts = client.get("/feedback/models/1").json()
    assert counts == {"model_id": 1, "ratings": 1, "preferences": 0, "pairs": 0}


def test_ratings_are_refused_with_the_status_of_the_failed_check(client, domain, answers):
    def post(body: dict) -> tuple[int, str]:
        answer = client.post("/feedback/ratings", json=body)
        return answer.status_code, answer.json()["reason"]

    code, reason = post(rating(domain, PAYER_KEY, keccak(text="never answered"), 4))
    assert code == 404 and "no published receipt for the rated request 0x" in reason
    code, reason = post(rating(domain, ALICE_KEY, answers.bad, 4, answer=BAD))  # not her answer
    assert code == 403 and "only its payer may give feedback" in reason
    forged = rating(domain, PAYER_KEY, answers.bad, 4, answer=BAD)
    forged["score"] = 5  # the signature was over score 4: it recovers someone else
    assert post(forged)[0] == 403
    other_domain = feedback_domain(1, "0x" + "11" * 20)  # signed for another chain
    assert post(rating(other_domain, PAYER_KEY, answers.bad, 4, answer=BAD))[0] == 403
    high_s = rating(domain, PAYER_KEY, answers.bad, 4, answer=BAD)
    high_s["signature"] = "0x" + "00" * 32 + "ff" * 32 + "1b"
    code, reason = post(high_s)
    assert code == 403 and "signature" in reason
    code, reason = post(rating(domain, PAYER_KEY, answers.bad, 4, answer="Something else."))
    assert code == 422 and "hashes to" in reason and "not that answer" in reason
    lying = rating(domain, PAYER_KEY, answers.bad, 4, answer=BAD, comment="fine")
    lying["comment"] = "awful"
    code, reason = post(lying)
    assert code == 422 and "signed commentHash" in reason
    code, reason = post(rating(domain, PAYER_KEY, answers.bad, 2, answer=BAD, prompt="   "))
    assert code == 422 and "prompt is empty" in reason
    valid = rating(domain, PAYER_KEY, answers.bad, 4, answer=BAD)
    shapes = [{"score": 6}, {"requestHash": "0x1234"}, {"signature": "0xzz"}, {"extra": 1},
              {"score": "4"}]  # fmt: skip
    for bad in shapes:
        answer = client.post("/feedback/ratings", json={**valid, **bad})
        assert answer.status_code == 422, bad
        assert answer.json()["reason"] == "invalid request"
    assert client.get("/feedback/models/1").json()["ratings"] <= 1  # nothing above was stored


def test_preferences_are_stored_deduplicated_and_exported(client, domain, answers, chain):
    payer = chain.history.roles.payer
    body = preference(domain, PAYER_KEY, answers.good, answers.bad)
    stored = client.post("/feedback/preferences", json=body)
    assert stored.status_code == 201, stored.text
    assert stored.json() == {"kind": "preference", "new": True, "model_id": 1, "signer": payer}
    assert client.post("/feedback/preferences", json=body).status_code == 200
    reversed_ = preference(domain, PAYER_KEY, answers.bad, answers.good, texts=(BAD, GOOD))
    answer = client.post("/feedback/preferences", json=reversed_)
    assert answer.status_code == 409 and "cannot be reversed" in answer.json()["reason"]
    unknown = preference(domain, PAYER_KEY, answers.good, keccak(text="nope"))
    answer = client.post("/feedback/preferences", json=unknown)
    assert answer.status_code == 404
    assert "rejected request" in answer.json()["reason"]
    same = {**body, "rejectedRequestHash": body["chosenRequestHash"], "rejected_answer": GOOD}
    answer = client.post("/feedback/preferences", json=same)
    assert answer.status_code == 422 and "compares two answers" in answer.json()["reason"]
    mixed = preference(domain, PAYER_KEY, answers.good, answers.alices, texts=(GOOD, GOOD))
    answer = client.post("/feedback/preferences", json=mixed)
    assert answer.status_code == 422 and "answers of one payer" in answer.json()["reason"]
    by_alice = preference(domain, ALICE_KEY, answers.good, answers.bad)
    assert client.post("/feedback/preferences", json=by_alice).status_code == 403
    elsewhere = preference(domain, PAYER_KEY, answers.other, answers.bad, prompt=OTHER_PROMPT)
    answer = client.post("/feedback/preferences", json=elsewhere)  # answers.bad was to PROMPT
    assert answer.status_code == 409 and "one request has one prompt" in answer.json()["reason"]

    counts = client.get("/feedback/models/1").json()
    assert (counts["preferences"], counts["pairs"]) == (1, 1)
    export = client.get("/feedback/models/1/export")
    assert export.status_code == 200
    assert export.headers["content-type"] == "application/x-ndjson"
    assert [json.loads(line) for line in export.text.splitlines()] == [
        {"prompt": PROMPT, "chosen": GOOD, "rejected": BAD}
    ]
    assert client.get("/feedback/models/1/export", params={"giver": payer}).text == export.text
    nobody = client.get("/feedback/models/1/export", params={"giver": chain.history.roles.bob})
    assert nobody.status_code == 404 and "no preference pairs" in nobody.json()["reason"]
    assert client.get("/feedback/models/7").status_code == 404
    assert client.get("/feedback/models/7/export").status_code == 404


def test_receipts_of_usage_proofs_indexed_later_are_loaded_on_demand(client, domain, chain):
    assert client.post("/feedback/ratings", json=rating(domain, PAYER_KEY, bytes(32), 3)
                       ).status_code == 404  # fmt: skip
    answer = "High tide is at noon."
    (request,) = chain.redeem([(chain.history.roles.payer, answer)])  # after the app started
    body = rating(domain, PAYER_KEY, request, 3, answer=answer)
    stored = client.post("/feedback/ratings", json=body)
    assert stored.status_code == 201, stored.text


def test_feedback_survives_a_restart_of_the_api(chain, answers, app):
    settings = app.state.settings
    with TestClient(create_app(settings, chain.store), base_url="http://t/api/v1") as again:
        counts = again.get("/feedback/models/1").json()
    assert counts["ratings"] >= 1 and counts["preferences"] == 1


def test_feedback_waits_for_the_index_to_know_the_deployment(tmp_path, chain, domain, answers):
    settings = Settings(db_path=tmp_path / "empty.db", content_dir=chain.store.root,
                        data_dir=tmp_path / "api")  # fmt: skip
    with TestClient(create_app(settings, chain.store), base_url="http://t/api/v1") as empty:
        answer = empty.post("/feedback/ratings", json=rating(domain, PAYER_KEY, answers.good, 5))
    assert answer.status_code == 409
    assert "does not know the deployment" in answer.json()["reason"]


def test_a_bad_receipts_log_is_skipped_with_a_warning(chain, tmp_path, domain, answers, caplog):
    settings = Settings(db_path=chain.db_path, content_dir=chain.store.root,
                        data_dir=tmp_path / "api")  # fmt: skip
    fresh = TestClient(create_app(settings, chain.store), base_url="http://t/api/v1")
    with caplog.at_level(logging.WARNING, logger="backend.api.feedback"), fresh:
        body = rating(domain, PAYER_KEY, answers.other, 4)
        assert fresh.post("/feedback/ratings", json=body).status_code == 201
    skipped = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("usage proof 1 skipped: receipts log") and "line 1" in m
               for m in skipped), skipped  # fmt: skip


def test_a_log_other_than_the_one_proven_on_chain_is_skipped(client, domain, chain, caplog):
    answer = "Low tide is at midnight."
    (request,) = chain.redeem([(chain.history.roles.payer, answer)], forged_log=True)
    with caplog.at_level(logging.WARNING, logger="backend.api.feedback"):
        body = rating(domain, PAYER_KEY, request, 2, answer=answer)
        refused = client.post("/feedback/ratings", json=body)
    assert refused.status_code == 404, refused.text
    assert any("is not the log its on-chain root" in r.getMessage() for r in caplog.records)
