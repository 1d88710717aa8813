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
from backend.protocol.receipts import read_usage_log
from backend.storage.local import DirectoryStore
from inference_node.payments import (
    AllowanceExceededError,
    ChannelMismatchError,
    DeadlineTooFarError,
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
    receipts_tree,
)
from tests.node.conftest import (
    DEPOSIT,
    MODEL_ID,
    OPEN,
    PRICING,
    SESSION_ALLOWANCE,
    World,
    funded_payer,
)
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
    requirement = quote.requirements()
    assert (requirement.scheme, requirement.amount) == ("openledger-voucher", str(price()))
    assert requirement.pay_to == world.roles.node
    assert requirement.asset == world.protocol["OpenToken"].address
    extra = requirement.extra
    assert extra["cumulativeAmount"] == str(price())
    assert extra["channel"] == {
        "payer": world.roles.payer,
        "node": world.roles.node,
        "modelId": str(MODEL_ID),
    }
    typed = extra["typedData"]
    assert typed["domain"]["verifyingContract"] == world.payments.address
    assert [f["name"] for f in typed["types"]["Voucher"]] == [
        "payer", "node", "modelId", "cumulativeAmount", "deadline",
    ]  # fmt: skip
    assert extra["minDeadline"] >= world.now() + verifier.policy.deadline_margin


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


def test_verify_refuses_a_deadline_too_far(world: World, verifier: VoucherVerifier) -> None:
    too_far = world.now() + verifier.policy.max_deadline + 60
    with pytest.raises(DeadlineTooFarError) as refused:
        verifier.verify(voucher(world, price(), deadline=too_far), MODEL_ID, price())
    assert refused.value.http_status == 402
    quote = verifier.quote(world.roles.payer, MODEL_ID, price())
    assert quote.min_deadline < quote.max_deadline < too_far


def test_verify_honours_a_revoked_session_key_until_its_grace_ends(
    world: World, verifier: VoucherVerifier
) -> None:
    """Revoking keeps the key's power for the channel's delay (1 day here), so the node still
    accepts it while it has ``session_key_margin`` left, then refuses it."""
    session = Account.from_key(world.session_key).address
    payments = world.payments.functions
    world.transact(world.roles.payer, payments.revokeSessionKey(world.roles.node, session))
    valid_until = world.now() + 86_400
    assert verifier.chain.session_key(world.roles.payer, session).valid_until == valid_until
    held = verifier.verify(voucher(world, price(), key=world.session_key), MODEL_ID, price())
    assert held.redeem_by == valid_until  # before the voucher's own deadline (1 day + 1 block)
    verifier.release(held)
    world.w3.provider.make_request("evm_increaseTime", [86_400 - 1_800])
    world.w3.provider.make_request("evm_mine", [])
    with pytest.raises(SessionKeyExpiredError) as refused:
        verifier.verify(voucher(world, price(), key=world.session_key), MODEL_ID, price())
    assert refused.value.expiry == valid_until


def test_verify_refuses_a_key_of_another_channel_or_never_authorized(
    world: World, verifier: VoucherVerifier
) -> None:
    stranger = Account.create()
    with pytest.raises(WrongSignerError):
        verifier.verify(voucher(world, price(), key=bytes(stranger.key)), MODEL_ID, price())
    payments = world.payments.functions
    far = world.now() + 10 * 86_400
    # A key of the payer's channel with another node is not a key of this channel.
    world.transact(
        world.roles.payer,
        payments.authorizeSessionKey(world.roles.bob, stranger.address, far, OPEN),
    )
    with pytest.raises(WrongSignerError):
        verifier.verify(voucher(world, price(), key=bytes(stranger.key)), MODEL_ID, price())


def test_verify_keeps_a_session_key_within_its_allowance(
    world: World, verifier: VoucherVerifier
) -> None:
    with pytest.raises(AllowanceExceededError) as refused:
        verifier.verify(
            voucher(world, SESSION_ALLOWANCE + 1, key=world.session_key), MODEL_ID, price()
        )
    assert (refused.value.left, refused.value.needed) == (SESSION_ALLOWANCE, SESSION_ALLOWANCE + 1)
    serve(verifier, voucher(world, SESSION_ALLOWANCE, key=world.session_key), price(), price())
    # The payer's own signature is not bound by the key's allowance.
    serve(verifier, voucher(world, SESSION_ALLOWANCE + price()), price(), price())


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


