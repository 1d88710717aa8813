"""Node payments against a real anvil: quotes, voucher checks, the durable ledger and the
exactly-once redeemer with its usage proof."""

from __future__ import annotations

import threading
import time
from itertools import count
from pathlib import Path

import pytest
from eth_account import Account
from eth_utils import keccak

from backend.protocol.eip712 import Domain, SignedVoucher, Voucher, sign_voucher
from backend.storage.local import DirectoryStore
from inference_node.payments import (
    ChannelMismatchError,
    DeadlineTooSoonError,
    InsufficientDepositError,
    Ledger,
    LedgerError,
    PaymentsChain,
    Receipt,
    Redeemer,
    RedeemPolicy,
    SessionKeyExpiredError,
    UnderpaidError,
    VoucherVerifier,
    Web3Sender,
    WrongSignerError,
    parse_receipts_log,
    receipts_tree,
)
from tests.node.conftest import DEPOSIT, MODEL_ID, OPEN, PRICING, World
from tests.protocol_history import private_key

_requests = count()


def voucher(world: World, cumulative: int, *, key: bytes | None = None, **fields) -> SignedVoucher:
    """A voucher on (payer, node, model 1), signed by the payer unless ``key`` is given."""
    values = {
        "payer": world.roles.payer,
        "node": world.roles.node,
        "model_id": MODEL_ID,
        "cumulative_amount": cumulative,
        "deadline": world.now() + 86_400,
        **fields,
    }
    domain = Domain(world.w3.eth.chain_id, world.payments.address)
    return sign_voucher(key or world.payer_key, domain, Voucher(**values))


def receipt(signed: SignedVoucher, price: int, tokens_out: int = 5) -> Receipt:
    v = signed.voucher
    return Receipt(
        request_hash=keccak(text=f"request {next(_requests)}"),
        payer=v.payer,
        node=v.node,
        model_id=v.model_id,
        adapter_version=1,
        tokens_in=10,
        tokens_out=tokens_out,
        price=price,
        output_hash=keccak(text="output"),
        attribution_digest=b"\x00" * 32,
        voucher_cumulative=v.cumulative_amount,
        created_at=1_700_000_000,
    )


def serve(verifier: VoucherVerifier, signed: SignedVoucher, quoted: int, actual: int) -> None:
    """What the server does for one paid request: verify, (answer), commit, release."""
    acceptance = verifier.verify(signed, MODEL_ID, quoted)
    verifier.settle(acceptance, receipt(signed, actual))


def price(max_tokens: int = 20) -> int:
    return PRICING.price(10, max_tokens)


# ---------------------------------------------------------------- quote


def test_quote_prices_max_tokens_up_front(world: World, verifier: VoucherVerifier) -> None:
    assert price(20) == OPEN // 100 + 30 * (OPEN // 1_000)
    assert verifier.chain.pricing(MODEL_ID) == PRICING
    quote = verifier.quote(world.roles.payer, MODEL_ID, price())
    body = quote.to_json()
    assert body["price"] == str(price())
    assert body["cumulativeAmount"] == str(price())
    assert body["channel"] == {
        "payer": world.roles.payer,
        "node": world.roles.node,
        "modelId": MODEL_ID,
    }
    assert body["eip712"]["domain"]["verifyingContract"] == world.payments.address
    assert [f["name"] for f in body["eip712"]["types"]["Voucher"]] == [
        "payer", "node", "modelId", "cumulativeAmount", "deadline",
    ]  # fmt: skip
    assert body["minDeadline"] >= world.now() + verifier.policy.deadline_margin


def test_quote_after_a_short_answer_is_lowered_by_the_unused_part(
    world: World, verifier: VoucherVerifier
) -> None:
    first = voucher(world, price())
    serve(verifier, first, price(), PRICING.price(10, 5))  # 15 of 20 tokens unused
    unused = price() - PRICING.price(10, 5)
    quote = verifier.quote(world.roles.payer, MODEL_ID, price())
    assert quote.credit == unused
    assert quote.cumulative_amount == price() + price() - unused
    serve(verifier, voucher(world, quote.cumulative_amount), price(), price())
    state = verifier.ledger.channel(world.roles.payer, MODEL_ID)
    assert (state.accepted, state.consumed) == (quote.cumulative_amount, quote.cumulative_amount)


def test_quote_covered_by_credit_accepts_the_latest_voucher_again(
    world: World, verifier: VoucherVerifier
) -> None:
    big = voucher(world, 10 * price())
    serve(verifier, big, price(), price())
    assert verifier.quote(world.roles.payer, MODEL_ID, price()).cumulative_amount == 10 * price()
    serve(verifier, big, price(), price())
    assert verifier.ledger.channel(world.roles.payer, MODEL_ID).consumed == 2 * price()


