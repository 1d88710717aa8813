"""A browser wallet authorizes a session key with one signature and no transaction: the payment
carries the payer's signed ``SessionKeyAuthorization`` and the node submits it before it checks
the voucher that key signed (docs/payment-protocol.md §5.1). Real anvil, real contracts, the
node's real HTTP app; every refusal leaves the node's transaction count where it was."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from backend.protocol.eip712 import (
    Domain,
    SessionKeyAuthorization,
    SignedSessionKeyAuthorization,
    Voucher,
    sign_session_key,
    sign_session_key_authorization,
    sign_voucher,
)
from backend.protocol.payment_http import (
    PAYER_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    PaymentAnswer,
    encode_payment,
    parse_payment_answer,
)
from backend.protocol.payment_wire import (
    parse_payment_payload,
    payment_payload_json,
    signed_voucher_json,
)
from inference_node.payments import Web3Sender
from tests.node.conftest import OPEN, World, funded_payer
from tests.node.server_fixtures import (
    Checkpoint,
    NodeFactory,
    make_checkpoint,
    node_factory,
)

MESSAGES = [{"role": "user", "content": "How many grams in a kilogram?"}]
ALLOWANCE = 10 * OPEN  # what the page's session key may draw
KEY_LIFE = 30 * 86_400  # seconds the authorization lets the key sign


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Checkpoint:
    return make_checkpoint(tmp_path_factory.mktemp("checkpoint"))


@pytest.fixture
def node(world: World, checkpoint: Checkpoint, tmp_path: Path) -> NodeFactory:
    """Serves the node with extra settings; yields (its URL, the served model id)."""
    return node_factory(world, checkpoint, tmp_path)


@pytest.fixture
def payer(world: World) -> LocalAccount:
    """A wallet with a deposit and no session key (its key known only to the "browser")."""
    return funded_payer(world, 20 * OPEN)


@pytest.fixture
def page_key() -> LocalAccount:
    """The throwaway key the page generated."""
    return Account.create()


def domain(world: World) -> Domain:
    return Domain(world.w3.eth.chain_id, world.payments.address)


def authorization(world: World, payer: LocalAccount, signer: str) -> SessionKeyAuthorization:
    """The payer's authorization of ``signer`` on its channel with the node, unsigned."""
    now = world.now()
    return SessionKeyAuthorization(
        payer=payer.address,
        node=world.roles.node,
        signer=signer,
        expiry=now + KEY_LIFE,
        allowance=ALLOWANCE,
        nonce=int(world.payments.functions.nonces(payer.address).call()),
        deadline=now + 3_600,
    )


def quote(url: str, model_id: int, payer: str) -> PaymentAnswer:
    response = post(url, model_id, {PAYER_HEADER: payer})
    answer = parse_payment_answer(response.status_code, response.headers, response.json())
    assert answer is not None and answer.quote is not None
    return answer


def post(url: str, model_id: int, headers: dict[str, str]) -> httpx.Response:
    body = {"model": str(model_id), "messages": MESSAGES, "max_tokens": 4}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=60)


def paid_headers(
    url: str,
    model_id: int,
    payer: str,
    key: LocalAccount,
    signed: SignedSessionKeyAuthorization | None,
    times: int = 1,
) -> dict[str, str]:
    """A payment for the quoted request (``times`` its price) signed by ``key``."""
    answer = quote(url, model_id, payer)
    q = answer.quote
    assert q is not None and answer.requirement is not None
    amount = q.last_accepted + times * q.price if times > 1 else q.cumulative_amount
    voucher = sign_voucher(key.key, q.domain, q.voucher(amount, q.suggested_deadline))
    payment = encode_payment(answer.requirement, voucher, signed)
    return {PAYER_HEADER: payer, PAYMENT_SIGNATURE_HEADER: payment}


def node_txs(world: World) -> int:
    return world.w3.eth.get_transaction_count(world.roles.node)


