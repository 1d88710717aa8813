"""Signed feedback on paid answers: who may give it, what is checked, dedupe, durability, export.

Receipts are the node's real ones (``backend.protocol.receipts``), their logs written by
the node's own serialiser into a real content store, so the backend's parsing is checked against
the format it must read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from eth_abi import encode
from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_keys import keys
from eth_utils import keccak

from backend.datanets.formats import DataFormat, DatanetMetadata, validate_contribution
from backend.modelfactory.feedback_store import FeedbackStore
from backend.modelfactory.feedback_types import (
    AnswerMismatchError,
    BadSignatureError,
    CommentMismatchError,
    DuplicateFeedbackError,
    FeedbackError,
    NotPayerError,
    Preference,
    PreferenceMismatchError,
    PromptMismatchError,
    Rating,
    ScoreOutOfRangeError,
    SignedPreference,
    SignedRating,
    UnknownReceiptError,
    comment_hash,
    rating_digest,
    recover_rating_signer,
    sign_preference,
    sign_rating,
)
from backend.modelfactory.receipt_index import ReceiptIndex
from backend.protocol.eip712 import SECP256K1_N, Signature, feedback_domain
from backend.protocol.receipts import Receipt, ReceiptLogError, receipts_log
from backend.storage.base import CIDMismatchError
from backend.storage.local import DirectoryStore

REGISTRY = "0x" + "5f" * 20
DOMAIN = feedback_domain(31337, REGISTRY)
NODE = Account.from_key(keccak(text="node")).address
MODEL, OTHER_MODEL = 1, 2
PROMPT = "Convert 3 km to miles."


def wallet(name: str) -> LocalAccount:
    return Account.from_key(keccak(text=name))


ALICE, BOB, MALLORY = wallet("alice"), wallet("bob"), wallet("mallory")


@dataclass(frozen=True)
class Answer:
    receipt: Receipt
    prompt: str
    text: str

    @property
    def request_hash(self) -> bytes:
        return self.receipt.request_hash


def answer(
    n: int, payer: LocalAccount, text: str, model: int = MODEL, prompt: str = PROMPT
) -> Answer:
    receipt = Receipt(
        request_hash=keccak(text=f"request {n}"),
        payer=payer.address,
        node=NODE,
        model_id=model,
        adapter_version=1,
        tokens_in=12,
        tokens_out=len(text),
        price=10**15,
        output_hash=keccak(text=text),
        attribution_digest=bytes(32),
        voucher_cumulative=10**15 * n,
        created_at=1_700_000_000 + n,
    )
    return Answer(receipt, prompt, text)


# alice asked PROMPT three times of model 1, and once of model 2; bob asked once
A1 = answer(1, ALICE, "3 km is about 1.86 miles.")
A2 = answer(2, ALICE, "3 km is 5 miles.")
A3 = answer(3, ALICE, "Miles are longer than km.")
A_OTHER_MODEL = answer(4, ALICE, "3 km = 1.864 mi", model=OTHER_MODEL)
B1 = answer(5, BOB, "About 1.9 miles.")
UNPUBLISHED = answer(6, ALICE, "never in a usage proof")
ANSWERS = (A1, A2, A3, A_OTHER_MODEL, B1)


@pytest.fixture
def content(tmp_path: Path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "content")


@pytest.fixture
def log_cids(content: DirectoryStore) -> list[str]:
    """Two usage proofs' receipts logs, as the node writes them."""
    first = receipts_log([a.receipt for a in ANSWERS[:3]])
    second = receipts_log([a.receipt for a in ANSWERS[3:]])
    return [content.put(first), content.put(second)]


@pytest.fixture
def receipts(content: DirectoryStore, log_cids: list[str]) -> ReceiptIndex:
    return ReceiptIndex.from_logs(content, log_cids)


@pytest.fixture
def store(tmp_path: Path, receipts: ReceiptIndex) -> Iterator[FeedbackStore]:
    with FeedbackStore(tmp_path / "feedback.sqlite", DOMAIN, receipts) as opened:
        yield opened


def rate(who: LocalAccount, a: Answer, score: int, comment: str | None = None) -> SignedRating:
    return sign_rating(who.key, DOMAIN, Rating(a.request_hash, score, comment_hash(comment)))


def prefer(who: LocalAccount, chosen: Answer, rejected: Answer) -> SignedPreference:
    return sign_preference(who.key, DOMAIN, Preference(chosen.request_hash, rejected.request_hash))


