"""InferencePayments: channels per (payer, node), withdrawals, session keys, vouchers, splits,
usage proofs, and the attacks on payments v1 that v2 closes (section "findings")."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import ape
import pytest
from ape import chain
from eth_account import Account as EthAccount
from eth_account.messages import encode_typed_data

from backend.protocol.contracts import project
from backend.protocol.eip712 import (
    SESSION_KEY_TYPE,
    Domain,
    Permit,
    SessionKeyAuthorization,
    Signature,
    SignedVoucher,
    Voucher,
    sign_session_key,
    sign_voucher,
    token_domain,
    voucher_digest,
)
from backend.protocol.eip712 import sign_permit as eip712_sign_permit
from backend.protocol.merkle import StandardMerkleTree

OPEN = 10**18
DEPOSIT = 1_000 * OPEN  # OPEN wei the payer deposits into its channel with `node` in the setup
DAY = 86_400  # seconds: the withdrawal delay at deployment, WITHDRAWAL_WINDOW, SPLIT_CHANGE_DELAY
MIN_DELAY, MAX_DELAY = 60, 30 * DAY  # bounds of the withdrawal delay (seconds)
ALLOWANCE = 100 * OPEN  # a session key's allowance in these tests
SPLIT_A = (4_000, 2_000, 3_500, 500)  # developer, contributors, node, protocol (bps)
SPLIT_B = (1_000, 3_000, 5_500, 500)
ZERO = "0x0000000000000000000000000000000000000000"
ROOT = bytes.fromhex("ab" * 32)  # a receipts Merkle root
NO_PROOF = (bytes(32), 0, "")
# IInferencePayments.SkipReason
EXPIRED, INVALID_SIGNER, KEY_NOT_LIVE, NOT_ABOVE_REDEEMED = 1, 2, 3, 4


@dataclass(frozen=True)
class Key:
    """A key that signs but never sends transactions (an app's session key)."""

    address: str
    private_key: bytes


def key(seed: int) -> Key:
    private_key = bytes([seed]) * 32
    return Key(EthAccount.from_key(private_key).address, private_key)


SESSION_KEY = key(0x5E)


@dataclass(frozen=True)
class Setup:
    """What the module fixture registered: two models with different splits."""

    model_a: int
    model_b: int
    splits: dict[int, tuple[int, int, int, int]]


@pytest.fixture(scope="module")
def setup(
    protocol,
    token,
    datanets,
    models,
    nodes,
    rewards,
    payments,
    governance,
    treasury,
    developer,
    contributor,
    curator,
    challenger,
    other,
    node,
    second_node,
    payer,
) -> Setup:
    """A published Datanet version, two models trained on it, two staked nodes, and the payer's
    channel with `node` holding DEPOSIT. (It asks for every session fixture the tests use, so
    that ape snapshots after them.)"""
    bond = OPEN
    tx = datanets.createDatanet("bafy-meta", bond, 1, curator, sender=curator)
    datanet_id = tx.events.filter(datanets.DatanetCreated)[0].datanetId
    token.approve(datanets, bond, sender=contributor)
    cid = "bafy-contribution"
    tx = datanets.contribute(datanet_id, cid, 1_024, sender=contributor)
    contribution_id = tx.events.filter(datanets.Contributed)[0].contributionId
    datanets.review(datanet_id, [contribution_id], [True], sender=curator)
    tree = StandardMerkleTree.of(
        [[contribution_id, contributor.address, cid]], ["uint256", "address", "string"]
    )
    tx = datanets.publishVersion(
        datanet_id,
        tree.root,
        "bafy-manifest",
        datanets.datanet(datanet_id).approvedCount,
        sender=curator,
    )
    version = tx.events.filter(datanets.VersionPublished)[0].version
    ids = []
    for split in (SPLIT_A, SPLIT_B):
        spec = (
            "bafy-model",
            "bafy-base",
            "bafy-adapter",
            "bafy-train",
            datanet_id,
            version,
            (OPEN // 100, OPEN // 10_000),
            split,
            node.address,
        )
        tx = models.registerModel(spec, sender=developer)
        ids.append(tx.events.filter(models.ModelRegistered)[0].modelId)
    min_stake = nodes.minStake()
    for operator in (node, second_node):
        token.approve(nodes, min_stake, sender=operator)
        nodes.stake(min_stake, sender=operator)
    token.approve(payments, DEPOSIT, sender=payer)
    payments.deposit(node, DEPOSIT, sender=payer)
    return Setup(model_a=ids[0], model_b=ids[1], splits={ids[0]: SPLIT_A, ids[1]: SPLIT_B})


# ---------------------------------------------------------------------------------- helpers


def later(seconds: int = DAY) -> int:
    """A unix time `seconds` after the next block's."""
    return chain.pending_timestamp + seconds


def signed(
    signer: Any,
    domain: Domain,
    payer: Any,
    node: Any,
    model_id: int,
    cumulative: int,
    deadline: int | None = None,
) -> SignedVoucher:
    """A voucher on channel (payer, node) for `model_id`, signed by `signer` (a key holder)."""
    voucher = Voucher(payer.address, node.address, model_id, cumulative, deadline or later())
    return sign_voucher(signer.private_key, domain, voucher)


def redeem(payments: Any, node: Any, vouchers: Sequence[SignedVoucher], proof=NO_PROOF) -> Any:
    """The node redeems `vouchers` in one transaction."""
    return payments.redeem([v.redemption_tuple() for v in vouchers], proof, sender=node)


def paid_of(payments: Any, tx: Any) -> list[int]:
    """What each redeemed (not skipped) voucher of `tx` paid, in order."""
    return [e.paid for e in tx.events.filter(payments.VoucherRedeemed)]


def split_of(amount: int, split: tuple[int, int, int, int]) -> dict[str, int]:
    """The expected split of `amount`: floors for node, developer and protocol, the rest to
    the contributors (their share plus the rounding dust)."""
    developer, _, node, protocol = split
    shares = {
        "nodeShare": amount * node // 10_000,
        "developerShare": amount * developer // 10_000,
        "protocolShare": amount * protocol // 10_000,
    }
    shares["contributorsShare"] = amount - sum(shares.values())
    return shares


def channel_of(payments: Any, payer: Any, node: Any) -> tuple[int, int, int, int]:
    """(balance, pendingWithdrawal, withdrawalUnlockAt, withdrawDelay) of channel (payer, node)."""
    ch = payments.channel(payer, node)
    return (ch.balance, ch.pendingWithdrawal, ch.withdrawalUnlockAt, ch.withdrawDelay)


def key_of(payments: Any, payer: Any, node: Any, signer: Key = SESSION_KEY) -> tuple[int, int, int]:
    """(validUntil, allowance, spent) of session key `signer` on channel (payer, node)."""
    k = payments.sessionKey(payer, node, signer.address)
    return (k.validUntil, k.allowance, k.spent)


def authorize(
    payments: Any,
    payer: Any,
    node: Any,
    signer: Key = SESSION_KEY,
    expiry: int | None = None,
    allowance: int = ALLOWANCE,
) -> Any:
    """`payer` authorizes `signer` on its channel with `node` (default: a week, ALLOWANCE)."""
    return payments.authorizeSessionKey(
        node, signer.address, expiry or later(7 * DAY), allowance, sender=payer
    )


def sign_permit(owner: Any, token: Any, spender: Any, value: int, deadline: int) -> tuple:
    """(v, r, s) of an EIP-2612 permit signed by `owner` (backend.protocol.eip712)."""
    permit = Permit(owner.address, spender.address, value, token.nonces(owner), deadline)
    sig = eip712_sign_permit(owner.private_key, token_domain(chain.chain_id, token.address), permit)
    return sig.v, sig.r, sig.s


def fund(token, payments, account, node, amount: int) -> Any:
    """`account` deposits `amount` into its channel with `node`."""
    token.approve(payments, amount, sender=account)
    return payments.deposit(node, amount, sender=account)


@pytest.fixture
def conserved(
    token,
    payments,
    rewards,
    setup,
    payer,
    other,
    contributor,
    curator,
    challenger,
    node,
    second_node,
    developer,
    treasury,
):
    """Checks OPEN conservation (call it after the transactions): every OPEN wei the contracts
    hold is owed to someone: the channels' balances and earnings in InferencePayments, the
    models' attribution pools in AttributionRewards."""

    def check(*extra_earners: Any) -> None:
        payers = [payer, other, contributor, curator, challenger]
        nodes = [node, second_node]
        earners = [node, second_node, developer, treasury, *extra_earners]
        owed = sum(payments.channel(p, n).balance for p in payers for n in nodes)
        owed += sum(payments.earnings(a) for a in earners)
        assert token.balanceOf(payments) == owed
        pools = sum(rewards.pool(m).funded for m in (setup.model_a, setup.model_b))
        assert token.balanceOf(rewards) == pools

    return check


# ---------------------------------------------------------------------------------- deployment


@pytest.mark.parametrize(
    ("zeroed", "delay"),
    [("token", DAY), ("models", DAY), ("nodes", DAY), ("rewards", DAY), ("treasury", DAY)],
)
def test_constructor_zero_address_reverts(setup, protocol, governance, treasury, zeroed, delay):
    args = {
        "token": protocol.token,
        "models": protocol.models,
        "nodes": protocol.nodes,
        "rewards": protocol.rewards,
        "treasury": treasury,
    }
    args[zeroed] = ZERO
    contract = project().InferencePayments
    with ape.reverts(contract.PaymentsZeroAddress):
        governance.deploy(
            contract,
            args["token"],
            args["models"],
            args["nodes"],
            args["rewards"],
            governance,
            args["treasury"],
            delay,
        )


@pytest.mark.parametrize("delay", [MIN_DELAY - 1, MAX_DELAY + 1])
def test_constructor_withdrawal_delay_out_of_bounds_reverts(
    setup, protocol, governance, treasury, delay
):
    contract = project().InferencePayments
    with ape.reverts(
        contract.WithdrawalDelayOutOfBounds, delay=delay, min=MIN_DELAY, max=MAX_DELAY
    ):
        governance.deploy(
            contract,
            protocol.token,
            protocol.models,
            protocol.nodes,
            protocol.rewards,
            governance,
            treasury,
            delay,
        )


def test_parameters_at_deployment(setup, payments, treasury):
    assert payments.withdrawalDelay() == DAY
    assert payments.WITHDRAWAL_WINDOW() == DAY
    assert (payments.MIN_WITHDRAWAL_DELAY(), payments.MAX_WITHDRAWAL_DELAY()) == (
        MIN_DELAY,
        MAX_DELAY,
    )
    assert payments.treasury() == treasury.address
    assert payments.usageProofCount() == 0


# ---------------------------------------------------------------------------------- deposits


def test_deposit_opens_the_channel_and_credits_its_balance(setup, token, payments, other, node):
    token.approve(payments, 5 * OPEN, sender=other)
    before = token.balanceOf(other)

    first = payments.deposit(node, 2 * OPEN, sender=other)
    second = payments.deposit(node, 3 * OPEN, sender=other)

    assert first.events.filter(payments.ChannelOpened) == [payments.ChannelOpened(other, node, DAY)]
    assert first.events.filter(payments.Deposited) == [
        payments.Deposited(other, node, 2 * OPEN, 2 * OPEN)
    ]
    assert second.events.filter(payments.ChannelOpened) == []
    assert second.events.filter(payments.Deposited) == [
        payments.Deposited(other, node, 3 * OPEN, 5 * OPEN)
    ]
    assert channel_of(payments, other, node) == (5 * OPEN, 0, 0, DAY)
    assert token.balanceOf(other) == before - 5 * OPEN
    assert token.balanceOf(payments) == DEPOSIT + 5 * OPEN


def test_deposit_into_two_channels_keeps_them_apart(
    setup, token, payments, payer, node, second_node
):
    tx = fund(token, payments, payer, second_node, 7 * OPEN)

    assert tx.events.filter(payments.ChannelOpened) == [
        payments.ChannelOpened(payer, second_node, DAY)
    ]
    assert channel_of(payments, payer, second_node) == (7 * OPEN, 0, 0, DAY)
    assert channel_of(payments, payer, node) == (DEPOSIT, 0, 0, DAY)


def test_channel_never_opened_is_all_zero(setup, payments, other, second_node):
    assert channel_of(payments, other, second_node) == (0, 0, 0, 0)


def test_deposit_zero_reverts(setup, payments, other, node):
    with ape.reverts(payments.PaymentsZeroAmount):
        payments.deposit(node, 0, sender=other)


def test_deposit_to_zero_node_reverts(setup, token, payments, other):
    token.approve(payments, OPEN, sender=other)
    with ape.reverts(payments.PaymentsZeroAddress):
        payments.deposit(ZERO, OPEN, sender=other)


def test_deposit_above_uint128_reverts(setup, payments, other, node):
    with ape.reverts(payments.SafeCastOverflowedUintDowncast, bits=128, value=2**128):
        payments.deposit(node, 2**128, sender=other)


def test_deposit_without_allowance_reverts(setup, token, payments, other, node):
    with ape.reverts(
        token.ERC20InsufficientAllowance, spender=payments.address, allowance=0, needed=OPEN
    ):
        payments.deposit(node, OPEN, sender=other)


def test_deposit_when_paused_reverts(setup, token, payments, governance, other, node):
    payments.pause(sender=governance)
    token.approve(payments, OPEN, sender=other)
    with ape.reverts(payments.EnforcedPause):
        payments.deposit(node, OPEN, sender=other)


def test_deposit_with_permit_deposits_into_the_payers_channel(
    setup, token, payments, other, node, second_node
):
    deadline = later()
    v, r, s = sign_permit(other, token, payments, 7 * OPEN, deadline)
    before = token.balanceOf(other)

    tx = payments.depositWithPermit(node, 7 * OPEN, deadline, v, r, s, sender=other)

    assert tx.events.filter(payments.ChannelOpened) == [payments.ChannelOpened(other, node, DAY)]
    assert tx.events.filter(payments.Deposited) == [
        payments.Deposited(other, node, 7 * OPEN, 7 * OPEN)
    ]
    assert channel_of(payments, other, node) == (7 * OPEN, 0, 0, DAY)
    assert payments.channel(other, second_node).balance == 0
    assert token.balanceOf(other) == before - 7 * OPEN
    assert token.allowance(other, payments) == 0
    assert token.nonces(other) == 1


def test_a_permit_seen_in_the_mempool_cannot_be_diverted_to_another_channel(
    setup, token, payments, other, node, second_node
):
    """Issue 13 (slither, arbitrary-send-erc20): the permit does not name the node, and anyone
    could submit `depositWithPermit(payer, node of their choosing, ...)` with it first, locking
    the payer's money in that channel for its delay. Only the payer deposits with its permit."""
    deadline = later()
    v, r, s = sign_permit(other, token, payments, 7 * OPEN, deadline)
    # The front-runner replays the payer's permit with its own node: the permit is checked
    # against the sender, fails, and the sender has no allowance.
    with ape.reverts(
        payments.PermitAllowanceTooLow, payer=second_node.address, allowance=0, amount=7 * OPEN
    ):
        payments.depositWithPermit(second_node, 7 * OPEN, deadline, v, r, s, sender=second_node)
    payments.depositWithPermit(node, 7 * OPEN, deadline, v, r, s, sender=other)
    assert payments.channel(other, node).balance == 7 * OPEN
    assert payments.channel(other, second_node).balance == 0


def test_deposit_with_permit_front_run_permit_still_deposits_for_the_payer(
    setup, token, payments, other, node
):
    deadline = later()
    v, r, s = sign_permit(other, token, payments, 7 * OPEN, deadline)
    token.permit(other, payments, 7 * OPEN, deadline, v, r, s, sender=node)  # the front-runner

    tx = payments.depositWithPermit(node, 7 * OPEN, deadline, v, r, s, sender=other)

    assert tx.events.filter(payments.Deposited) == [
        payments.Deposited(other, node, 7 * OPEN, 7 * OPEN)
    ]
    assert payments.channel(other, node).balance == 7 * OPEN
    assert token.allowance(other, payments) == 0


def test_deposit_with_permit_invalid_permit_and_no_allowance_reverts(
    setup, token, payments, other, node
):
    deadline = later()
    v, r, s = sign_permit(node, token, payments, 7 * OPEN, deadline)  # not the payer's permit
    with ape.reverts(
        payments.PermitAllowanceTooLow, payer=other.address, allowance=0, amount=7 * OPEN
    ):
        payments.depositWithPermit(node, 7 * OPEN, deadline, v, r, s, sender=other)


def test_deposit_with_permit_allowance_below_amount_reverts(setup, token, payments, other, node):
    deadline = later()
    v, r, s = sign_permit(other, token, payments, 3 * OPEN, deadline)
    token.permit(other, payments, 3 * OPEN, deadline, v, r, s, sender=node)
    with ape.reverts(
        payments.PermitAllowanceTooLow, payer=other.address, allowance=3 * OPEN, amount=7 * OPEN
    ):
        payments.depositWithPermit(node, 7 * OPEN, deadline, v, r, s, sender=other)


def test_deposit_with_permit_zero_amount_reverts(setup, token, payments, other, node):
    deadline = later()
    v, r, s = sign_permit(other, token, payments, 0, deadline)
    with ape.reverts(payments.PaymentsZeroAmount):
        payments.depositWithPermit(node, 0, deadline, v, r, s, sender=other)


def test_deposit_with_permit_to_zero_node_reverts_and_keeps_the_permit(
    setup, token, payments, other, node
):
    deadline = later()
    v, r, s = sign_permit(other, token, payments, OPEN, deadline)
    with ape.reverts(payments.PaymentsZeroAddress):
        payments.depositWithPermit(ZERO, OPEN, deadline, v, r, s, sender=other)
    assert token.nonces(other) == 0  # the permit was rolled back with the deposit


def test_deposit_with_permit_when_paused_reverts(setup, token, payments, governance, other, node):
    payments.pause(sender=governance)
    deadline = later()
    v, r, s = sign_permit(other, token, payments, OPEN, deadline)
    with ape.reverts(payments.EnforcedPause):
        payments.depositWithPermit(node, OPEN, deadline, v, r, s, sender=other)


# ---------------------------------------------------------------------------------- withdrawals


def test_request_withdrawal_sets_pending_and_unlock_time(setup, payments, payer, node):
    tx = payments.requestWithdrawal(node, 400 * OPEN, sender=payer)

    unlock_at = tx.timestamp + DAY
    assert tx.events == [payments.WithdrawalRequested(payer, node, 400 * OPEN, unlock_at)]
    # The balance stays redeemable during the delay.
    assert channel_of(payments, payer, node) == (DEPOSIT, 400 * OPEN, unlock_at, DAY)


def test_request_withdrawal_again_replaces_pending_and_restarts_delay(setup, payments, payer, node):
    payments.requestWithdrawal(node, 400 * OPEN, sender=payer)
    chain.pending_timestamp += DAY // 2
    tx = payments.requestWithdrawal(node, 100 * OPEN, sender=payer)

    assert channel_of(payments, payer, node)[1:3] == (100 * OPEN, tx.timestamp + DAY)


def test_request_withdrawal_zero_reverts(setup, payments, payer, node):
    with ape.reverts(payments.PaymentsZeroAmount):
        payments.requestWithdrawal(node, 0, sender=payer)


def test_request_withdrawal_above_balance_reverts(setup, payments, payer, node):
    with ape.reverts(
        payments.WithdrawalExceedsBalance,
        payer=payer.address,
        node=node.address,
        balance=DEPOSIT,
        amount=DEPOSIT + 1,
    ):
        payments.requestWithdrawal(node, DEPOSIT + 1, sender=payer)


def test_request_withdrawal_from_another_nodes_channel_reverts(setup, payments, payer, second_node):
    # The payer's deposit is in its channel with `node`: nothing to take from second_node's.
    with ape.reverts(
        payments.WithdrawalExceedsBalance,
        payer=payer.address,
        node=second_node.address,
        balance=0,
        amount=OPEN,
    ):
        payments.requestWithdrawal(second_node, OPEN, sender=payer)


def test_cancel_withdrawal_clears_pending(setup, payments, payer, node):
    payments.requestWithdrawal(node, 400 * OPEN, sender=payer)
    tx = payments.cancelWithdrawal(node, sender=payer)

    assert tx.events == [payments.WithdrawalCancelled(payer, node)]
    assert channel_of(payments, payer, node) == (DEPOSIT, 0, 0, DAY)
    chain.pending_timestamp += 2 * DAY
    with ape.reverts(payments.NoWithdrawalPending, payer=payer.address, node=node.address):
        payments.withdraw(node, sender=payer)


def test_cancel_withdrawal_without_request_reverts(setup, payments, payer, node):
    with ape.reverts(payments.NoWithdrawalPending, payer=payer.address, node=node.address):
        payments.cancelWithdrawal(node, sender=payer)


def test_withdraw_before_delay_reverts_locked(setup, payments, payer, node):
    tx = payments.requestWithdrawal(node, 400 * OPEN, sender=payer)
    unlock_at = tx.timestamp + DAY
    chain.pending_timestamp = unlock_at - 1
    with ape.reverts(
        payments.WithdrawalLocked,
        payer=payer.address,
        node=node.address,
        unlockAt=unlock_at,
        nowTimestamp=unlock_at - 1,
    ):
        payments.withdraw(node, sender=payer)


def test_withdraw_at_unlock_time_pays_pending(setup, token, payments, payer, node, conserved):
    tx = payments.requestWithdrawal(node, 400 * OPEN, sender=payer)
    chain.pending_timestamp = tx.timestamp + DAY
    before = token.balanceOf(payer)

    tx = payments.withdraw(node, sender=payer)

    assert tx.events.filter(payments.Withdrawn) == [payments.Withdrawn(payer, node, 400 * OPEN)]
    assert token.balanceOf(payer) == before + 400 * OPEN
    assert channel_of(payments, payer, node) == (DEPOSIT - 400 * OPEN, 0, 0, DAY)
    conserved()


def test_withdraw_at_the_end_of_the_window_pays(setup, token, payments, payer, node):
    tx = payments.requestWithdrawal(node, 400 * OPEN, sender=payer)
    chain.pending_timestamp = tx.timestamp + DAY + DAY  # unlockAt + WITHDRAWAL_WINDOW
    tx = payments.withdraw(node, sender=payer)
    assert tx.events.filter(payments.Withdrawn) == [payments.Withdrawn(payer, node, 400 * OPEN)]


def test_withdraw_without_request_reverts(setup, payments, payer, node):
    with ape.reverts(payments.NoWithdrawalPending, payer=payer.address, node=node.address):
        payments.withdraw(node, sender=payer)


def test_withdraw_twice_reverts_no_pending(setup, payments, payer, node):
    payments.requestWithdrawal(node, OPEN, sender=payer)
    chain.pending_timestamp += DAY
    payments.withdraw(node, sender=payer)
    with ape.reverts(payments.NoWithdrawalPending, payer=payer.address, node=node.address):
        payments.withdraw(node, sender=payer)


def test_withdraw_after_redemptions_pays_only_what_is_left(
    setup, token, payments, payer, node, protocol, conserved
):
    payments.requestWithdrawal(node, DEPOSIT, sender=payer)
    redeem(payments, node, [signed(payer, protocol.domain, payer, node, setup.model_a, 300 * OPEN)])
    chain.pending_timestamp += DAY
    before = token.balanceOf(payer)

    tx = payments.withdraw(node, sender=payer)

    assert tx.events.filter(payments.Withdrawn) == [payments.Withdrawn(payer, node, 700 * OPEN)]
    assert token.balanceOf(payer) == before + 700 * OPEN
    assert channel_of(payments, payer, node) == (0, 0, 0, DAY)
    conserved()


def test_withdraw_of_a_channel_redeemed_empty_pays_nothing(
    setup, token, payments, payer, node, protocol, conserved
):
    payments.requestWithdrawal(node, DEPOSIT, sender=payer)
    redeem(payments, node, [signed(payer, protocol.domain, payer, node, setup.model_a, DEPOSIT)])
    chain.pending_timestamp += DAY
    before = token.balanceOf(payer)

    tx = payments.withdraw(node, sender=payer)

    assert tx.events == [payments.Withdrawn(payer, node, 0)]  # and no transfer
    assert token.balanceOf(payer) == before
    assert channel_of(payments, payer, node) == (0, 0, 0, DAY)
    conserved()


def test_withdraw_from_one_channel_leaves_the_others(
    setup, token, payments, payer, node, second_node, conserved
):
    fund(token, payments, payer, second_node, 50 * OPEN)
    payments.requestWithdrawal(second_node, 50 * OPEN, sender=payer)
    chain.pending_timestamp += DAY

    tx = payments.withdraw(second_node, sender=payer)

    assert tx.events.filter(payments.Withdrawn) == [
        payments.Withdrawn(payer, second_node, 50 * OPEN)
    ]
    assert channel_of(payments, payer, node) == (DEPOSIT, 0, 0, DAY)
    with ape.reverts(payments.NoWithdrawalPending, payer=payer.address, node=node.address):
        payments.withdraw(node, sender=payer)
    conserved()


# ---------------------------------------------------------------------------------- session keys


def authorization_sig(
    payer: Any,
    protocol: Any,
    expiry: int,
    deadline: int,
    *,
    node: Any,
    allowance: int = ALLOWANCE,
    nonce: int | None = None,
    signer: Any = None,
) -> tuple[int, bytes, bytes]:
    """(v, r, s) of `payer`'s SessionKeyAuthorization for SESSION_KEY on its channel with
    `node` (at the payer's current nonce unless given), signed by `signer` (default: payer)."""
    nonce = protocol.payments.nonces(payer) if nonce is None else nonce
    authorization = SessionKeyAuthorization(
        payer.address, node.address, SESSION_KEY.address, expiry, allowance, nonce, deadline
    )
    sig = sign_session_key((signer or payer).private_key, protocol.domain, authorization)
    return sig.v, sig.r, sig.s


def authorization_recovers_to(
    domain: Domain, authorization: SessionKeyAuthorization, vrs: tuple[int, bytes, bytes]
) -> str:
    """The address the contract recovers from `vrs` over `authorization` (another nonce or
    node than signed gives some unrelated address)."""
    signable = encode_typed_data(
        full_message={
            "types": {
                "EIP712Domain": [
                    {"name": "name", "type": "string"},
                    {"name": "version", "type": "string"},
                    {"name": "chainId", "type": "uint256"},
                    {"name": "verifyingContract", "type": "address"},
                ],
                "SessionKeyAuthorization": SESSION_KEY_TYPE,
            },
            "primaryType": "SessionKeyAuthorization",
            "domain": domain.as_dict(),
            "message": authorization.message(),
        }
    )
    return EthAccount.recover_message(signable, signature=Signature(*vrs).to_bytes())


def test_authorize_session_key_records_the_key_on_its_channel(
    setup, payments, payer, node, second_node
):
    expiry = later()
    tx = authorize(payments, payer, node, expiry=expiry)

    assert tx.events == [
        payments.SessionKeyAuthorized(payer, node, SESSION_KEY.address, expiry, ALLOWANCE)
    ]
    assert key_of(payments, payer, node) == (expiry, ALLOWANCE, 0)
    assert key_of(payments, payer, second_node) == (0, 0, 0)  # scoped to its node
    assert payments.sessionKey(payer, node, payer).validUntil == 0


def test_authorize_session_key_zero_signer_reverts(setup, payments, payer, node):
    with ape.reverts(payments.PaymentsZeroAddress):
        payments.authorizeSessionKey(node, ZERO, later(), ALLOWANCE, sender=payer)


def test_authorize_session_key_zero_node_reverts(setup, payments, payer):
    with ape.reverts(payments.PaymentsZeroAddress):
        payments.authorizeSessionKey(ZERO, SESSION_KEY.address, later(), ALLOWANCE, sender=payer)


def test_authorize_session_key_expiry_not_in_future_reverts(setup, payments, payer, node):
    now = chain.pending_timestamp
    with ape.reverts(payments.SessionKeyExpiryInPast, expiry=now):
        authorize(payments, payer, node, expiry=now)


def test_authorize_session_key_expiry_above_uint64_reverts(setup, payments, payer, node):
    with ape.reverts(payments.SafeCastOverflowedUintDowncast, bits=64, value=2**64):
        authorize(payments, payer, node, expiry=2**64)


def test_authorize_session_key_allowance_above_uint96_reverts(setup, payments, payer, node):
    with ape.reverts(payments.SessionKeyAllowanceTooHigh, allowance=2**96):
        authorize(payments, payer, node, allowance=2**96)


def test_authorize_session_key_allowance_at_uint96_max_is_recorded(setup, payments, payer, node):
    authorize(payments, payer, node, allowance=2**96 - 1)
    assert key_of(payments, payer, node)[1] == 2**96 - 1


def test_authorize_live_session_key_again_extends_it_and_keeps_what_it_spent(
    setup, payments, payer, node, protocol
):
    authorize(payments, payer, node, expiry=later(DAY))
    redeem(payments, node, [signed(SESSION_KEY, protocol.domain, payer, node, setup.model_a, OPEN)])
    expiry = later(2 * DAY)

    tx = authorize(payments, payer, node, expiry=expiry, allowance=2 * ALLOWANCE)

    assert tx.events == [
        payments.SessionKeyAuthorized(payer, node, SESSION_KEY.address, expiry, 2 * ALLOWANCE)
    ]
    assert key_of(payments, payer, node) == (expiry, 2 * ALLOWANCE, OPEN)


@pytest.mark.parametrize(
    ("expiry_change", "allowance_change"), [(-1, 0), (0, -1)], ids=["expiry", "allowance"]
)
def test_authorize_live_session_key_with_less_reverts_reduction(
    setup, payments, payer, node, expiry_change, allowance_change
):
    expiry = later(DAY)
    authorize(payments, payer, node, expiry=expiry)
    with ape.reverts(payments.SessionKeyReduction, validUntil=expiry, allowance=ALLOWANCE):
        authorize(
            payments,
            payer,
            node,
            expiry=expiry + expiry_change,
            allowance=ALLOWANCE + allowance_change,
        )
    assert key_of(payments, payer, node) == (expiry, ALLOWANCE, 0)


def test_authorize_revoked_key_in_grace_with_less_reverts_reduction(setup, payments, payer, node):
    authorize(payments, payer, node)
    grace_end = payments.revokeSessionKey(node, SESSION_KEY.address, sender=payer).timestamp + DAY
    with ape.reverts(payments.SessionKeyReduction, validUntil=grace_end, allowance=ALLOWANCE):
        authorize(payments, payer, node, expiry=grace_end - 1)


def test_authorize_expired_session_key_again_starts_afresh(setup, payments, payer, node, protocol):
    expiry = later(3_600)
    authorize(payments, payer, node, expiry=expiry)
    redeem(payments, node, [signed(SESSION_KEY, protocol.domain, payer, node, setup.model_a, OPEN)])
    chain.pending_timestamp = expiry + 1
    new_expiry = later(60)

    authorize(payments, payer, node, expiry=new_expiry, allowance=OPEN)  # less is fine now

    assert key_of(payments, payer, node) == (new_expiry, OPEN, 0)


def test_authorize_session_key_with_sig_submitted_by_other(
    setup, payments, payer, other, node, protocol
):
    expiry, deadline = later(7 * DAY), later()
    v, r, s = authorization_sig(payer, protocol, expiry, deadline, node=node)
    assert payments.nonces(payer) == 0

    tx = payments.authorizeSessionKeyWithSig(
        payer, node, SESSION_KEY.address, expiry, ALLOWANCE, deadline, v, r, s, sender=other
    )

    assert tx.events == [
        payments.SessionKeyAuthorized(payer, node, SESSION_KEY.address, expiry, ALLOWANCE)
    ]
    assert key_of(payments, payer, node) == (expiry, ALLOWANCE, 0)
    assert payments.nonces(payer) == 1


def test_authorize_session_key_with_sig_replayed_reverts(
    setup, payments, payer, other, node, protocol
):
    expiry, deadline = later(7 * DAY), later()
    vrs = authorization_sig(payer, protocol, expiry, deadline, node=node)
    args = (payer, node, SESSION_KEY.address, expiry, ALLOWANCE, deadline, *vrs)
    payments.authorizeSessionKeyWithSig(*args, sender=other)

    # Signed for nonce 0; the contract now checks nonce 1, so it recovers some other address.
    replayed = SessionKeyAuthorization(
        payer.address, node.address, SESSION_KEY.address, expiry, ALLOWANCE, 1, deadline
    )
    recovered = authorization_recovers_to(protocol.domain, replayed, vrs)
    with ape.reverts(payments.InvalidAuthorizationSignature, payer=payer.address, signer=recovered):
        payments.authorizeSessionKeyWithSig(*args, sender=other)
    assert payments.nonces(payer) == 1


@pytest.mark.parametrize("field", ["node", "signer", "expiry", "allowance"])
def test_authorize_session_key_with_sig_for_other_terms_reverts(
    setup, payments, payer, other, node, second_node, protocol, field
):
    """A relayer cannot retarget a signed authorization to another node or key, nor stretch it."""
    signed_for = SessionKeyAuthorization(
        payer.address, node.address, SESSION_KEY.address, later(7 * DAY), ALLOWANCE, 0, later()
    )
    sig = sign_session_key(payer.private_key, protocol.domain, signed_for)
    vrs = (sig.v, sig.r, sig.s)
    changes = {
        "node": second_node.address,
        "signer": other.address,
        "expiry": signed_for.expiry + 1,
        "allowance": ALLOWANCE + 1,
    }
    submitted = replace(signed_for, **{field: changes[field]})
    recovered = authorization_recovers_to(protocol.domain, submitted, vrs)
    with ape.reverts(payments.InvalidAuthorizationSignature, payer=payer.address, signer=recovered):
        payments.authorizeSessionKeyWithSig(
            payer,
            submitted.node,
            submitted.signer,
            submitted.expiry,
            submitted.allowance,
            submitted.deadline,
            *vrs,
            sender=other,
        )
    assert payments.nonces(payer) == 0


def test_authorize_session_key_with_sig_wrong_signer_reverts(
    setup, payments, payer, other, node, protocol
):
    expiry, deadline = later(7 * DAY), later()
    v, r, s = authorization_sig(payer, protocol, expiry, deadline, node=node, signer=other)
    with ape.reverts(
        payments.InvalidAuthorizationSignature, payer=payer.address, signer=other.address
    ):
        payments.authorizeSessionKeyWithSig(
            payer, node, SESSION_KEY.address, expiry, ALLOWANCE, deadline, v, r, s, sender=other
        )


def test_authorize_session_key_with_sig_malformed_signature_reverts_with_zero_signer(
    setup, payments, payer, other, node, protocol
):
    expiry, deadline = later(7 * DAY), later()
    _, r, s = authorization_sig(payer, protocol, expiry, deadline, node=node)
    with ape.reverts(payments.InvalidAuthorizationSignature, payer=payer.address, signer=ZERO):
        payments.authorizeSessionKeyWithSig(
            payer, node, SESSION_KEY.address, expiry, ALLOWANCE, deadline, 29, r, s, sender=other
        )


def test_authorize_session_key_with_sig_future_nonce_reverts(
    setup, payments, payer, other, node, protocol
):
    expiry, deadline = later(7 * DAY), later()
    vrs = authorization_sig(payer, protocol, expiry, deadline, node=node, nonce=1)
    at_nonce_0 = SessionKeyAuthorization(
        payer.address, node.address, SESSION_KEY.address, expiry, ALLOWANCE, 0, deadline
    )
    recovered = authorization_recovers_to(protocol.domain, at_nonce_0, vrs)
    with ape.reverts(payments.InvalidAuthorizationSignature, payer=payer.address, signer=recovered):
        payments.authorizeSessionKeyWithSig(
            payer, node, SESSION_KEY.address, expiry, ALLOWANCE, deadline, *vrs, sender=other
        )


def test_authorize_session_key_with_sig_expired_deadline_reverts(
    setup, payments, payer, other, node, protocol
):
    expiry, deadline = later(7 * DAY), later(60)
    v, r, s = authorization_sig(payer, protocol, expiry, deadline, node=node)
    chain.pending_timestamp = deadline + 1
    with ape.reverts(payments.AuthorizationExpired, deadline=deadline):
        payments.authorizeSessionKeyWithSig(
            payer, node, SESSION_KEY.address, expiry, ALLOWANCE, deadline, v, r, s, sender=other
        )


def test_authorize_session_key_with_sig_past_expiry_reverts(
    setup, payments, payer, other, node, protocol
):
    expiry = chain.pending_timestamp
    deadline = later()
    v, r, s = authorization_sig(payer, protocol, expiry, deadline, node=node)
    with ape.reverts(payments.SessionKeyExpiryInPast, expiry=expiry):
        payments.authorizeSessionKeyWithSig(
            payer, node, SESSION_KEY.address, expiry, ALLOWANCE, deadline, v, r, s, sender=other
        )


def test_revoke_session_key_keeps_it_for_the_channel_delay_and_uses_the_nonce(
    setup, payments, payer, node
):
    authorize(payments, payer, node, expiry=later(7 * DAY))
    tx = payments.revokeSessionKey(node, SESSION_KEY.address, sender=payer)

    grace_end = tx.timestamp + DAY
    assert tx.events == [payments.SessionKeyRevoked(payer, node, SESSION_KEY.address, grace_end)]
    assert key_of(payments, payer, node) == (grace_end, ALLOWANCE, 0)
    assert payments.nonces(payer) == 1


def test_revoke_session_key_expiring_within_the_grace_keeps_its_expiry(
    setup, payments, payer, node
):
    expiry = later(3_600)
    authorize(payments, payer, node, expiry=expiry)
    tx = payments.revokeSessionKey(node, SESSION_KEY.address, sender=payer)

    assert tx.events == [payments.SessionKeyRevoked(payer, node, SESSION_KEY.address, expiry)]
    assert key_of(payments, payer, node) == (expiry, ALLOWANCE, 0)


def test_revoke_unknown_session_key_uses_the_nonce(setup, payments, payer, second_node):
    tx = payments.revokeSessionKey(second_node, SESSION_KEY.address, sender=payer)

    assert tx.events == [payments.SessionKeyRevoked(payer, second_node, SESSION_KEY.address, 0)]
    assert key_of(payments, payer, second_node) == (0, 0, 0)
    assert payments.nonces(payer) == 1


def test_redeem_voucher_signed_by_live_session_key_pays_and_counts_spent(
    setup, payments, payer, node, protocol
):
    authorize(payments, payer, node)
    voucher = signed(SESSION_KEY, protocol.domain, payer, node, setup.model_a, 5 * OPEN)

    tx = redeem(payments, node, [voucher])

    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(payer, node, setup.model_a, 5 * OPEN, 5 * OPEN, 0)
    ]
    assert key_of(payments, payer, node)[2] == 5 * OPEN
    assert payments.channel(payer, node).balance == DEPOSIT - 5 * OPEN


def test_redeem_payer_signed_voucher_does_not_count_against_a_key(
    setup, payments, payer, node, protocol
):
    authorize(payments, payer, node)
    redeem(payments, node, [signed(payer, protocol.domain, payer, node, setup.model_a, 500 * OPEN)])
    assert key_of(payments, payer, node)[2] == 0


def test_redeem_voucher_of_revoked_session_key_pays_until_the_grace_ends(
    setup, payments, payer, node, protocol
):
    authorize(payments, payer, node)
    domain = protocol.domain
    first = signed(SESSION_KEY, domain, payer, node, setup.model_a, 5 * OPEN, later(3 * DAY))
    second = signed(SESSION_KEY, domain, payer, node, setup.model_a, 8 * OPEN, later(3 * DAY))
    grace_end = payments.revokeSessionKey(node, SESSION_KEY.address, sender=payer).timestamp + DAY

    chain.pending_timestamp = grace_end  # still live at its validUntil
    assert paid_of(payments, redeem(payments, node, [first])) == [5 * OPEN]

    tx = redeem(payments, node, [second])  # a second later: the revocation took effect
    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, setup.model_a, 0, KEY_NOT_LIVE)
    ]
    assert payments.redeemed(payer, node, setup.model_a) == 5 * OPEN