# ---------------------------------------------------------------- verify


def test_verify_accepts_payer_and_session_key_vouchers(
    world: World, verifier: VoucherVerifier
) -> None:
    serve(verifier, voucher(world, price()), price(), price())
    serve(verifier, voucher(world, 2 * price(), key=world.session_key), price(), price())
    state = verifier.ledger.channel(world.roles.payer, MODEL_ID)
    assert state.accepted == 2 * price()
    assert state.voucher is not None and state.voucher.voucher.cumulative_amount == 2 * price()


def test_verify_refuses_a_stranger_signature(world: World, verifier: VoucherVerifier) -> None:
    with pytest.raises(WrongSignerError) as refused:
        verifier.verify(voucher(world, price(), key=Account.create().key), MODEL_ID, price())
    assert refused.value.http_status == 400


@pytest.mark.parametrize(
    ("fields", "field"),
    [({"node": "0x" + "11" * 20}, "node"), ({"model_id": 2}, "modelId")],
)
def test_verify_refuses_another_channel(
    world: World, verifier: VoucherVerifier, fields: dict, field: str
) -> None:
    with pytest.raises(ChannelMismatchError) as refused:
        verifier.verify(voucher(world, price(), **fields), MODEL_ID, price())
    assert refused.value.field == field


@pytest.mark.parametrize("ahead", [-10, 60, 3_599])
def test_verify_refuses_a_deadline_too_close(
    world: World, verifier: VoucherVerifier, ahead: int
) -> None:
    with pytest.raises(DeadlineTooSoonError) as refused:
        verifier.verify(voucher(world, price(), deadline=world.now() + ahead), MODEL_ID, price())
    assert refused.value.http_status == 402


def test_verify_refuses_a_revoked_or_expiring_session_key(
    world: World, verifier: VoucherVerifier
) -> None:
    signed = voucher(world, price(), key=world.session_key)
    session = Account.from_key(world.session_key).address
    world.transact(world.roles.payer, world.payments.functions.revokeSessionKey(session))
    with pytest.raises(WrongSignerError):
        verifier.verify(signed, MODEL_ID, price())
    expiry = world.now() + 120  # inside the 600 s margin
    world.transact(world.roles.payer, world.payments.functions.authorizeSessionKey(session, expiry))
    with pytest.raises(SessionKeyExpiredError) as refused:
        verifier.verify(signed, MODEL_ID, price())
    assert refused.value.expiry == expiry


def test_verify_refuses_an_underpaying_voucher(world: World, verifier: VoucherVerifier) -> None:
    serve(verifier, voucher(world, price()), price(), price())
    with pytest.raises(UnderpaidError) as refused:
        verifier.verify(voucher(world, 2 * price() - 1), MODEL_ID, price())
    assert (refused.value.cumulative, refused.value.required) == (2 * price() - 1, 2 * price())
    with pytest.raises(UnderpaidError):
        verifier.verify(voucher(world, price()), MODEL_ID, price())  # replaying the last one


def test_verify_reserves_credit_for_requests_in_flight(
    world: World, verifier: VoucherVerifier
) -> None:
    signed = voucher(world, price())
    held = verifier.verify(signed, MODEL_ID, price())
    with pytest.raises(UnderpaidError):
        verifier.verify(signed, MODEL_ID, price())  # same voucher, concurrent second request
    verifier.release(held)
    verifier.verify(signed, MODEL_ID, price())


def test_verify_refuses_more_than_the_deposit(world: World, verifier: VoucherVerifier) -> None:
    with pytest.raises(InsufficientDepositError) as refused:
        verifier.verify(voucher(world, DEPOSIT + 1), MODEL_ID, price())
    assert (refused.value.available, refused.value.outstanding) == (DEPOSIT, DEPOSIT + 1)
    verifier.verify(voucher(world, DEPOSIT), MODEL_ID, price())


def test_verify_counts_the_payer_other_channels(world: World, verifier: VoucherVerifier) -> None:
    other = voucher(world, 60 * OPEN, model_id=2)
    verifier.ledger.commit(other, receipt(other, price()))
    with pytest.raises(InsufficientDepositError) as refused:
        verifier.verify(voucher(world, 41 * OPEN), MODEL_ID, price())
    assert refused.value.outstanding == 101 * OPEN
    verifier.verify(voucher(world, 40 * OPEN), MODEL_ID, price())