def add_pref(
    store: FeedbackStore, signed: SignedPreference, chosen: Answer, rejected: Answer
) -> bool:
    return store.add_preference(signed, chosen.prompt, chosen.text, rejected.text)


def high_s(signature: Signature) -> Signature:
    """The other valid encoding of the same signature (s -> n - s, v flipped)."""
    s = SECP256K1_N - int.from_bytes(signature.s, "big")
    return Signature(v=55 - signature.v, r=signature.r, s=s.to_bytes(32, "big"))


# ---------------------------------------------------------------- typed data


def test_rating_digest_is_the_eip712_hash_a_contract_would_compute() -> None:
    """Spelled out with abi.encode as Solidity would, so wallets and contracts agree."""
    rating = Rating(A1.request_hash, 4, comment_hash("clear"))
    domain_type = (
        "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
    )
    separator = keccak(
        encode(
            ["bytes32", "bytes32", "bytes32", "uint256", "address"],
            [keccak(text=domain_type), keccak(text="OpenLedger Feedback"), keccak(text="1"),
             31337, REGISTRY],
        )
    )  # fmt: skip
    struct = keccak(
        encode(
            ["bytes32", "bytes32", "uint8", "bytes32"],
            [keccak(text="Rating(bytes32 requestHash,uint8 score,bytes32 commentHash)"),
             rating.request_hash, 4, rating.comment_hash],
        )
    )  # fmt: skip
    digest = keccak(b"\x19\x01" + separator + struct)
    assert rating_digest(DOMAIN, rating) == digest
    sig = sign_rating(ALICE.key, DOMAIN, rating).signature
    vrs = (sig.v - 27, int.from_bytes(sig.r, "big"), int.from_bytes(sig.s, "big"))
    public = keys.Signature(vrs=vrs).recover_public_key_from_msg_hash(digest)
    assert public.to_checksum_address() == ALICE.address


# ---------------------------------------------------------------- receipts


def test_receipt_index_reads_the_nodes_logs(receipts: ReceiptIndex) -> None:
    assert len(receipts) == len(ANSWERS)
    found = receipts.get(A2.request_hash)
    assert found is not None
    assert (found.payer, found.model_id, found.output_hash) == (
        ALICE.address,
        MODEL,
        keccak(text=A2.text),
    )
    assert receipts.get(UNPUBLISHED.request_hash) is None


def test_receipt_index_refuses_a_log_that_does_not_match_its_cid(
    content: DirectoryStore, log_cids: list[str]
) -> None:
    tampered = content.root / "blocks" / log_cids[0]
    tampered.write_bytes(tampered.read_bytes().replace(b'"modelId":1', b'"modelId":2', 1))
    with pytest.raises(CIDMismatchError):
        ReceiptIndex.from_logs(content, log_cids)


def test_receipt_index_names_a_malformed_line_and_refuses_contradicting_logs(
    content: DirectoryStore, log_cids: list[str]
) -> None:
    bad = content.put(receipts_log([A1.receipt]) + b'{"requestHash": "0x' + b"11" * 32 + b'"}\n')
    with pytest.raises(ReceiptLogError, match=rf"{bad} line 2: receipt lacks 'payer'"):
        ReceiptIndex.from_logs(content, [bad])
    forged = content.put(receipts_log([replace(A1.receipt, payer=MALLORY.address)]))
    with pytest.raises(ReceiptLogError, match="two different receipts"):
        ReceiptIndex.from_logs(content, [*log_cids, forged])
    again = ReceiptIndex.from_logs(content, [*log_cids, content.put(receipts_log([A1.receipt]))])
    assert len(again) == len(ANSWERS)  # the same receipt in two logs is one receipt


# ---------------------------------------------------------------- ratings


def test_rating_by_the_payer_is_accepted(store: FeedbackStore) -> None:
    signed = rate(ALICE, A1, 5, "spot on")
    assert recover_rating_signer(DOMAIN, signed) == ALICE.address
    assert store.add_rating(signed, A1.prompt, A1.text, comment="spot on") is True
    assert store.counts(MODEL) == {"ratings": 1, "preferences": 0}


@pytest.mark.parametrize("signer", [BOB, MALLORY], ids=["another payer", "a stranger"])
def test_rating_signed_by_anyone_but_the_payer_is_refused(
    store: FeedbackStore, signer: LocalAccount
) -> None:
    with pytest.raises(NotPayerError, match=f"signed by {signer.address}.*paid by {ALICE.address}"):
        store.add_rating(rate(signer, A1, 1), A1.prompt, A1.text)
    assert store.counts(MODEL)["ratings"] == 0