def test_redeem_voucher_of_expired_session_key_is_skipped(setup, payments, payer, node, protocol):
    expiry = later(3_600)
    authorize(payments, payer, node, expiry=expiry)
    voucher = signed(SESSION_KEY, protocol.domain, payer, node, setup.model_a, 5 * OPEN, later())
    chain.pending_timestamp = expiry + 1  # the key is dead after its expiry; the voucher is not

    tx = redeem(payments, node, [voucher])

    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, setup.model_a, 0, KEY_NOT_LIVE)
    ]
    assert tx.events.filter(payments.VoucherRedeemed) == []
    assert payments.channel(payer, node).balance == DEPOSIT


def test_redeem_voucher_of_session_key_of_another_payer_is_skipped(
    setup, payments, payer, other, node, protocol
):
    authorize(payments, other, node)
    voucher = signed(SESSION_KEY, protocol.domain, payer, node, setup.model_a, 5 * OPEN)
    tx = redeem(payments, node, [voucher])
    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, setup.model_a, 0, INVALID_SIGNER)
    ]


def test_session_key_is_scoped_to_its_channels_node(
    setup, token, payments, payer, node, second_node, protocol, conserved
):
    fund(token, payments, payer, second_node, 50 * OPEN)
    authorize(payments, payer, node)  # a key of channel (payer, node) only
    voucher = signed(SESSION_KEY, protocol.domain, payer, second_node, setup.model_a, 5 * OPEN)

    tx = redeem(payments, second_node, [voucher])

    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, second_node, setup.model_a, 0, INVALID_SIGNER)
    ]
    assert payments.channel(payer, second_node).balance == 50 * OPEN
    conserved()