def test_verify_discounts_a_withdrawal_unlocking_too_soon(
    world: World, verifier: VoucherVerifier
) -> None:
    payments = world.payments.functions
    world.transact(world.roles.payer, payments.requestWithdrawal(90 * OPEN))  # unlocks in 1 day
    held = verifier.verify(voucher(world, 50 * OPEN), MODEL_ID, price())  # margin 1 h: counted
    verifier.release(held)
    verifier.policy = type(verifier.policy)(withdrawal_margin=2 * 86_400)
    with pytest.raises(InsufficientDepositError) as refused:
        verifier.verify(voucher(world, 11 * OPEN), MODEL_ID, price())
    assert refused.value.available == 10 * OPEN


# ---------------------------------------------------------------- ledger


def test_ledger_keeps_vouchers_and_receipts_across_reopen(
    world: World, verifier: VoucherVerifier, ledger_path: Path
) -> None:
    signed = voucher(world, 3 * price())
    serve(verifier, signed, price(), price())
    verifier.ledger.close()
    with Ledger(ledger_path, world.roles.node) as reopened:
        state = reopened.channel(world.roles.payer, MODEL_ID)
        assert state.voucher == signed
        assert (state.accepted, state.consumed, state.redeemed) == (3 * price(), price(), 0)
        [(_, kept)] = reopened.pending_receipts()
        assert kept.price == price() and kept.voucher_cumulative == 3 * price()
    with pytest.raises(LedgerError):
        Ledger(ledger_path, world.roles.payer)  # another node's ledger


def test_ledger_refuses_receipts_beyond_the_voucher(world: World, ledger: Ledger) -> None:
    signed = voucher(world, price())
    with pytest.raises(LedgerError):
        ledger.commit(signed, receipt(signed, price() + 1))
    assert ledger.pending_receipts() == []
    assert ledger.channel(world.roles.payer, MODEL_ID).accepted == 0


# ---------------------------------------------------------------- redeemer


def _redeemed(world: World) -> int:
    r = world.roles
    return world.payments.functions.redeemed(r.payer, r.node, MODEL_ID).call()


def _balance(world: World) -> int:
    return world.payments.functions.accountOf(world.roles.payer).call()[0]


def _proofs(world: World) -> int:
    return world.payments.functions.usageProofCount().call()


def test_redeemer_pays_what_was_accepted_exactly_once(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer
) -> None:
    serve(verifier, voucher(world, price()), price(), price())
    serve(verifier, voucher(world, 3 * price(), key=world.session_key), 2 * price(), price())
    started = int(time.time())
    assert not redeemer.due(started)  # the first interval counts from the redeemer's start
    assert redeemer.due(started + 600)
    done = redeemer.redeem_now()
    assert done is not None and done.status == "confirmed"
    assert (done.paid, done.receipt_count, done.proof_id) == (3 * price(), 2, 1)
    assert _redeemed(world) == 3 * price() and _balance(world) == DEPOSIT - 3 * price()
    assert redeemer.redeem_now() is None  # a second run finds nothing to pay
    assert not redeemer.due(world.now() + 10**6)
    assert _balance(world) == DEPOSIT - 3 * price() and _proofs(world) == 1

    quote = verifier.quote(world.roles.payer, MODEL_ID, 3 * price())  # the credit pays 1 of 3
    assert quote.cumulative_amount == 5 * price()
    serve(verifier, voucher(world, quote.cumulative_amount), 3 * price(), 3 * price())
    later = redeemer.redeem_now()
    assert later is not None and later.paid == 2 * price() and later.receipt_count == 1
    assert _balance(world) == DEPOSIT - quote.cumulative_amount


def test_redeemer_batches_channels_of_many_payers(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer
) -> None:
    bob = world.roles.bob
    token, payments = world.protocol["OpenToken"].functions, world.payments.functions
    world.transact(bob, token.approve(world.payments.address, 2**256 - 1))
    world.transact(bob, payments.deposit(10 * OPEN))
    serve(verifier, voucher(world, price()), price(), price())
    serve(verifier, voucher(world, 2 * price(), key=private_key(6), payer=bob), price(), price())
    done = redeemer.redeem_now()
    assert done is not None and len(done.vouchers) == 2 and done.paid == 3 * price()


def test_usage_proof_on_chain_is_the_root_of_the_stored_log(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer, store: DirectoryStore
) -> None:
    for n in range(1, 4):
        serve(verifier, voucher(world, n * price()), price(), price())
    done = redeemer.redeem_now()
    assert done is not None and done.proof_id is not None
    record = world.payments.functions.usageRecord(done.proof_id).call()
    stored = parse_receipts_log(store.get(done.receipts_cid))
    assert len(stored) == record[2] == 3
    assert receipts_tree(stored).root == record[0] == done.receipts_root
    assert record[1] == world.roles.node and record[4] == 3 * price()
    tree = receipts_tree(stored)
    assert all(tree.verify(i, tree.proof(i)) for i in range(3))