def key_on_chain(world: World, payer: str, signer: str) -> tuple[int, int, int]:
    """(validUntil, allowance, spent) of the key on the payer's channel with the node."""
    state = world.payments.functions.sessionKey(payer, world.roles.node, signer).call()
    return tuple(int(x) for x in state)  # type: ignore[return-value]


# ---------------------------------------------------------------- the wire


def test_payload_carries_the_authorization_only_when_given(
    world: World, payer: LocalAccount, page_key: LocalAccount
) -> None:
    signed = sign_session_key_authorization(
        payer.key, domain(world), authorization(world, payer, page_key.address)
    )
    voucher = sign_voucher(page_key.key, domain(world), quote_free_voucher(world, payer))
    assert payment_payload_json(voucher) == signed_voucher_json(voucher)  # byte-identical
    payload = payment_payload_json(voucher, signed)
    a = payload["sessionKeyAuthorization"]["authorization"]
    assert a == {
        "payer": payer.address, "node": world.roles.node, "signer": page_key.address,
        "expiry": str(signed.authorization.expiry), "allowance": str(ALLOWANCE),
        "nonce": "0", "deadline": str(signed.authorization.deadline),
    }  # fmt: skip
    assert parse_payment_payload(payload, "payload") == (voucher, signed)
    payload["sessionKeyAuthorization"]["authorization"]["nonce"] = "0x0"
    with pytest.raises(ValueError, match=r"sessionKeyAuthorization\.authorization\.nonce"):
        parse_payment_payload(payload, "payload")


def quote_free_voucher(world: World, payer: LocalAccount) -> Voucher:
    return Voucher(payer.address, world.roles.node, 1, OPEN, world.now() + 86_400)


# ---------------------------------------------------------------- relayed