def test_stolen_session_key_is_bounded_by_its_allowance(
    setup, payments, payer, node, protocol, conserved
):
    """A thief (or a node colluding with one) holding the key signs a voucher for the whole
    deposit: it pays at most the key's allowance left, the rest is a shortfall."""
    domain = protocol.domain
    authorize(payments, payer, node)
    redeem(payments, node, [signed(SESSION_KEY, domain, payer, node, setup.model_a, 30 * OPEN)])

    theft = signed(SESSION_KEY, domain, payer, node, setup.model_b, DEPOSIT)
    tx = redeem(payments, node, [theft])

    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(
            payer, node, setup.model_b, DEPOSIT, 70 * OPEN, DEPOSIT - 70 * OPEN
        )
    ]
    assert key_of(payments, payer, node)[1:] == (ALLOWANCE, ALLOWANCE)
    assert payments.channel(payer, node).balance == DEPOSIT - ALLOWANCE

    # The spent key pays nothing more; vouchers the payer signs itself still pay.
    more = signed(SESSION_KEY, domain, payer, node, setup.model_a, 40 * OPEN)
    own = signed(payer, domain, payer, node, setup.model_a, 45 * OPEN)
    tx = redeem(payments, node, [more, own])
    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(payer, node, setup.model_a, 40 * OPEN, 0, 10 * OPEN),
        payments.VoucherRedeemed(payer, node, setup.model_a, 45 * OPEN, 15 * OPEN, 0),
    ]
    conserved()