def test_verify_discounts_a_pending_withdrawal_until_it_lapses(
    world: World, verifier: VoucherVerifier
) -> None:
    """A withdrawal request is not counted, however far its unlock; once it lapses (a window
    after unlocking, finding 6) the balance is the node's guarantee again."""
    payments = world.payments.functions
    world.transact(world.roles.payer, payments.requestWithdrawal(world.roles.node, 90 * OPEN))
    with pytest.raises(InsufficientDepositError) as refused:
        verifier.verify(voucher(world, 11 * OPEN), MODEL_ID, price())
    assert refused.value.available == 10 * OPEN
    verifier.release(verifier.verify(voucher(world, 10 * OPEN), MODEL_ID, price()))
    world.w3.provider.make_request("evm_increaseTime", [2 * 86_400 + 1])
    world.w3.provider.make_request("evm_mine", [])
    verifier.verify(voucher(world, 50 * OPEN), MODEL_ID, price())


def test_verify_and_quote_start_at_what_the_chain_redeemed(
    world: World, verifier: VoucherVerifier, sender: Web3Sender
) -> None:
    """Finding 7: a redemption the ledger never saw (another process, a new data dir) must not
    make earlier amounts acceptable again."""
    outside = voucher(world, 5 * price())
    world.transact(
        world.roles.node,
        world.payments.functions.redeem([outside.redemption_tuple()], (b"\x01" * 32, 1, "x")),
    )
    quote = verifier.quote(world.roles.payer, MODEL_ID, price())
    assert (quote.last_accepted, quote.credit) == (5 * price(), 0)
    assert quote.cumulative_amount == 6 * price()
    with pytest.raises(UnderpaidError):
        verifier.verify(voucher(world, 5 * price()), MODEL_ID, price())
    serve(verifier, voucher(world, 6 * price()), price(), price())


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
    """The balance of the payer's channel with the node."""
    return world.payments.functions.channel(world.roles.payer, world.roles.node).call()[0]


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
    world.transact(bob, payments.deposit(world.roles.node, 10 * OPEN))
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
    stored = read_usage_log(store.get, done.receipts_cid).receipts
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


def test_redeemer_waits_while_the_node_is_not_active(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer
) -> None:
    serve(verifier, voucher(world, price()), price(), price())
    nodes = world.protocol["NodeRegistry"].functions
    world.transact(world.roles.node, nodes.requestUnbonding(1_500 * OPEN))  # below min stake
    assert redeemer.redeem_now() is None  # nothing sent, nothing recorded
    assert redeemer.ledger.redemptions() == []
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


def test_a_chain_clock_ahead_of_the_wall_clock_does_not_make_every_poll_due(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer
) -> None:
    """A local chain moved days forward (evm_increaseTime, as the demo passes a challenge
    window) keeps the interval rule: the first look starts the interval on the chain's clock.
    Judged against the wall clock, every poll was an interval late and each answer was
    redeemed in a usage proof of its own."""
    world.w3.provider.make_request("evm_increaseTime", [3 * 86_400])
    world.w3.provider.make_request("evm_mine", [])
    serve(verifier, voucher(world, price()), price(), price())
    now = world.now()
    assert now > time.time() + 2 * 86_400
    assert not redeemer.due(now) and redeemer.maybe_redeem(now + 5) is None
    assert _proofs(world) == 0
    assert redeemer.due(now + 600)  # the interval (600 s here) on the chain's clock
    assert redeemer.redeem_now() is not None
    serve(verifier, voucher(world, 2 * price()), price(), price())
    assert not redeemer.due(world.now() + 5)  # the next interval starts at the redemption


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