class SimulatedCrashError(Exception):
    """The node process dying mid-redemption."""


class CrashingSender(Web3Sender):
    """Dies right after broadcasting (``after=True``) or right before."""

    after: bool = True

    def send(self, vouchers, proof) -> str:
        if not self.after:
            raise SimulatedCrashError("before send")
        super().send(vouchers, proof)
        raise SimulatedCrashError("after send, before recording")


@pytest.mark.parametrize("after", [True, False])
def test_redeemer_reconciles_a_crash_around_sending(
    world: World,
    verifier: VoucherVerifier,
    chain: PaymentsChain,
    store: DirectoryStore,
    ledger_path: Path,
    after: bool,
) -> None:
    serve(verifier, voucher(world, 2 * price()), price(), price())
    serve(verifier, voucher(world, 4 * price()), 3 * price(), 2 * price())
    crashing = CrashingSender(world.w3, world.payments, world.roles.node)
    crashing.after = after
    with pytest.raises(SimulatedCrashError):
        Redeemer(chain, verifier.ledger, store, crashing).redeem_now()
    verifier.ledger.close()
    assert _proofs(world) == (1 if after else 0)

    with Ledger(ledger_path, world.roles.node) as restarted:
        [pending] = restarted.redemptions("pending")
        assert pending.tx_hash is None
        sender = Web3Sender(world.w3, world.payments, world.roles.node)
        redeemer = Redeemer(chain, restarted, store, sender, RedeemPolicy())
        assert redeemer.redeem_now() is None  # reconciled; nothing new to redeem
        [done] = restarted.redemptions()
        assert done.status == "confirmed" and done.paid == 4 * price() and done.tx_hash
        assert restarted.pending_receipts() == []
        assert restarted.channel(world.roles.payer, MODEL_ID).redeemed == 4 * price()
        assert redeemer.redeem_now() is None
    assert _proofs(world) == 1
    assert _redeemed(world) == 4 * price() and _balance(world) == DEPOSIT - 4 * price()


def test_redeemer_releases_receipts_of_a_refused_redemption(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer
) -> None:
    serve(verifier, voucher(world, price()), price(), price())
    nodes = world.protocol["NodeRegistry"].functions
    world.transact(world.roles.node, nodes.requestUnbonding(1_500 * OPEN))  # below min stake
    failed = redeemer.redeem_now()
    assert failed is not None and failed.status == "failed"
    assert len(redeemer.ledger.pending_receipts()) == 1 and _proofs(world) == 0
    world.transact(world.roles.node, nodes.stake(1_500 * OPEN))
    done = redeemer.redeem_now()
    assert done is not None and done.status == "confirmed" and done.receipt_count == 1


def test_settle_refuses_an_actual_price_above_the_quote(
    world: World, verifier: VoucherVerifier
) -> None:
    signed = voucher(world, price())
    acceptance = verifier.verify(signed, MODEL_ID, price())
    with pytest.raises(ValueError, match="above the quoted"):
        verifier.settle(acceptance, receipt(signed, price() + 1))
    assert verifier.ledger.pending_receipts() == []
    verifier.verify(signed, MODEL_ID, price())  # the reservation was dropped


def test_redeemer_is_due_by_threshold_or_interval(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer
) -> None:
    assert not redeemer.due(world.now())  # nothing unredeemed
    serve(verifier, voucher(world, price()), price(), price())
    redeemer.redeem_now()
    serve(verifier, voucher(world, 2 * price()), price(), price())
    now = world.now()
    assert not redeemer.due(now)  # under the threshold, interval not passed
    assert redeemer.maybe_redeem(now) is None
    assert redeemer.due(now + 10**6)
    serve(verifier, voucher(world, OPEN + 2 * price()), OPEN, price())
    assert redeemer.due(now)  # over the threshold


def test_concurrent_requests_never_overspend_a_channel(
    world: World, verifier: VoucherVerifier
) -> None:
    signed = voucher(world, 5 * price())
    outcomes: list[str] = []

    def request() -> None:
        try:
            serve(verifier, signed, price(), price())
            outcomes.append("served")
        except UnderpaidError:
            outcomes.append("refused")

    threads = [threading.Thread(target=request) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("served") <= 5
    assert verifier.ledger.channel(world.roles.payer, MODEL_ID).consumed <= 5 * price()