def test_redeem_voucher_of_session_key_beyond_balance_pays_the_balance(
    setup, token, payments, other, node, protocol, conserved
):
    fund(token, payments, other, node, 4 * OPEN)
    authorize(payments, other, node)
    voucher = signed(SESSION_KEY, protocol.domain, other, node, setup.model_a, 10 * OPEN)

    tx = redeem(payments, node, [voucher])

    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(other, node, setup.model_a, 10 * OPEN, 4 * OPEN, 6 * OPEN)
    ]
    assert key_of(payments, other, node)[2] == 4 * OPEN
    conserved()


# ---------------------------------------------------------------------------------- vouchers


def test_voucher_digest_equals_python_voucher_digest(setup, payments, payer, node, protocol):
    voucher = Voucher(payer.address, node.address, setup.model_b, 123 * OPEN + 4, 1_900_000_000)
    onchain = payments.voucherDigest(
        (voucher.payer, voucher.node, voucher.model_id, voucher.cumulative_amount, voucher.deadline)
    )
    assert onchain == voucher_digest(protocol.domain, voucher)
    assert payments.domainSeparator() != bytes(32)
    assert protocol.domain.chain_id == chain.chain_id


def test_redeem_pays_cumulative_minus_already_redeemed(setup, payments, payer, node, protocol):
    domain = protocol.domain
    first = redeem(payments, node, [signed(payer, domain, payer, node, setup.model_a, 10 * OPEN)])
    second = redeem(payments, node, [signed(payer, domain, payer, node, setup.model_a, 25 * OPEN)])

    assert first.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(payer, node, setup.model_a, 10 * OPEN, 10 * OPEN, 0)
    ]
    assert second.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(payer, node, setup.model_a, 25 * OPEN, 15 * OPEN, 0)
    ]
    assert payments.redeemed(payer, node, setup.model_a) == 25 * OPEN
    assert payments.redeemed(payer, node, setup.model_b) == 0
    assert payments.channel(payer, node).balance == DEPOSIT - 25 * OPEN