def test_rating_signed_for_another_domain_recovers_another_signer(store: FeedbackStore) -> None:
    elsewhere = feedback_domain(1, REGISTRY)  # same registry address, another chain
    signed = sign_rating(ALICE.key, elsewhere, Rating(A1.request_hash, 4))
    with pytest.raises(NotPayerError):
        store.add_rating(signed, A1.prompt, A1.text)


def test_rating_with_an_answer_that_is_not_the_receipts_is_refused(store: FeedbackStore) -> None:
    with pytest.raises(AnswerMismatchError, match="rated answer text hashes to"):
        store.add_rating(rate(ALICE, A1, 1), A1.prompt, "3 km is about 100 miles.")
    assert store.counts(MODEL)["ratings"] == 0


def test_rating_of_an_unknown_receipt_is_refused(store: FeedbackStore) -> None:
    with pytest.raises(UnknownReceiptError, match=UNPUBLISHED.request_hash.hex()):
        store.add_rating(rate(ALICE, UNPUBLISHED, 3), PROMPT, UNPUBLISHED.text)


@pytest.mark.parametrize("score", [0, 6, 255, True])
def test_score_out_of_range_is_refused(score: int) -> None:
    with pytest.raises(ScoreOutOfRangeError, match="score"):
        Rating(A1.request_hash, score)
    data = {**rate(ALICE, A1, 3).to_json(), "score": score}
    with pytest.raises(ScoreOutOfRangeError):
        SignedRating.from_json(data)


def test_high_s_and_malformed_signatures_are_refused(store: FeedbackStore) -> None:
    signed = rate(ALICE, A1, 4)
    flipped = SignedRating(signed.rating, high_s(signed.signature))
    with pytest.raises(BadSignatureError, match="lower half"):
        store.add_rating(flipped, A1.prompt, A1.text)
    with pytest.raises(BadSignatureError, match="65 bytes"):
        SignedRating.from_json({**signed.to_json(), "signature": "0x1234"})
    assert store.counts(MODEL)["ratings"] == 0


def test_signed_rating_survives_json(store: FeedbackStore) -> None:
    signed = rate(ALICE, A1, 2, "wrong unit")
    again = SignedRating.from_json(json.loads(json.dumps(signed.to_json())))
    assert again == signed
    assert store.add_rating(again, A1.prompt, A1.text) is True


def test_comment_must_match_its_signed_hash(store: FeedbackStore) -> None:
    with pytest.raises(CommentMismatchError):
        store.add_rating(rate(ALICE, A1, 2, "wrong unit"), A1.prompt, A1.text, comment="other")


def test_rating_again_is_a_retry_if_identical_and_refused_if_changed(
    store: FeedbackStore,
) -> None:
    assert store.add_rating(rate(ALICE, A1, 4), A1.prompt, A1.text) is True
    assert store.add_rating(rate(ALICE, A1, 4), A1.prompt, A1.text) is False
    with pytest.raises(DuplicateFeedbackError, match="already rated 4"):
        store.add_rating(rate(ALICE, A1, 1), A1.prompt, A1.text)
    assert store.counts(MODEL)["ratings"] == 1


def test_one_request_keeps_one_prompt(store: FeedbackStore) -> None:
    store.add_rating(rate(ALICE, A1, 4), A1.prompt, A1.text)
    with pytest.raises(PromptMismatchError, match="another prompt"):
        store.add_preference(prefer(ALICE, A1, A2), "another prompt", A1.text, A2.text)
    assert store.counts(MODEL)["preferences"] == 0


# ---------------------------------------------------------------- preferences


def test_preference_by_the_payer_is_accepted_and_by_others_refused(store: FeedbackStore) -> None:
    with pytest.raises(NotPayerError):
        add_pref(store, prefer(MALLORY, A1, A2), A1, A2)
    assert add_pref(store, prefer(ALICE, A1, A2), A1, A2) is True
    assert store.counts(MODEL) == {"ratings": 0, "preferences": 1}


def test_preference_across_payers_or_models_is_refused(store: FeedbackStore) -> None:
    with pytest.raises(PreferenceMismatchError, match="one payer"):
        add_pref(store, prefer(ALICE, A1, B1), A1, B1)
    with pytest.raises(PreferenceMismatchError, match="one model"):
        add_pref(store, prefer(ALICE, A1, A_OTHER_MODEL), A1, A_OTHER_MODEL)
    with pytest.raises(PreferenceMismatchError, match="both name request"):
        Preference(A1.request_hash, A1.request_hash)
    assert store.counts(MODEL)["preferences"] == 0