def test_redeemer_cuts_batches_by_gas_and_pays_every_pair(
    world: World, verifier: VoucherVerifier, chain: PaymentsChain, store: DirectoryStore,
    sender: Web3Sender,
) -> None:  # fmt: skip
    """Finding 8: one unbounded batch outgrew a block. Batches now fit a gas budget (here
    about two vouchers' worth) and every pair is paid, each receipt in exactly one proof."""
    payers = [funded_payer(world, OPEN) for _ in range(5)]
    for account in payers:
        signed = voucher(world, price(), key=bytes(account.key), payer=account.address)
        serve(verifier, signed, price(), price())
    block_gas = world.w3.eth.get_block("latest")["gasLimit"]
    two = [c.voucher.redemption_tuple() for c in verifier.ledger.unredeemed_channels()[:2]]
    policy = RedeemPolicy(max_batch=4, gas_fraction=(sender.estimate(two) + 1_000) / block_gas)
    redeemer = Redeemer(chain, verifier.ledger, store, sender, policy)
    done = redeemer.redeem_all()
    assert len(done) >= 3 and all(r.status == "confirmed" for r in done)
    assert all(len(r.vouchers) <= 2 for r in done)
    assert sum(r.paid or 0 for r in done) == 5 * price()
    assert sum(r.receipt_count for r in done) == 5 and redeemer.ledger.pending_receipts() == []
    for account in payers:
        assert (
            world.payments.functions.redeemed(account.address, world.roles.node, MODEL_ID).call()
            == price()
        )


def test_redeemer_leaves_out_a_dead_key_and_pays_the_others(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer, caplog: pytest.LogCaptureFixture
) -> None:
    """Finding 1 through the node: a key revoked and past its grace loses its voucher (the node
    waited too long), but the batch still pays every other pair."""
    bob = funded_payer(world, OPEN)
    later = world.now() + 3 * 86_400
    keyed = voucher(world, 2 * price(), key=world.session_key, deadline=later)
    serve(verifier, keyed, price(), price())
    own = voucher(world, price(), key=bytes(bob.key), payer=bob.address, deadline=later)
    serve(verifier, own, price(), price())
    session = Account.from_key(world.session_key).address
    payments = world.payments.functions
    world.transact(world.roles.payer, payments.revokeSessionKey(world.roles.node, session))
    world.w3.provider.make_request("evm_increaseTime", [86_400 + 10])
    world.w3.provider.make_request("evm_mine", [])
    done = redeemer.redeem_now()
    assert done is not None and done.status == "confirmed" and done.paid == price()
    assert [v.voucher.payer for v in done.vouchers] == [bob.address]
    assert "session key" in caplog.text and "wei lost" in caplog.text


def test_redeemer_redeems_before_a_withdrawal_or_revocation_bites(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer
) -> None:
    """Findings 2 and 6 through the node: after a withdrawal request or a key revocation the
    pair is due before the unlock / the key's end, not at the next interval."""
    serve(verifier, voucher(world, 2 * price(), key=world.session_key), price(), price())
    redeemer.watch()
    now = world.now()
    assert not redeemer.due(now)  # far from every deadline, under threshold and interval
    session = Account.from_key(world.session_key).address
    payments = world.payments.functions
    world.transact(world.roles.payer, payments.revokeSessionKey(world.roles.node, session))
    world.transact(world.roles.payer, payments.requestWithdrawal(world.roles.node, DEPOSIT))
    redeemer.watch()
    by = verifier.ledger.channel(world.roles.payer, MODEL_ID).redeem_by
    assert by <= world.now() + 86_400
    assert redeemer.due(by - redeemer.policy.urgency)
    done = redeemer.maybe_redeem(by - redeemer.policy.urgency)
    assert done is not None and done.paid == 2 * price()
    world.w3.provider.make_request("evm_increaseTime", [86_400 + 1])
    world.w3.provider.make_request("evm_mine", [])
    world.transact(world.roles.payer, payments.withdraw(world.roles.node))
    assert _balance(world) == 0  # the payer got the rest; the node was paid first


def test_redeemer_survives_rpc_errors(
    world: World, verifier: VoucherVerifier, redeemer: Redeemer, caplog: pytest.LogCaptureFixture
) -> None:
    serve(verifier, voucher(world, price()), price(), price())

    def unreachable(*args: object, **kwargs: object) -> int:
        raise ConnectionError("connection refused")

    redeemer.sender.estimate = unreachable  # type: ignore[method-assign]
    redeemer.chain.w3.eth.get_block("latest")
    assert redeemer.maybe_redeem(world.now() + 10**6) is None
    assert len(redeemer.ledger.pending_receipts()) == 1