def test_redeem_same_voucher_twice_is_skipped_not_above_redeemed(
    setup, payments, payer, node, protocol
):
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN)
    redeem(payments, node, [voucher])

    tx = redeem(payments, node, [voucher])

    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, setup.model_a, 0, NOT_ABOVE_REDEEMED)
    ]
    assert tx.events.filter(payments.VoucherRedeemed) == []
    assert tx.events.filter(payments.PaymentSplit) == []
    assert tx.events.filter(payments.UsageProofRecorded)[0].amount == 0
    assert payments.redeemed(payer, node, setup.model_a) == 10 * OPEN


def test_redeem_older_voucher_is_skipped_at_its_index(
    setup, token, payments, payer, other, node, protocol
):
    domain = protocol.domain
    fund(token, payments, other, node, 10 * OPEN)
    older = signed(payer, domain, payer, node, setup.model_a, 4 * OPEN)
    redeem(payments, node, [signed(payer, domain, payer, node, setup.model_a, 9 * OPEN)])
    fresh = signed(other, domain, other, node, setup.model_a, OPEN)

    tx = redeem(payments, node, [fresh, older])

    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, setup.model_a, 1, NOT_ABOVE_REDEEMED)
    ]
    assert paid_of(payments, tx) == [OPEN]


def test_redeem_zero_cumulative_voucher_is_skipped(setup, payments, payer, node, protocol):
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 0)
    tx = redeem(payments, node, [voucher])
    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, setup.model_a, 0, NOT_ABOVE_REDEEMED)
    ]


@pytest.mark.parametrize(
    ("field", "change"),
    [("model_id", 1), ("cumulative_amount", OPEN), ("deadline", 1)],
    ids=["another_model", "raised_amount", "later_deadline"],
)
def test_redeem_altered_voucher_is_skipped_invalid_signer(
    setup, payments, payer, node, protocol, field, change
):
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN)
    altered = replace(voucher.voucher, **{field: getattr(voucher.voucher, field) + change})

    tx = redeem(payments, node, [SignedVoucher(altered, voucher.signature)])

    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, altered.model_id, 0, INVALID_SIGNER)
    ]


def test_redeem_by_another_node_is_skipped_invalid_signer(
    setup, token, payments, payer, node, second_node, protocol
):
    fund(token, payments, payer, second_node, 50 * OPEN)
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN)
    # The digest now names second_node, so the signature recovers some unrelated address.
    tx = redeem(payments, second_node, [voucher])
    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, second_node, setup.model_a, 0, INVALID_SIGNER)
    ]
    assert payments.redeemed(payer, second_node, setup.model_a) == 0
    assert payments.channel(payer, second_node).balance == 50 * OPEN