def test_first_payment_relays_the_authorization_and_is_served(
    world: World,
    node: NodeFactory,
    payer: LocalAccount,
    page_key: LocalAccount,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """(a) one signature authorizes the key: served, and the chain holds the signed terms;
    (b) the same, now used, authorization rides along again: served, nothing sent."""
    a = authorization(world, payer, page_key.address)
    signed = sign_session_key_authorization(payer.key, domain(world), a)
    assert key_on_chain(world, payer.address, page_key.address) == (0, 0, 0)
    with node() as (url, model_id), caplog.at_level(logging.INFO):
        before = node_txs(world)
        first = post(url, model_id, paid_headers(url, model_id, payer.address, page_key, signed))
        assert first.status_code == 200, first.text
        assert node_txs(world) == before + 1
        assert key_on_chain(world, payer.address, page_key.address) == (a.expiry, ALLOWANCE, 0)
        assert world.payments.functions.nonces(payer.address).call() == a.nonce + 1
        again = post(url, model_id, paid_headers(url, model_id, payer.address, page_key, signed))
        assert again.status_code == 200, again.text
        assert node_txs(world) == before + 1
    relayed = [r for r in caplog.records if r.name.endswith("session_relay")]
    assert len(relayed) == 1 and relayed[0].levelno == logging.INFO
    assert payer.address in relayed[0].getMessage()
    assert page_key.address in relayed[0].getMessage()
    assert "0x" in relayed[0].getMessage().split(" tx ")[1]


def test_concurrent_payments_with_one_authorization_relay_it_once(
    world: World, node: NodeFactory, payer: LocalAccount, page_key: LocalAccount
) -> None:
    signed = sign_session_key_authorization(
        payer.key, domain(world), authorization(world, payer, page_key.address)
    )
    with node() as (url, model_id):
        before = node_txs(world)
        # Prepaid for both requests, so either may come first: the same payment twice.
        headers = paid_headers(url, model_id, payer.address, page_key, signed, times=2)
        answers: list[httpx.Response] = []
        threads = [
            threading.Thread(target=lambda: answers.append(post(url, model_id, headers)))
            for _ in range(2)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        assert node_txs(world) == before + 1


# ---------------------------------------------------------------- refused, nothing sent


Build = Callable[[World, LocalAccount, LocalAccount], SignedSessionKeyAuthorization]


def case_of(by: str = "payer", dom: str = "node's", **change: Callable[[World], object]) -> Build:
    """Builds the payer's authorization of the page key, fields changed by ``change`` (each a
    function of the world), signed by the payer (or ``by="another"``) under the node's domain
    (or ``dom="other"``: another chain id)."""

    def build(w: World, p: LocalAccount, k: LocalAccount) -> SignedSessionKeyAuthorization:
        a = replace(authorization(w, p, k.address), **{f: make(w) for f, make in change.items()})
        key = p.key if by == "payer" else Account.create().key
        d = domain(w) if dom == "node's" else Domain(w.w3.eth.chain_id + 1, w.payments.address)
        return SignedSessionKeyAuthorization(a, sign_session_key(key, d, a))

    return build


REFUSALS: dict[str, tuple[Build, int, str, str]] = {
    # name: (build, status, code, what the message names)
    "signed by another": (case_of(by="another"), 400, "authorization_wrong_signer", "not payer"),
    "another domain": (case_of(dom="other"), 400, "authorization_wrong_signer", "EIP-712 domain"),
    "wrong node": (
        case_of(node=lambda w: w.roles.alice),
        400, "authorization_mismatch", "sessionKeyAuthorization node is",
    ),
    "another signer": (
        case_of(signer=lambda w: Account.create().address),
        400, "authorization_mismatch", "sessionKeyAuthorization signer is",
    ),
    "deadline passed": (
        case_of(deadline=lambda w: w.now() - 1), 402, "authorization_expired", "deadline",
    ),
    "expiry too soon": (
        case_of(expiry=lambda w: w.now() + 600),
        402, "authorization_expiry_too_soon", "needed beyond",
    ),
    "allowance too small": (
        case_of(allowance=lambda w: 1), 402, "allowance_exceeded", "allowance left",
    ),
    "contract refuses": (
        case_of(allowance=lambda w: 2**96),
        400, "authorization_reverted", "SessionKeyAllowanceTooHigh",
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_a_bad_authorization_is_refused_and_nothing_is_sent(
    world: World, node: NodeFactory, payer: LocalAccount, page_key: LocalAccount, case: str
) -> None:
    build, status, code, named = REFUSALS[case]
    bad = build(world, payer, page_key)
    with node() as (url, model_id):
        before = node_txs(world)
        refused = post(url, model_id, paid_headers(url, model_id, payer.address, page_key, bad))
        assert node_txs(world) == before
    error = refused.json()["error"]
    assert (refused.status_code, error["code"]) == (status, code), error
    assert named in error["message"]
    assert refused.headers["PAYMENT-REQUIRED"]  # a fresh quote for the payer
    assert key_on_chain(world, payer.address, page_key.address)[0] == 0


def test_a_stale_nonce_is_refused_and_nothing_is_sent(
    world: World, node: NodeFactory, payer: LocalAccount, page_key: LocalAccount
) -> None:
    """The payer revoked a key after signing: its nonce moved, so the authorization is dead."""
    signed = sign_session_key_authorization(
        payer.key, domain(world), authorization(world, payer, page_key.address)
    )
    revoke = world.payments.functions.revokeSessionKey(world.roles.node, Account.create().address)
    world.transact(payer.address, revoke)
    with node() as (url, model_id):
        before = node_txs(world)
        refused = post(url, model_id, paid_headers(url, model_id, payer.address, page_key, signed))
        assert node_txs(world) == before
    error = refused.json()["error"]
    assert (refused.status_code, error["code"]) == (402, "authorization_stale_nonce")
    assert "nonce is 0" in error["message"] and "current nonce is 1" in error["message"]


def test_a_deposit_that_does_not_cover_the_request_relays_nothing(
    world: World, node: NodeFactory, page_key: LocalAccount
) -> None:
    poor = funded_payer(world, 1)  # 1 wei: no request is covered
    signed = sign_session_key_authorization(
        poor.key, domain(world), authorization(world, poor, page_key.address)
    )
    with node() as (url, model_id):
        before = node_txs(world)
        refused = post(url, model_id, paid_headers(url, model_id, poor.address, page_key, signed))
        assert node_txs(world) == before
    assert (refused.status_code, refused.json()["error"]["code"]) == (402, "insufficient_deposit")


def test_relaying_off_answers_as_before(
    world: World, node: NodeFactory, payer: LocalAccount, page_key: LocalAccount
) -> None:
    """(d) with relay_session_keys off the key is unknown: the old wrong_signer, nothing sent."""
    signed = sign_session_key_authorization(
        payer.key, domain(world), authorization(world, payer, page_key.address)
    )
    with node(relay_session_keys=False) as (url, model_id):
        before = node_txs(world)
        with_auth = post(
            url, model_id, paid_headers(url, model_id, payer.address, page_key, signed)
        )
        without = post(url, model_id, paid_headers(url, model_id, payer.address, page_key, None))
        assert node_txs(world) == before
    for refused in (with_auth, without):
        assert (refused.status_code, refused.json()["error"]["code"]) == (400, "wrong_signer")
    assert with_auth.json() == without.json()


def test_a_third_party_cannot_ride_someone_elses_authorization(
    world: World, node: NodeFactory, payer: LocalAccount, page_key: LocalAccount
) -> None:
    """(e) an attacker who saw the payer's authorization pays with its own key: on the payer's
    channel (the authorization names another signer) or its own (another payer): refused."""
    signed = sign_session_key_authorization(
        payer.key, domain(world), authorization(world, payer, page_key.address)
    )
    attacker, attacker_key = funded_payer(world, 20 * OPEN), Account.create()
    with node() as (url, model_id):
        before = node_txs(world)
        on_victim = post(
            url, model_id, paid_headers(url, model_id, payer.address, attacker_key, signed)
        )
        on_own = post(
            url, model_id, paid_headers(url, model_id, attacker.address, attacker_key, signed)
        )
        assert node_txs(world) == before
    for refused, field in ((on_victim, "signer"), (on_own, "payer")):
        error = refused.json()["error"]
        assert (refused.status_code, error["code"]) == (400, "authorization_mismatch")
        assert f"sessionKeyAuthorization {field} is" in error["message"]
    assert key_on_chain(world, payer.address, attacker_key.address)[0] == 0
    assert key_on_chain(world, payer.address, page_key.address)[0] == 0


def test_an_authorization_front_run_by_anyone_still_serves_the_paid_request(
    world: World,
    node: NodeFactory,
    payer: LocalAccount,
    page_key: LocalAccount,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Anyone may submit the payer's authorization. A third party that sees the node's
    relay coming and submits it first makes the node's own transaction revert (the nonce is
    used) but leaves the key live: the request is paid and served, not refused."""
    a = authorization(world, payer, page_key.address)
    signed = sign_session_key_authorization(payer.key, domain(world), a)
    payments = world.payments.functions
    node_send = Web3Sender.send_call

    def front_run(self: Web3Sender, call: object, gas: int | None = None) -> str:
        if getattr(call, "fn_name", "") == "authorizeSessionKeyWithSig":
            world.transact(
                world.roles.alice, payments.authorizeSessionKeyWithSig(*signed.call_args())
            )
        return node_send(self, call, gas)

    monkeypatch.setattr(Web3Sender, "send_call", front_run)
    with node() as (url, model_id):
        before = node_txs(world)
        paid = post(url, model_id, paid_headers(url, model_id, payer.address, page_key, signed))
        assert paid.status_code == 200, paid.text
        assert node_txs(world) == before + 1  # the node's relay was sent, and reverted
    assert key_on_chain(world, payer.address, page_key.address) == (a.expiry, ALLOWANCE, 0)