def test_preference_checks_both_answers(store: FeedbackStore) -> None:
    with pytest.raises(AnswerMismatchError, match="rejected answer"):
        store.add_preference(prefer(ALICE, A1, A2), PROMPT, A1.text, "forged")
    with pytest.raises(UnknownReceiptError, match="rejected request"):
        store.add_preference(prefer(ALICE, A1, UNPUBLISHED), PROMPT, A1.text, UNPUBLISHED.text)


def test_preference_pair_is_stored_once_in_either_order(store: FeedbackStore) -> None:
    assert add_pref(store, prefer(ALICE, A1, A2), A1, A2) is True
    assert add_pref(store, prefer(ALICE, A1, A2), A1, A2) is False
    with pytest.raises(DuplicateFeedbackError, match="cannot be reversed"):
        add_pref(store, prefer(ALICE, A2, A1), A2, A1)
    assert store.counts(MODEL)["preferences"] == 1


def test_feedback_is_durable_across_reopening(tmp_path: Path, receipts: ReceiptIndex) -> None:
    path = tmp_path / "durable.sqlite"
    with FeedbackStore(path, DOMAIN, receipts) as first:
        first.add_rating(rate(ALICE, A3, 1), A3.prompt, A3.text)
        add_pref(first, prefer(ALICE, A1, A2), A1, A2)
        exported = first.export_preferences(MODEL)
    with FeedbackStore(path, DOMAIN, ReceiptIndex()) as reopened:  # no receipts needed to read
        assert reopened.counts(MODEL) == {"ratings": 1, "preferences": 1}
        assert reopened.export_preferences(MODEL) == exported
    with pytest.raises(FeedbackError, match="holds domain"):
        FeedbackStore(path, feedback_domain(1, REGISTRY), receipts)


# ---------------------------------------------------------------- export


def give_feedback(store: FeedbackStore, order: int) -> None:
    """Alice: prefers A1 over A2, rates A1 5, A2 5, A3 1; Bob rates B1 (no pair)."""
    steps = [
        lambda: add_pref(store, prefer(ALICE, A1, A2), A1, A2),
        lambda: store.add_rating(rate(ALICE, A1, 5), A1.prompt, A1.text),
        lambda: store.add_rating(rate(ALICE, A2, 5), A2.prompt, A2.text),
        lambda: store.add_rating(rate(ALICE, A3, 1), A3.prompt, A3.text),
        lambda: store.add_rating(rate(BOB, B1, 2), B1.prompt, B1.text),
    ]
    for step in steps[::order]:
        step()


def test_export_is_valid_preference_data_with_pairs_derived_from_ratings(
    store: FeedbackStore,
) -> None:
    give_feedback(store, 1)
    data = store.export_preferences(MODEL)
    metadata = DatanetMetadata("feedback", "user feedback", "CC-BY-4.0", DataFormat.PREFERENCE)
    assert validate_contribution(metadata, data) == 3
    lines = {tuple(json.loads(line).values()) for line in data.decode().splitlines()}
    assert lines == {
        (PROMPT, A1.text, A2.text),  # the signed preference
        (PROMPT, A1.text, A3.text),  # rated 5 over 1
        (PROMPT, A2.text, A3.text),  # rated 5 over 1; A1 and A2 tie by rating: no pair
    }
    assert {p.source for p in store.preference_pairs(MODEL)} == {"preference", "ratings"}
    assert store.contributors(MODEL) == {ALICE.address: 3}
    with pytest.raises(FeedbackError, match="no preference pairs for model 2"):
        store.export_preferences(OTHER_MODEL)


def test_export_is_deterministic_whatever_the_arrival_order(
    tmp_path: Path, receipts: ReceiptIndex
) -> None:
    exports = []
    for order in (1, -1):
        with FeedbackStore(tmp_path / f"order{order}.sqlite", DOMAIN, receipts) as store:
            give_feedback(store, order)
            exports.append(store.export_preferences(MODEL))
    assert exports[0] == exports[1]


def test_export_does_not_derive_a_pair_already_compared(store: FeedbackStore) -> None:
    add_pref(store, prefer(ALICE, A3, A1), A3, A1)  # against the ratings below
    store.add_rating(rate(ALICE, A1, 5), A1.prompt, A1.text)
    store.add_rating(rate(ALICE, A3, 1), A3.prompt, A3.text)
    pairs = store.preference_pairs(MODEL)
    assert [(p.chosen, p.rejected, p.source) for p in pairs] == [(A3.text, A1.text, "preference")]