@pytest.mark.parametrize("domain_change", ["chain_id", "contract"])
def test_redeem_voucher_for_another_domain_is_skipped(
    setup, payments, payer, node, protocol, domain_change
):
    domain = (
        Domain(protocol.domain.chain_id + 1, protocol.domain.verifying_contract)
        if domain_change == "chain_id"
        else Domain(protocol.domain.chain_id, protocol.rewards.address)
    )
    voucher = signed(payer, domain, payer, node, setup.model_a, 10 * OPEN)
    tx = redeem(payments, node, [voucher])
    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, setup.model_a, 0, INVALID_SIGNER)
    ]


def test_redeem_voucher_signed_by_wrong_key_is_skipped(
    setup, payments, payer, other, node, protocol
):
    voucher = signed(other, protocol.domain, payer, node, setup.model_a, 10 * OPEN)
    tx = redeem(payments, node, [voucher])
    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, setup.model_a, 0, INVALID_SIGNER)
    ]


def test_redeem_malformed_signature_is_skipped(setup, payments, payer, node, protocol):
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN)
    broken = SignedVoucher(voucher.voucher, replace(voucher.signature, v=29))
    tx = redeem(payments, node, [broken])
    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, setup.model_a, 0, INVALID_SIGNER)
    ]


def test_redeem_expired_voucher_is_skipped(setup, payments, payer, node, protocol):
    deadline = later(60)
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN, deadline)
    chain.pending_timestamp = deadline + 1
    tx = redeem(payments, node, [voucher])
    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, setup.model_a, 0, EXPIRED)
    ]
    assert payments.redeemed(payer, node, setup.model_a) == 0


def test_redeem_voucher_at_its_deadline_pays(setup, payments, payer, node, protocol):
    deadline = later(60)
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN, deadline)
    chain.pending_timestamp = deadline
    redeem(payments, node, [voucher])
    assert payments.redeemed(payer, node, setup.model_a) == 10 * OPEN


def test_redeem_by_unstaked_node_reverts(setup, payments, payer, other, protocol):
    voucher = signed(payer, protocol.domain, payer, other, setup.model_a, 10 * OPEN)
    with ape.reverts(payments.NodeNotActive, node=other.address):
        redeem(payments, other, [voucher])


def test_redeem_by_node_below_min_stake_reverts(
    setup, nodes, payments, payer, node, governance, protocol
):
    nodes.setMinStake(nodes.minStake() + 1, sender=governance)
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN)
    with ape.reverts(payments.NodeNotActive, node=node.address):
        redeem(payments, node, [voucher])


def test_redeem_unknown_model_reverts(setup, models, payments, payer, node, protocol):
    unknown = setup.model_b + 1
    voucher = signed(payer, protocol.domain, payer, node, unknown, 10 * OPEN)
    with ape.reverts(models.UnknownModel, modelId=unknown):
        redeem(payments, node, [voucher])


def test_redeem_empty_batch_reverts(setup, payments, node):
    with ape.reverts(payments.EmptyRedemption):
        payments.redeem([], NO_PROOF, sender=node)


# ---------------------------------------------------------------------------------- redemption


@pytest.mark.parametrize("amount", [10 * OPEN, 123_456_789_123_456_789_011, 9_999])
def test_redeem_splits_payment_by_model_split(
    setup, token, payments, rewards, payer, node, developer, treasury, protocol, conserved, amount
):
    shares = split_of(amount, SPLIT_A)
    tx = redeem(
        payments, node, [signed(payer, protocol.domain, payer, node, setup.model_a, amount)]
    )

    assert tx.events.filter(payments.PaymentSplit) == [
        payments.PaymentSplit(
            modelId=setup.model_a, node=node, developer=developer, amount=amount, **shares
        )
    ]
    assert payments.earnings(node) == shares["nodeShare"]
    assert payments.earnings(developer) == shares["developerShare"]
    assert payments.earnings(treasury) == shares["protocolShare"]
    pool = rewards.pool(setup.model_a)
    assert (pool.unallocated, pool.funded) == (shares["contributorsShare"],) * 2
    assert tx.events.filter(rewards.PoolFunded) == [
        rewards.PoolFunded(setup.model_a, payments.address, shares["contributorsShare"])
    ]
    # The contributors get their exact bps plus the dust of the three other floors (< 3 wei).
    assert 0 <= shares["contributorsShare"] * 10_000 - amount * SPLIT_A[1] < 3 * 10_000
    assert token.balanceOf(rewards) == shares["contributorsShare"]
    conserved()


def test_redeem_beyond_balance_pays_balance_and_records_shortfall(
    setup, token, payments, other, node, protocol, conserved
):
    fund(token, payments, other, node, 4 * OPEN)
    voucher = signed(other, protocol.domain, other, node, setup.model_b, 10 * OPEN)

    tx = redeem(payments, node, [voucher])

    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(other, node, setup.model_b, 10 * OPEN, 4 * OPEN, 6 * OPEN)
    ]
    assert tx.events.filter(payments.PaymentSplit)[0].amount == 4 * OPEN
    assert payments.redeemed(other, node, setup.model_b) == 4 * OPEN
    assert payments.channel(other, node).balance == 0
    conserved()

    # An empty channel pays nothing, splits nothing, and the pair does not move.
    tx = redeem(payments, node, [voucher])
    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(other, node, setup.model_b, 10 * OPEN, 0, 6 * OPEN)
    ]
    assert tx.events.filter(payments.PaymentSplit) == []
    assert payments.redeemed(other, node, setup.model_b) == 4 * OPEN

    # A top-up lets the same voucher be redeemed for the rest.
    fund(token, payments, other, node, 20 * OPEN)
    tx = redeem(payments, node, [voucher])
    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(other, node, setup.model_b, 10 * OPEN, 6 * OPEN, 0)
    ]
    assert payments.redeemed(other, node, setup.model_b) == 10 * OPEN
    assert payments.channel(other, node).balance == 14 * OPEN
    conserved()


def test_redeem_during_withdrawal_delay_beats_the_withdrawal(
    setup, token, payments, payer, node, protocol, conserved
):
    domain = protocol.domain
    promised = signed(payer, domain, payer, node, setup.model_a, 300 * OPEN, later(3 * DAY))
    late = signed(payer, domain, payer, node, setup.model_a, 500 * OPEN, later(3 * DAY))
    payments.requestWithdrawal(node, DEPOSIT, sender=payer)  # the payer tries to take it all back

    chain.pending_timestamp += DAY // 2
    assert paid_of(payments, redeem(payments, node, [promised])) == [300 * OPEN]
    assert payments.channel(payer, node).pendingWithdrawal == DEPOSIT

    chain.pending_timestamp += DAY // 2
    before = token.balanceOf(payer)
    tx = payments.withdraw(node, sender=payer)
    assert tx.events.filter(payments.Withdrawn) == [payments.Withdrawn(payer, node, 700 * OPEN)]
    assert token.balanceOf(payer) == before + 700 * OPEN

    tx = redeem(payments, node, [late])
    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(payer, node, setup.model_a, 500 * OPEN, 0, 200 * OPEN)
    ]
    assert payments.redeemed(payer, node, setup.model_a) == 300 * OPEN
    conserved()


def test_redeem_after_partial_withdrawal_pays_what_is_left(
    setup, payments, payer, node, protocol, conserved
):
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 500 * OPEN, later(3 * DAY))
    payments.requestWithdrawal(node, 900 * OPEN, sender=payer)
    chain.pending_timestamp += DAY
    payments.withdraw(node, sender=payer)

    tx = redeem(payments, node, [voucher])

    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(payer, node, setup.model_a, 500 * OPEN, 100 * OPEN, 400 * OPEN)
    ]
    assert payments.channel(payer, node).balance == 0
    conserved()


def test_redeem_batch_of_many_payers_splits_once_per_model_run(
    setup,
    token,
    payments,
    rewards,
    payer,
    other,
    contributor,
    curator,
    challenger,
    node,
    developer,
    treasury,
    protocol,
    conserved,
):
    domain = protocol.domain
    a, b = setup.model_a, setup.model_b
    for account in (other, contributor, curator, challenger):
        fund(token, payments, account, node, 50 * OPEN)
    redeem(payments, node, [signed(payer, domain, payer, node, a, 2 * OPEN)])  # earlier redemption
    node_before, dev_before, treasury_before = (
        payments.earnings(node),
        payments.earnings(developer),
        payments.earnings(treasury),
    )
    pool_a_before = rewards.pool(a).funded
    # (payer, model, cumulative, expected paid)
    batch = [
        (payer, a, 7 * OPEN + 3, 5 * OPEN + 3),
        (other, a, 11 * OPEN + 1, 11 * OPEN + 1),
        (payer, b, 13 * OPEN + 7, 13 * OPEN + 7),
        (contributor, b, OPEN + 5, OPEN + 5),
        (curator, b, 60 * OPEN, 50 * OPEN),  # shortfall 10 OPEN
        (challenger, a, 3 * OPEN + 9, 3 * OPEN + 9),
    ]
    vouchers = [signed(p, domain, p, node, m, c) for p, m, c, _ in batch]

    tx = redeem(payments, node, vouchers, (ROOT, 6, "bafy-receipts"))

    prior = {(payer.address, a): 2 * OPEN}  # redeemed before the batch
    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(p, node, m, c, paid, c - paid - prior.get((p.address, m), 0))
        for p, m, c, paid in batch
    ]
    assert tx.events.filter(payments.VoucherSkipped) == []
    runs = [(a, batch[0][3] + batch[1][3]), (b, sum(x[3] for x in batch[2:5])), (a, batch[5][3])]
    expected = [(m, amount, split_of(amount, setup.splits[m])) for m, amount in runs]
    assert tx.events.filter(payments.PaymentSplit) == [
        payments.PaymentSplit(modelId=m, node=node, developer=developer, amount=amount, **shares)
        for m, amount, shares in expected
    ]
    total = sum(x[3] for x in batch)
    proof = tx.events.filter(payments.UsageProofRecorded)[0]
    assert (proof.proofId, proof.amount) == (2, total)  # the earlier redemption recorded 1
    assert payments.earnings(node) - node_before == sum(s["nodeShare"] for *_, s in expected)
    assert payments.earnings(developer) - dev_before == sum(
        s["developerShare"] for *_, s in expected
    )
    assert payments.earnings(treasury) - treasury_before == sum(
        s["protocolShare"] for *_, s in expected
    )
    assert rewards.pool(a).funded - pool_a_before == (
        expected[0][2]["contributorsShare"] + expected[2][2]["contributorsShare"]
    )
    assert rewards.pool(b).funded == expected[1][2]["contributorsShare"]
    for p, m, _, paid in batch:
        assert payments.redeemed(p, node, m) == paid + prior.get((p.address, m), 0)
    conserved()


def test_redeem_same_pair_twice_in_one_batch_pays_the_increase(
    setup, payments, payer, node, protocol, conserved
):
    domain = protocol.domain
    vouchers = [signed(payer, domain, payer, node, setup.model_a, c * OPEN) for c in (3, 8)]

    tx = redeem(payments, node, vouchers)

    assert paid_of(payments, tx) == [3 * OPEN, 5 * OPEN]
    assert len(tx.events.filter(payments.PaymentSplit)) == 1
    assert payments.redeemed(payer, node, setup.model_a) == 8 * OPEN
    conserved()


def test_redeem_skipped_voucher_inside_a_model_run_keeps_one_split(
    setup, token, payments, payer, other, node, protocol, conserved
):
    domain = protocol.domain
    fund(token, payments, other, node, 10 * OPEN)
    bad = signed(other, domain, payer, node, setup.model_a, 5 * OPEN)  # not the payer's key
    vouchers = [
        signed(payer, domain, payer, node, setup.model_a, 2 * OPEN),
        bad,
        signed(other, domain, other, node, setup.model_a, 3 * OPEN),
    ]

    tx = redeem(payments, node, vouchers)

    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, setup.model_a, 1, INVALID_SIGNER)
    ]
    assert [e.amount for e in tx.events.filter(payments.PaymentSplit)] == [5 * OPEN]
    conserved()


def test_redeem_records_usage_proof(setup, payments, payer, node, protocol):
    domain = protocol.domain
    assert payments.usageProofCount() == 0
    first = redeem(
        payments,
        node,
        [signed(payer, domain, payer, node, setup.model_a, 9 * OPEN)],
        (ROOT, 42, "bafy-receipts-1"),
    )
    second = redeem(
        payments,
        node,
        [signed(payer, domain, payer, node, setup.model_b, 2 * OPEN)],
        (bytes(32), 1, "bafy-receipts-2"),
    )

    assert first.events.filter(payments.UsageProofRecorded) == [
        payments.UsageProofRecorded(1, node, ROOT, 42, "bafy-receipts-1", 9 * OPEN)
    ]
    assert second.events.filter(payments.UsageProofRecorded)[0].proofId == 2
    assert payments.usageProofCount() == 2
    record = payments.usageRecord(1)
    assert record.receiptsRoot == ROOT
    assert record.node == node.address
    assert record.receiptCount == 42
    assert record.recordedAt == first.timestamp
    assert record.amount == 9 * OPEN
    assert payments.usageRecord(2).amount == 2 * OPEN
    assert payments.usageRecord(3).node == ZERO


# ---------------------------------------------------------------------------------- earnings


def test_withdraw_earnings_pays_node_developer_and_treasury(
    setup, token, payments, payer, node, developer, treasury, protocol, conserved
):
    amount = 77 * OPEN + 13
    redeem(payments, node, [signed(payer, protocol.domain, payer, node, setup.model_a, amount)])
    shares = split_of(amount, SPLIT_A)
    for account, share in (
        (node, shares["nodeShare"]),
        (developer, shares["developerShare"]),
        (treasury, shares["protocolShare"]),
    ):
        before = token.balanceOf(account)
        tx = payments.withdrawEarnings(sender=account)
        assert tx.events.filter(payments.EarningsWithdrawn) == [
            payments.EarningsWithdrawn(account, share)
        ]
        assert token.balanceOf(account) == before + share
        assert payments.earnings(account) == 0
    conserved()
    assert token.balanceOf(payments) == DEPOSIT - amount


def test_withdraw_earnings_without_earnings_reverts(setup, payments, other):
    with ape.reverts(payments.NoEarnings, account=other.address):
        payments.withdrawEarnings(sender=other)


# ---------------------------------------------------------------------------------- pause


def test_pause_blocks_deposits_but_not_redeem_withdraw_keys_or_earnings(
    setup, token, payments, governance, payer, node, protocol, conserved
):
    payments.requestWithdrawal(node, 100 * OPEN, sender=payer)
    payments.pause(sender=governance)
    token.approve(payments, OPEN, sender=payer)
    with ape.reverts(payments.EnforcedPause):
        payments.deposit(node, OPEN, sender=payer)

    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, OPEN)
    assert paid_of(payments, redeem(payments, node, [voucher])) == [OPEN]
    chain.pending_timestamp += DAY
    assert payments.withdraw(node, sender=payer).events.filter(payments.Withdrawn)[0].amount == (
        100 * OPEN
    )
    assert payments.withdrawEarnings(sender=node).events.filter(payments.EarningsWithdrawn)
    payments.requestWithdrawal(node, OPEN, sender=payer)
    payments.cancelWithdrawal(node, sender=payer)
    authorize(payments, payer, node)
    payments.revokeSessionKey(node, SESSION_KEY.address, sender=payer)
    conserved()


# ---------------------------------------------------------------------------------- governance


def test_set_withdrawal_delay_applies_to_channels_opened_later_only(
    setup, token, payments, governance, payer, other, node
):
    tx = payments.setWithdrawalDelay(3 * DAY, sender=governance)
    assert tx.events == [payments.WithdrawalDelaySet(3 * DAY)]
    assert payments.withdrawalDelay() == 3 * DAY

    # The open channel keeps the delay it opened with, for withdrawals and for revocations.
    tx = payments.requestWithdrawal(node, OPEN, sender=payer)
    assert channel_of(payments, payer, node)[2:] == (tx.timestamp + DAY, DAY)
    authorize(payments, payer, node)
    tx = payments.revokeSessionKey(node, SESSION_KEY.address, sender=payer)
    assert key_of(payments, payer, node)[0] == tx.timestamp + DAY

    tx = fund(token, payments, other, node, OPEN)
    assert tx.events.filter(payments.ChannelOpened) == [
        payments.ChannelOpened(other, node, 3 * DAY)
    ]
    tx = payments.requestWithdrawal(node, OPEN, sender=other)
    assert channel_of(payments, other, node)[2:] == (tx.timestamp + 3 * DAY, 3 * DAY)


def test_shorter_withdrawal_delay_does_not_shorten_an_open_channels_delay(
    setup, token, payments, governance, payer, node
):
    """Governance lowering the delay cannot cut the time `node` was promised to redeem in."""
    payments.setWithdrawalDelay(MIN_DELAY, sender=governance)
    tx = payments.requestWithdrawal(node, DEPOSIT, sender=payer)
    fund(token, payments, payer, node, OPEN)  # a later deposit does not reopen the channel
    chain.pending_timestamp = tx.timestamp + 2 * MIN_DELAY  # past the new delay, not the old
    with ape.reverts(
        payments.WithdrawalLocked,
        payer=payer.address,
        node=node.address,
        unlockAt=tx.timestamp + DAY,
        nowTimestamp=tx.timestamp + 2 * MIN_DELAY,
    ):
        payments.withdraw(node, sender=payer)
    assert channel_of(payments, payer, node)[3] == DAY


@pytest.mark.parametrize("delay", [MIN_DELAY, MAX_DELAY])
def test_set_withdrawal_delay_at_its_bounds(setup, payments, governance, delay):
    payments.setWithdrawalDelay(delay, sender=governance)
    assert payments.withdrawalDelay() == delay


@pytest.mark.parametrize("delay", [0, MIN_DELAY - 1, MAX_DELAY + 1])
def test_set_withdrawal_delay_out_of_bounds_reverts(setup, payments, governance, delay):
    with ape.reverts(
        payments.WithdrawalDelayOutOfBounds, delay=delay, min=MIN_DELAY, max=MAX_DELAY
    ):
        payments.setWithdrawalDelay(delay, sender=governance)


def test_set_treasury_receives_later_protocol_shares(
    setup, payments, governance, payer, node, other, treasury, protocol, conserved
):
    tx = payments.setTreasury(other, sender=governance)
    assert tx.events == [payments.TreasurySet(other)]
    assert payments.treasury() == other.address

    redeem(payments, node, [signed(payer, protocol.domain, payer, node, setup.model_a, 20 * OPEN)])
    assert payments.earnings(other) == 20 * OPEN * SPLIT_A[3] // 10_000
    assert payments.earnings(treasury) == 0
    conserved(other)


def test_set_treasury_zero_reverts(setup, payments, governance):
    with ape.reverts(payments.PaymentsZeroAddress):
        payments.setTreasury(ZERO, sender=governance)


@pytest.mark.parametrize(
    ("method", "args"), [("setWithdrawalDelay", (DAY,)), ("setTreasury", (ZERO,))]
)
def test_governance_setters_by_non_owner_revert(setup, payments, payer, method, args):
    with ape.reverts(payments.OwnableUnauthorizedAccount, account=payer.address):
        getattr(payments, method)(*args, sender=payer)


# ---------------------------------------------------------------------------------- findings
# Each test below is an attack on payments v1 (/tmp/v1) that v2 closes; the comment says what
# v1 did. On v1 each would fail (the v1 API differs too: v2's per-channel calls did not exist).


def test_finding1_one_bad_voucher_no_longer_blocks_the_batch(
    setup, token, payments, payer, other, contributor, curator, node, protocol, conserved
):
    """v1: redeem reverted as a whole on the first bad voucher (InvalidVoucherSigner for the
    revoked key at index 1, VoucherExpired at index 2), so no payer in the batch was paid; a
    payer could grief every batch its voucher was in by revoking its session key."""
    domain = protocol.domain
    a, b = setup.model_a, setup.model_b
    for account in (other, contributor, curator):
        fund(token, payments, account, node, 50 * OPEN)
    authorize(payments, payer, node)
    # The payer makes a request with its session key, then revokes the key ...
    revoked_key = signed(SESSION_KEY, domain, payer, node, a, 5 * OPEN, later(3 * DAY))
    grace_end = payments.revokeSessionKey(node, SESSION_KEY.address, sender=payer).timestamp + DAY
    # ... and another payer's voucher lapses.
    lapsing = signed(other, domain, other, node, a, 6 * OPEN, later(DAY // 2))
    good_a = signed(contributor, domain, contributor, node, a, 7 * OPEN, later(3 * DAY))
    good_b = signed(curator, domain, curator, node, b, 9 * OPEN, later(3 * DAY))
    chain.pending_timestamp = grace_end + 1  # past the key's grace and the voucher's deadline

    tx = redeem(payments, node, [good_a, revoked_key, lapsing, good_b], (ROOT, 4, "bafy-r"))

    assert tx.events.filter(payments.VoucherSkipped) == [
        payments.VoucherSkipped(payer, node, a, 1, KEY_NOT_LIVE),
        payments.VoucherSkipped(other, node, a, 2, EXPIRED),
    ]
    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(contributor, node, a, 7 * OPEN, 7 * OPEN, 0),
        payments.VoucherRedeemed(curator, node, b, 9 * OPEN, 9 * OPEN, 0),
    ]
    assert [e.amount for e in tx.events.filter(payments.PaymentSplit)] == [7 * OPEN, 9 * OPEN]
    assert tx.events.filter(payments.UsageProofRecorded)[0].amount == 16 * OPEN
    assert payments.redeemed(payer, node, a) == 0
    assert payments.redeemed(other, node, a) == 0
    assert payments.channel(payer, node).balance == DEPOSIT
    conserved()


def test_finding2_revoked_session_key_voucher_beats_the_payers_withdrawal(
    setup, token, payments, payer, node, protocol, conserved
):
    """v1: revokeSessionKey deleted the key at once, so the node's voucher for inference already
    served reverted InvalidVoucherSigner and the payer withdrew its whole deposit: free
    inference. v2: the revoked key keeps its power for the channel's delay, the delay the
    withdrawal waits too, so the node redeems the key's voucher in full before the money leaves
    and the withdrawal gets only what is left."""
    authorize(payments, payer, node)
    served = signed(SESSION_KEY, protocol.domain, payer, node, setup.model_a, 40 * OPEN)
    revoke = payments.revokeSessionKey(node, SESSION_KEY.address, sender=payer)
    request = payments.requestWithdrawal(node, DEPOSIT, sender=payer)
    unlock_at = request.timestamp + DAY
    grace_end = revoke.timestamp + DAY
    assert grace_end < unlock_at

    chain.pending_timestamp = grace_end  # the last second of the key's grace, still locked
    tx = redeem(payments, node, [served])
    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(payer, node, setup.model_a, 40 * OPEN, 40 * OPEN, 0)
    ]

    chain.pending_timestamp = unlock_at
    before = token.balanceOf(payer)
    tx = payments.withdraw(node, sender=payer)
    assert tx.events.filter(payments.Withdrawn) == [
        payments.Withdrawn(payer, node, DEPOSIT - 40 * OPEN)
    ]
    assert token.balanceOf(payer) == before + DEPOSIT - 40 * OPEN
    conserved()


def test_finding3_split_change_front_running_a_redemption_waits_the_delay(
    setup, models, payments, payer, node, developer, protocol
):
    """v1: setSplit applied at once, so a developer who saw the node's redemption in the mempool
    could front-run it with a node share of 0 and take the node's pay for inference it had
    served. v2: the change waits SPLIT_CHANGE_DELAY; redemptions until then use the old split."""
    domain = protocol.domain
    a = setup.model_a
    greedy = (7_500, 2_000, 0, 500)  # developer, contributors, node, protocol
    served = signed(payer, domain, payer, node, a, 100 * OPEN, later(3 * DAY))
    scheduled = models.setSplit(a, greedy, sender=developer)  # the front-run
    effective_at = scheduled.timestamp + models.SPLIT_CHANGE_DELAY()
    assert effective_at == scheduled.timestamp + DAY

    tx = redeem(payments, node, [served])

    old = split_of(100 * OPEN, SPLIT_A)
    assert tx.events.filter(payments.PaymentSplit)[0].nodeShare == old["nodeShare"] > 0
    assert payments.earnings(node) == old["nodeShare"]

    chain.pending_timestamp = effective_at - 1
    tx = redeem(payments, node, [signed(payer, domain, payer, node, a, 110 * OPEN, later())])
    assert (
        tx.events.filter(payments.PaymentSplit)[0].nodeShare
        == split_of(10 * OPEN, SPLIT_A)["nodeShare"]
    )

    chain.pending_timestamp = effective_at  # only now the new split applies
    tx = redeem(payments, node, [signed(payer, domain, payer, node, a, 120 * OPEN, later())])
    (split,) = tx.events.filter(payments.PaymentSplit)
    assert (split.nodeShare, split.developerShare) == (
        0,
        split_of(10 * OPEN, greedy)["developerShare"],
    )


def test_finding4_a_deposit_backs_only_its_own_node(
    setup, payments, payer, node, second_node, protocol, conserved
):
    """v1: one balance per payer backed every node, so another node (or the payer's own sybil
    node) could redeem first and spend what `node` had been promised and had served. v2: the
    deposit is in channel (payer, node); second_node's channel with the payer is empty."""
    domain = protocol.domain
    a = setup.model_a
    drain = signed(payer, domain, payer, second_node, a, DEPOSIT)

    tx = redeem(payments, second_node, [drain])

    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(payer, second_node, a, DEPOSIT, 0, DEPOSIT)
    ]
    assert tx.events.filter(payments.PaymentSplit) == []
    assert payments.channel(payer, second_node).balance == 0
    assert payments.earnings(second_node) == 0
    assert payments.channel(payer, node).balance == DEPOSIT  # node's guarantee is whole

    tx = redeem(payments, node, [signed(payer, domain, payer, node, a, DEPOSIT)])
    assert paid_of(payments, tx) == [DEPOSIT]
    conserved()


def test_finding5_revoke_kills_a_signed_authorization_not_yet_submitted(
    setup, payments, payer, other, node, protocol
):
    """v1: revokeSessionKey only deleted the key; an authorization the payer had signed (held
    by a relayer, or leaked) could still be submitted afterwards and bring the key back. v2:
    revoking uses up the payer's nonce, so the signed authorization no longer verifies."""
    expiry, deadline = later(7 * DAY), later()
    vrs = authorization_sig(payer, protocol, expiry, deadline, node=node)  # at nonce 0
    payments.revokeSessionKey(node, SESSION_KEY.address, sender=payer)
    assert payments.nonces(payer) == 1

    at_nonce_1 = SessionKeyAuthorization(
        payer.address, node.address, SESSION_KEY.address, expiry, ALLOWANCE, 1, deadline
    )
    recovered = authorization_recovers_to(protocol.domain, at_nonce_1, vrs)
    assert recovered != payer.address
    with ape.reverts(payments.InvalidAuthorizationSignature, payer=payer.address, signer=recovered):
        payments.authorizeSessionKeyWithSig(
            payer, node, SESSION_KEY.address, expiry, ALLOWANCE, deadline, *vrs, sender=other
        )
    assert key_of(payments, payer, node) == (0, 0, 0)


def test_finding6_withdrawal_request_lapses_after_the_window(
    setup, token, payments, payer, node, conserved
):
    """v1: a withdrawal request never expired, so a payer could request once, keep using the
    channel for months and withdraw at any moment with no notice to the nodes. v2: the request
    lapses WITHDRAWAL_WINDOW after unlocking; a new one restarts the delay."""
    request = payments.requestWithdrawal(node, 400 * OPEN, sender=payer)
    lapsed_at = request.timestamp + DAY + DAY  # unlockAt + WITHDRAWAL_WINDOW
    chain.pending_timestamp = lapsed_at + 1
    with ape.reverts(
        payments.WithdrawalLapsed, payer=payer.address, node=node.address, lapsedAt=lapsed_at
    ):
        payments.withdraw(node, sender=payer)

    again = payments.requestWithdrawal(node, 400 * OPEN, sender=payer)
    unlock_at = again.timestamp + DAY
    assert channel_of(payments, payer, node)[1:3] == (400 * OPEN, unlock_at)
    with ape.reverts(
        payments.WithdrawalLocked,
        payer=payer.address,
        node=node.address,
        unlockAt=unlock_at,
        nowTimestamp=chain.pending_timestamp,
    ):
        payments.withdraw(node, sender=payer)
    chain.pending_timestamp = unlock_at
    tx = payments.withdraw(node, sender=payer)
    assert tx.events.filter(payments.Withdrawn) == [payments.Withdrawn(payer, node, 400 * OPEN)]
    conserved()
