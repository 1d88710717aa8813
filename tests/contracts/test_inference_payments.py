"""InferencePayments: deposits, withdrawals, session keys, vouchers, splits, usage proofs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import ape
import pytest
from ape import chain
from eth_account import Account as EthAccount

from backend.protocol.eip712 import (
    Domain,
    Permit,
    SessionKeyAuthorization,
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
DEPOSIT = 1_000 * OPEN  # OPEN wei the payer deposits in the module setup
DAY = 86_400  # seconds
SPLIT_A = (4_000, 2_000, 3_500, 500)  # developer, contributors, node, protocol (bps)
SPLIT_B = (1_000, 3_000, 5_500, 500)
ZERO = "0x0000000000000000000000000000000000000000"
ROOT = bytes.fromhex("ab" * 32)  # a receipts Merkle root
NO_PROOF = (bytes(32), 0, "")


@dataclass(frozen=True)
class Key:
    """A key that signs but never sends transactions (an app's session key)."""

    address: str
    private_key: bytes


SESSION_KEY = Key(EthAccount.from_key(b"\x5e" * 32).address, b"\x5e" * 32)


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
    """A published Datanet version, two models trained on it, two staked nodes, a funded payer.
    (It asks for every session fixture the tests use, so that ape snapshots after them.)"""
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
    payments.deposit(DEPOSIT, sender=payer)
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
    """A voucher on channel (payer, node, model_id) signed by `signer` (a key holder)."""
    voucher = Voucher(payer.address, node.address, model_id, cumulative, deadline or later())
    return sign_voucher(signer.private_key, domain, voucher)


def redeem(payments: Any, node: Any, vouchers: Sequence[SignedVoucher], proof=NO_PROOF) -> Any:
    """The node redeems `vouchers` in one transaction."""
    return payments.redeem([v.redemption_tuple() for v in vouchers], proof, sender=node)


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


def sign_permit(owner: Any, token: Any, spender: Any, value: int, deadline: int) -> tuple:
    """(v, r, s) of an EIP-2612 permit signed by `owner` (backend.protocol.eip712)."""
    permit = Permit(owner.address, spender.address, value, token.nonces(owner), deadline)
    sig = eip712_sign_permit(owner.private_key, token_domain(chain.chain_id, token.address), permit)
    return sig.v, sig.r, sig.s


def assert_conserved(token, payments, rewards, setup: Setup, payers, earners) -> None:
    """Every OPEN wei the contracts hold is owed to someone: payers' balances and earnings in
    InferencePayments, the models' attribution pools in AttributionRewards."""
    owed = sum(payments.accountOf(p).balance for p in payers)
    owed += sum(payments.earnings(a) for a in earners)
    assert token.balanceOf(payments) == owed
    pools = sum(rewards.pool(m).funded for m in (setup.model_a, setup.model_b))
    assert token.balanceOf(rewards) == pools


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
    """Checks OPEN conservation over the role accounts (call it after the transactions)."""

    def check(*extra_earners: Any) -> None:
        payers = [payer, other, contributor, curator, challenger]
        earners = [node, second_node, developer, treasury, *extra_earners]
        assert_conserved(token, payments, rewards, setup, payers, earners)

    return check


def fund(token, payments, account, amount: int) -> None:
    token.approve(payments, amount, sender=account)
    payments.deposit(amount, sender=account)


# ---------------------------------------------------------------------------------- deposits


def test_deposit_credits_balance_and_emits_deposited(setup, token, payments, other):
    token.approve(payments, 5 * OPEN, sender=other)
    before = token.balanceOf(other)

    first = payments.deposit(2 * OPEN, sender=other)
    second = payments.deposit(3 * OPEN, sender=other)

    assert first.events.filter(payments.Deposited) == [
        payments.Deposited(other, 2 * OPEN, 2 * OPEN)
    ]
    assert second.events.filter(payments.Deposited) == [
        payments.Deposited(other, 3 * OPEN, 5 * OPEN)
    ]
    assert payments.accountOf(other).balance == 5 * OPEN
    assert token.balanceOf(other) == before - 5 * OPEN
    assert token.balanceOf(payments) == DEPOSIT + 5 * OPEN


def test_deposit_zero_reverts(setup, payments, other):
    with ape.reverts(payments.PaymentsZeroAmount):
        payments.deposit(0, sender=other)


def test_deposit_without_allowance_reverts(setup, token, payments, other):
    with ape.reverts(token.ERC20InsufficientAllowance, spender=payments.address, allowance=0):
        payments.deposit(OPEN, sender=other)


def test_deposit_when_paused_reverts(setup, token, payments, governance, other):
    payments.pause(sender=governance)
    token.approve(payments, OPEN, sender=other)
    with ape.reverts(payments.EnforcedPause):
        payments.deposit(OPEN, sender=other)


def test_deposit_with_permit_submitted_by_another_deposits_for_signer(
    setup, token, payments, other, node
):
    deadline = later()
    v, r, s = sign_permit(other, token, payments, 7 * OPEN, deadline)
    before = token.balanceOf(other)

    tx = payments.depositWithPermit(other, 7 * OPEN, deadline, v, r, s, sender=node)

    assert tx.events.filter(payments.Deposited) == [payments.Deposited(other, 7 * OPEN, 7 * OPEN)]
    assert payments.accountOf(other).balance == 7 * OPEN
    assert payments.accountOf(node).balance == 0
    assert token.balanceOf(other) == before - 7 * OPEN
    assert token.allowance(other, payments) == 0
    assert token.nonces(other) == 1


def test_deposit_with_permit_front_run_permit_still_deposits_for_the_payer(
    setup, token, payments, other, node
):
    deadline = later()
    v, r, s = sign_permit(other, token, payments, 7 * OPEN, deadline)
    token.permit(other, payments, 7 * OPEN, deadline, v, r, s, sender=node)  # the front-runner

    tx = payments.depositWithPermit(other, 7 * OPEN, deadline, v, r, s, sender=other)

    assert tx.events.filter(payments.Deposited) == [payments.Deposited(other, 7 * OPEN, 7 * OPEN)]
    assert payments.accountOf(other).balance == 7 * OPEN
    assert token.allowance(other, payments) == 0


def test_deposit_with_permit_failed_permit_submitted_by_another_reverts(
    setup, token, payments, other, node
):
    deadline = later()
    v, r, s = sign_permit(other, token, payments, 7 * OPEN, deadline)
    token.permit(other, payments, 7 * OPEN, deadline, v, r, s, sender=node)  # the front-runner
    with ape.reverts(payments.PermitRejected, payer=other.address):
        payments.depositWithPermit(other, 7 * OPEN, deadline, v, r, s, sender=node)
    assert payments.accountOf(other).balance == 0


def test_deposit_with_permit_cannot_sweep_a_standing_approval(setup, token, payments, other, node):
    token.approve(payments, 2**256 - 1, sender=other)  # the payer's standing approval
    deadline = later()
    v, r, s = sign_permit(node, token, payments, 7 * OPEN, deadline)  # not the payer's permit
    with ape.reverts(payments.PermitRejected, payer=other.address):
        payments.depositWithPermit(other, 7 * OPEN, deadline, v, r, s, sender=node)
    assert payments.accountOf(other).balance == 0


def test_deposit_with_permit_invalid_permit_and_no_allowance_reverts(
    setup, token, payments, other, node
):
    deadline = later()
    v, r, s = sign_permit(node, token, payments, 7 * OPEN, deadline)  # not the payer's permit
    with ape.reverts(
        payments.PermitAllowanceTooLow, payer=other.address, allowance=0, amount=7 * OPEN
    ):
        payments.depositWithPermit(other, 7 * OPEN, deadline, v, r, s, sender=other)


def test_deposit_with_permit_allowance_below_amount_reverts(setup, token, payments, other, node):
    deadline = later()
    v, r, s = sign_permit(other, token, payments, 3 * OPEN, deadline)
    token.permit(other, payments, 3 * OPEN, deadline, v, r, s, sender=node)
    with ape.reverts(
        payments.PermitAllowanceTooLow, payer=other.address, allowance=3 * OPEN, amount=7 * OPEN
    ):
        payments.depositWithPermit(other, 7 * OPEN, deadline, v, r, s, sender=other)


def test_deposit_with_permit_zero_amount_reverts(setup, token, payments, other, node):
    deadline = later()
    v, r, s = sign_permit(other, token, payments, 0, deadline)
    with ape.reverts(payments.PaymentsZeroAmount):
        payments.depositWithPermit(other, 0, deadline, v, r, s, sender=node)


def test_deposit_with_permit_when_paused_reverts(setup, token, payments, governance, other, node):
    payments.pause(sender=governance)
    deadline = later()
    v, r, s = sign_permit(other, token, payments, OPEN, deadline)
    with ape.reverts(payments.EnforcedPause):
        payments.depositWithPermit(other, OPEN, deadline, v, r, s, sender=node)


# ---------------------------------------------------------------------------------- withdrawals


def test_request_withdrawal_sets_pending_and_unlock_time(setup, payments, payer):
    tx = payments.requestWithdrawal(400 * OPEN, sender=payer)

    unlock_at = tx.timestamp + DAY
    assert tx.events == [payments.WithdrawalRequested(payer, 400 * OPEN, unlock_at)]
    account = payments.accountOf(payer)
    assert account.balance == DEPOSIT  # still redeemable during the delay
    assert account.pendingWithdrawal == 400 * OPEN
    assert account.withdrawalUnlockAt == unlock_at


def test_request_withdrawal_again_replaces_pending_and_restarts_delay(setup, payments, payer):
    payments.requestWithdrawal(400 * OPEN, sender=payer)
    chain.pending_timestamp += DAY // 2
    tx = payments.requestWithdrawal(100 * OPEN, sender=payer)

    account = payments.accountOf(payer)
    assert account.pendingWithdrawal == 100 * OPEN
    assert account.withdrawalUnlockAt == tx.timestamp + DAY


def test_request_withdrawal_zero_reverts(setup, payments, payer):
    with ape.reverts(payments.PaymentsZeroAmount):
        payments.requestWithdrawal(0, sender=payer)


def test_request_withdrawal_above_balance_reverts(setup, payments, payer):
    with ape.reverts(
        payments.WithdrawalExceedsBalance, payer=payer.address, balance=DEPOSIT, amount=DEPOSIT + 1
    ):
        payments.requestWithdrawal(DEPOSIT + 1, sender=payer)


def test_cancel_withdrawal_clears_pending(setup, payments, payer):
    payments.requestWithdrawal(400 * OPEN, sender=payer)
    tx = payments.cancelWithdrawal(sender=payer)

    assert tx.events == [payments.WithdrawalCancelled(payer)]
    account = payments.accountOf(payer)
    assert (account.balance, account.pendingWithdrawal, account.withdrawalUnlockAt) == (
        DEPOSIT,
        0,
        0,
    )
    chain.pending_timestamp += 2 * DAY
    with ape.reverts(payments.NoWithdrawalPending, payer=payer.address):
        payments.withdraw(sender=payer)


def test_cancel_withdrawal_without_request_reverts(setup, payments, payer):
    with ape.reverts(payments.NoWithdrawalPending, payer=payer.address):
        payments.cancelWithdrawal(sender=payer)


def test_withdraw_before_delay_reverts_locked(setup, payments, payer):
    tx = payments.requestWithdrawal(400 * OPEN, sender=payer)
    unlock_at = tx.timestamp + DAY
    chain.pending_timestamp = unlock_at - 1
    with ape.reverts(
        payments.WithdrawalLocked,
        payer=payer.address,
        unlockAt=unlock_at,
        nowTimestamp=unlock_at - 1,
    ):
        payments.withdraw(sender=payer)


def test_withdraw_at_unlock_time_pays_pending(setup, token, payments, payer):
    tx = payments.requestWithdrawal(400 * OPEN, sender=payer)
    chain.pending_timestamp = tx.timestamp + DAY
    before = token.balanceOf(payer)

    tx = payments.withdraw(sender=payer)

    assert tx.events.filter(payments.Withdrawn) == [payments.Withdrawn(payer, 400 * OPEN)]
    assert token.balanceOf(payer) == before + 400 * OPEN
    account = payments.accountOf(payer)
    assert (account.balance, account.pendingWithdrawal, account.withdrawalUnlockAt) == (
        DEPOSIT - 400 * OPEN,
        0,
        0,
    )


def test_withdraw_without_request_reverts(setup, payments, payer):
    with ape.reverts(payments.NoWithdrawalPending, payer=payer.address):
        payments.withdraw(sender=payer)


def test_withdraw_twice_reverts_no_pending(setup, payments, payer):
    payments.requestWithdrawal(OPEN, sender=payer)
    chain.pending_timestamp += DAY
    payments.withdraw(sender=payer)
    with ape.reverts(payments.NoWithdrawalPending, payer=payer.address):
        payments.withdraw(sender=payer)


def test_withdraw_after_redemptions_pays_only_what_is_left(
    setup, token, payments, payer, node, protocol, conserved
):
    payments.requestWithdrawal(DEPOSIT, sender=payer)
    redeem(payments, node, [signed(payer, protocol.domain, payer, node, setup.model_a, 300 * OPEN)])
    chain.pending_timestamp += DAY
    before = token.balanceOf(payer)

    tx = payments.withdraw(sender=payer)

    assert tx.events.filter(payments.Withdrawn) == [payments.Withdrawn(payer, 700 * OPEN)]
    assert token.balanceOf(payer) == before + 700 * OPEN
    assert payments.accountOf(payer).balance == 0
    conserved()


# ---------------------------------------------------------------------------------- session keys


def authorization_sig(
    payer, protocol, expiry: int, deadline: int, nonce: int | None = None, key: Any = None
):
    """(v, r, s) of `payer`'s SessionKeyAuthorization for SESSION_KEY (at the payer's current
    nonce unless given), signed by `key` (default: the payer)."""
    nonce = protocol.payments.nonces(payer) if nonce is None else nonce
    authorization = SessionKeyAuthorization(
        payer.address, SESSION_KEY.address, expiry, nonce, deadline
    )
    sig = sign_session_key((key or payer).private_key, protocol.domain, authorization)
    return sig.v, sig.r, sig.s


def test_authorize_session_key_records_expiry_and_emits(setup, payments, payer):
    expiry = later()
    tx = payments.authorizeSessionKey(SESSION_KEY.address, expiry, sender=payer)

    assert tx.events == [payments.SessionKeyAuthorized(payer, SESSION_KEY.address, expiry)]
    assert payments.sessionKeyExpiry(payer, SESSION_KEY.address) == expiry
    assert payments.sessionKeyExpiry(payer, payer) == 0


def test_authorize_session_key_zero_signer_reverts(setup, payments, payer):
    with ape.reverts(payments.PaymentsZeroAddress):
        payments.authorizeSessionKey(ZERO, later(), sender=payer)


def test_authorize_session_key_expiry_not_in_future_reverts(setup, payments, payer):
    now = chain.pending_timestamp
    with ape.reverts(payments.SessionKeyExpiryInPast, expiry=now):
        payments.authorizeSessionKey(SESSION_KEY.address, now, sender=payer)


def test_authorize_session_key_with_sig_submitted_by_other(setup, payments, payer, other, protocol):
    expiry = later(7 * DAY)
    v, r, s = authorization_sig(payer, protocol, expiry, later())
    assert payments.nonces(payer) == 0

    tx = payments.authorizeSessionKeyWithSig(
        payer, SESSION_KEY.address, expiry, later(), v, r, s, sender=other
    )

    assert tx.events == [payments.SessionKeyAuthorized(payer, SESSION_KEY.address, expiry)]
    assert payments.sessionKeyExpiry(payer, SESSION_KEY.address) == expiry
    assert payments.nonces(payer) == 1


def test_authorize_session_key_with_sig_replayed_reverts(setup, payments, payer, other, protocol):
    expiry, deadline = later(7 * DAY), later()
    v, r, s = authorization_sig(payer, protocol, expiry, deadline)
    payments.authorizeSessionKeyWithSig(
        payer, SESSION_KEY.address, expiry, deadline, v, r, s, sender=other
    )
    payments.revokeSessionKey(SESSION_KEY.address, sender=payer)

    # Signed for nonce 0; the contract now checks nonce 1, so it recovers some other address.
    with ape.reverts(payments.InvalidAuthorizationSignature, payer=payer.address):
        payments.authorizeSessionKeyWithSig(
            payer, SESSION_KEY.address, expiry, deadline, v, r, s, sender=other
        )
    assert payments.sessionKeyExpiry(payer, SESSION_KEY.address) == 0
    assert payments.nonces(payer) == 1


def test_authorize_session_key_with_sig_wrong_signer_reverts(
    setup, payments, payer, other, protocol
):
    expiry, deadline = later(7 * DAY), later()
    v, r, s = authorization_sig(payer, protocol, expiry, deadline, key=other)
    with ape.reverts(
        payments.InvalidAuthorizationSignature, payer=payer.address, signer=other.address
    ):
        payments.authorizeSessionKeyWithSig(
            payer, SESSION_KEY.address, expiry, deadline, v, r, s, sender=other
        )


def test_authorize_session_key_with_sig_future_nonce_reverts(
    setup, payments, payer, other, protocol
):
    expiry, deadline = later(7 * DAY), later()
    v, r, s = authorization_sig(payer, protocol, expiry, deadline, nonce=1)
    with ape.reverts(payments.InvalidAuthorizationSignature, payer=payer.address):
        payments.authorizeSessionKeyWithSig(
            payer, SESSION_KEY.address, expiry, deadline, v, r, s, sender=other
        )


def test_authorize_session_key_with_sig_expired_deadline_reverts(
    setup, payments, payer, other, protocol
):
    expiry, deadline = later(7 * DAY), later(60)
    v, r, s = authorization_sig(payer, protocol, expiry, deadline)
    chain.pending_timestamp = deadline + 1
    with ape.reverts(payments.AuthorizationExpired, deadline=deadline):
        payments.authorizeSessionKeyWithSig(
            payer, SESSION_KEY.address, expiry, deadline, v, r, s, sender=other
        )


def test_authorize_session_key_with_sig_past_expiry_reverts(
    setup, payments, payer, other, protocol
):
    expiry = chain.pending_timestamp
    deadline = later()
    v, r, s = authorization_sig(payer, protocol, expiry, deadline)
    with ape.reverts(payments.SessionKeyExpiryInPast, expiry=expiry):
        payments.authorizeSessionKeyWithSig(
            payer, SESSION_KEY.address, expiry, deadline, v, r, s, sender=other
        )


def test_revoke_session_key_clears_expiry_and_emits(setup, payments, payer):
    payments.authorizeSessionKey(SESSION_KEY.address, later(), sender=payer)
    tx = payments.revokeSessionKey(SESSION_KEY.address, sender=payer)

    assert tx.events == [payments.SessionKeyRevoked(payer, SESSION_KEY.address)]
    assert payments.sessionKeyExpiry(payer, SESSION_KEY.address) == 0


def test_redeem_voucher_signed_by_live_session_key_pays(setup, payments, payer, node, protocol):
    payments.authorizeSessionKey(SESSION_KEY.address, later(), sender=payer)
    voucher = signed(SESSION_KEY, protocol.domain, payer, node, setup.model_a, 5 * OPEN)

    tx = redeem(payments, node, [voucher])

    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(payer, node, setup.model_a, 5 * OPEN, 5 * OPEN, 0)
    ]


def test_redeem_voucher_signed_by_revoked_session_key_reverts(
    setup, payments, payer, node, protocol
):
    payments.authorizeSessionKey(SESSION_KEY.address, later(), sender=payer)
    voucher = signed(SESSION_KEY, protocol.domain, payer, node, setup.model_a, 5 * OPEN)
    payments.revokeSessionKey(SESSION_KEY.address, sender=payer)
    with ape.reverts(
        payments.InvalidVoucherSigner, index=0, payer=payer.address, signer=SESSION_KEY.address
    ):
        redeem(payments, node, [voucher])


def test_redeem_voucher_signed_by_expired_session_key_reverts(
    setup, payments, payer, node, protocol
):
    expiry = later(3_600)
    payments.authorizeSessionKey(SESSION_KEY.address, expiry, sender=payer)
    voucher = signed(SESSION_KEY, protocol.domain, payer, node, setup.model_a, 5 * OPEN, later())
    chain.pending_timestamp = expiry  # the key is dead at its expiry; the voucher is not
    with ape.reverts(
        payments.InvalidVoucherSigner, index=0, payer=payer.address, signer=SESSION_KEY.address
    ):
        redeem(payments, node, [voucher])


def test_redeem_voucher_signed_by_session_key_of_another_payer_reverts(
    setup, payments, payer, other, node, protocol
):
    payments.authorizeSessionKey(SESSION_KEY.address, later(), sender=other)
    voucher = signed(SESSION_KEY, protocol.domain, payer, node, setup.model_a, 5 * OPEN)
    with ape.reverts(
        payments.InvalidVoucherSigner, index=0, payer=payer.address, signer=SESSION_KEY.address
    ):
        redeem(payments, node, [voucher])


# ---------------------------------------------------------------------------------- vouchers


def test_voucher_digest_equals_python_voucher_digest(setup, payments, payer, node, protocol):
    voucher = Voucher(payer.address, node.address, setup.model_b, 123 * OPEN + 4, 1_900_000_000)
    onchain = payments.voucherDigest(
        (voucher.payer, voucher.node, voucher.model_id, voucher.cumulative_amount, voucher.deadline)
    )
    assert onchain == voucher_digest(protocol.domain, voucher)
    assert protocol.domain.chain_id == chain.chain_id


def test_redeem_pays_cumulative_minus_already_redeemed(
    setup, token, payments, payer, node, protocol
):
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
    assert payments.accountOf(payer).balance == DEPOSIT - 25 * OPEN


def test_redeem_same_voucher_twice_reverts_not_above_redeemed(
    setup, payments, payer, node, protocol
):
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN)
    redeem(payments, node, [voucher])
    with ape.reverts(
        payments.VoucherNotAboveRedeemed, index=0, cumulativeAmount=10 * OPEN, redeemed=10 * OPEN
    ):
        redeem(payments, node, [voucher])


def test_redeem_older_voucher_reverts_not_above_redeemed_at_its_index(
    setup, payments, payer, other, node, protocol
):
    domain = protocol.domain
    fund(protocol.token, payments, other, 10 * OPEN)
    older = signed(payer, domain, payer, node, setup.model_a, 4 * OPEN)
    redeem(payments, node, [signed(payer, domain, payer, node, setup.model_a, 9 * OPEN)])
    fresh = signed(other, domain, other, node, setup.model_a, OPEN)
    with ape.reverts(
        payments.VoucherNotAboveRedeemed, index=1, cumulativeAmount=4 * OPEN, redeemed=9 * OPEN
    ):
        redeem(payments, node, [fresh, older])


def test_redeem_zero_cumulative_voucher_reverts(setup, payments, payer, node, protocol):
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 0)
    with ape.reverts(payments.VoucherNotAboveRedeemed, index=0, cumulativeAmount=0, redeemed=0):
        redeem(payments, node, [voucher])


def test_redeem_by_another_node_reverts_invalid_signer(
    setup, payments, payer, node, second_node, protocol
):
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN)
    # The digest now names second_node, so the signature recovers some unrelated address.
    with ape.reverts(payments.InvalidVoucherSigner, index=0, payer=payer.address):
        redeem(payments, second_node, [voucher])
    assert payments.redeemed(payer, second_node, setup.model_a) == 0


def test_redeem_for_another_model_reverts_invalid_signer(setup, payments, payer, node, protocol):
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN)
    moved = list(voucher.redemption_tuple())
    moved[1] = setup.model_b
    with ape.reverts(payments.InvalidVoucherSigner, index=0, payer=payer.address):
        payments.redeem([tuple(moved)], NO_PROOF, sender=node)


def test_redeem_with_raised_amount_reverts_invalid_signer(setup, payments, payer, node, protocol):
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN)
    forged = list(voucher.redemption_tuple())
    forged[2] = 11 * OPEN
    with ape.reverts(payments.InvalidVoucherSigner, index=0, payer=payer.address):
        payments.redeem([tuple(forged)], NO_PROOF, sender=node)


def test_redeem_voucher_for_another_chain_id_reverts(setup, payments, payer, node, protocol):
    domain = Domain(protocol.domain.chain_id + 1, protocol.domain.verifying_contract)
    voucher = signed(payer, domain, payer, node, setup.model_a, 10 * OPEN)
    with ape.reverts(payments.InvalidVoucherSigner, index=0, payer=payer.address):
        redeem(payments, node, [voucher])


def test_redeem_voucher_for_another_contract_reverts(setup, payments, payer, node, protocol):
    domain = Domain(protocol.domain.chain_id, protocol.rewards.address)
    voucher = signed(payer, domain, payer, node, setup.model_a, 10 * OPEN)
    with ape.reverts(payments.InvalidVoucherSigner, index=0, payer=payer.address):
        redeem(payments, node, [voucher])


def test_redeem_voucher_signed_by_wrong_key_reverts(setup, payments, payer, other, node, protocol):
    voucher = signed(other, protocol.domain, payer, node, setup.model_a, 10 * OPEN)
    with ape.reverts(
        payments.InvalidVoucherSigner, index=0, payer=payer.address, signer=other.address
    ):
        redeem(payments, node, [voucher])


def test_redeem_malformed_signature_reverts_with_zero_signer(
    setup, payments, payer, node, protocol
):
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN)
    broken = (*voucher.redemption_tuple()[:4], 29, voucher.signature.r, voucher.signature.s)
    with ape.reverts(payments.InvalidVoucherSigner, index=0, payer=payer.address, signer=ZERO):
        payments.redeem([broken], NO_PROOF, sender=node)


def test_redeem_expired_voucher_reverts(setup, payments, payer, node, protocol):
    deadline = later(60)
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 10 * OPEN, deadline)
    chain.pending_timestamp = deadline + 1
    with ape.reverts(
        payments.VoucherExpired, index=0, deadline=deadline, nowTimestamp=deadline + 1
    ):
        redeem(payments, node, [voucher])


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
    fund(token, payments, other, 4 * OPEN)
    voucher = signed(other, protocol.domain, other, node, setup.model_b, 10 * OPEN)

    tx = redeem(payments, node, [voucher])

    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(other, node, setup.model_b, 10 * OPEN, 4 * OPEN, 6 * OPEN)
    ]
    assert tx.events.filter(payments.PaymentSplit)[0].amount == 4 * OPEN
    assert payments.redeemed(other, node, setup.model_b) == 4 * OPEN
    assert payments.accountOf(other).balance == 0
    conserved()

    # An empty account pays nothing, splits nothing, and the channel does not move.
    tx = redeem(payments, node, [voucher])
    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(other, node, setup.model_b, 10 * OPEN, 0, 6 * OPEN)
    ]
    assert tx.events.filter(payments.PaymentSplit) == []
    assert payments.redeemed(other, node, setup.model_b) == 4 * OPEN

    # A top-up lets the same voucher be redeemed for the rest.
    fund(token, payments, other, 20 * OPEN)
    tx = redeem(payments, node, [voucher])
    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(other, node, setup.model_b, 10 * OPEN, 6 * OPEN, 0)
    ]
    assert payments.redeemed(other, node, setup.model_b) == 10 * OPEN
    assert payments.accountOf(other).balance == 14 * OPEN
    conserved()


def test_redeem_during_withdrawal_delay_beats_the_withdrawal(
    setup, token, payments, payer, node, protocol, conserved
):
    domain = protocol.domain
    promised = signed(payer, domain, payer, node, setup.model_a, 300 * OPEN, later(3 * DAY))
    late = signed(payer, domain, payer, node, setup.model_a, 500 * OPEN, later(3 * DAY))
    payments.requestWithdrawal(DEPOSIT, sender=payer)  # the payer tries to take everything back

    chain.pending_timestamp += DAY // 2
    tx = redeem(payments, node, [promised])
    assert tx.events.filter(payments.VoucherRedeemed)[0].paid == 300 * OPEN
    assert payments.accountOf(payer).pendingWithdrawal == DEPOSIT

    chain.pending_timestamp += DAY // 2
    before = token.balanceOf(payer)
    tx = payments.withdraw(sender=payer)
    assert tx.events.filter(payments.Withdrawn) == [payments.Withdrawn(payer, 700 * OPEN)]
    assert token.balanceOf(payer) == before + 700 * OPEN

    tx = redeem(payments, node, [late])
    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(payer, node, setup.model_a, 500 * OPEN, 0, 200 * OPEN)
    ]
    assert payments.redeemed(payer, node, setup.model_a) == 300 * OPEN
    conserved()


def test_redeem_after_partial_withdrawal_pays_what_is_left(
    setup, token, payments, payer, node, protocol, conserved
):
    voucher = signed(payer, protocol.domain, payer, node, setup.model_a, 500 * OPEN, later(3 * DAY))
    payments.requestWithdrawal(900 * OPEN, sender=payer)
    chain.pending_timestamp += DAY
    payments.withdraw(sender=payer)

    tx = redeem(payments, node, [voucher])

    assert tx.events.filter(payments.VoucherRedeemed) == [
        payments.VoucherRedeemed(payer, node, setup.model_a, 500 * OPEN, 100 * OPEN, 400 * OPEN)
    ]
    assert payments.accountOf(payer).balance == 0
    conserved()


def test_redeem_batch_of_many_channels_splits_once_per_model_run(
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
        fund(token, payments, account, 50 * OPEN)
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
    runs = [(a, batch[0][3] + batch[1][3]), (b, sum(x[3] for x in batch[2:5])), (a, batch[5][3])]
    expected = [(m, amount, split_of(amount, setup.splits[m])) for m, amount in runs]
    assert tx.events.filter(payments.PaymentSplit) == [
        payments.PaymentSplit(modelId=m, node=node, developer=developer, amount=amount, **shares)
        for m, amount, shares in expected
    ]
    total = sum(x[3] for x in batch)
    assert tx.events.filter(payments.UsageProofRecorded)[0].amount == total
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


def test_redeem_same_channel_twice_in_one_batch_pays_the_increase(
    setup, payments, payer, node, protocol, conserved
):
    domain = protocol.domain
    vouchers = [signed(payer, domain, payer, node, setup.model_a, c * OPEN) for c in (3, 8)]

    tx = redeem(payments, node, vouchers)

    assert [e.paid for e in tx.events.filter(payments.VoucherRedeemed)] == [3 * OPEN, 5 * OPEN]
    assert len(tx.events.filter(payments.PaymentSplit)) == 1
    assert payments.redeemed(payer, node, setup.model_a) == 8 * OPEN
    conserved()


def test_redeem_channels_of_two_nodes_are_separate(
    setup, payments, payer, node, second_node, protocol, conserved
):
    domain = protocol.domain
    redeem(payments, node, [signed(payer, domain, payer, node, setup.model_a, 4 * OPEN)])
    tx = redeem(
        payments, second_node, [signed(payer, domain, payer, second_node, setup.model_a, 3 * OPEN)]
    )

    assert tx.events.filter(payments.VoucherRedeemed)[0].paid == 3 * OPEN
    assert payments.redeemed(payer, node, setup.model_a) == 4 * OPEN
    assert payments.redeemed(payer, second_node, setup.model_a) == 3 * OPEN
    assert payments.earnings(second_node) == 3 * OPEN * SPLIT_A[2] // 10_000
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


def test_pause_blocks_deposits_but_not_redeem_withdraw_or_earnings(
    setup, token, payments, governance, payer, node, protocol, conserved
):
    payments.requestWithdrawal(100 * OPEN, sender=payer)
    payments.pause(sender=governance)
    token.approve(payments, OPEN, sender=payer)
    with ape.reverts(payments.EnforcedPause):
        payments.deposit(OPEN, sender=payer)

    tx = redeem(payments, node, [signed(payer, protocol.domain, payer, node, setup.model_a, OPEN)])
    assert tx.events.filter(payments.VoucherRedeemed)[0].paid == OPEN
    chain.pending_timestamp += DAY
    assert payments.withdraw(sender=payer).events.filter(payments.Withdrawn)[0].amount == 100 * OPEN
    assert payments.withdrawEarnings(sender=node).events.filter(payments.EarningsWithdrawn)
    payments.requestWithdrawal(OPEN, sender=payer)
    payments.cancelWithdrawal(sender=payer)
    payments.authorizeSessionKey(SESSION_KEY.address, later(), sender=payer)
    conserved()


# ---------------------------------------------------------------------------------- governance


def test_parameters_at_deployment(setup, payments, treasury):
    assert payments.withdrawalDelay() == DAY
    assert payments.treasury() == treasury.address
    assert payments.usageProofCount() == 0


def test_set_withdrawal_delay_applies_to_new_requests(setup, payments, governance, payer):
    tx = payments.setWithdrawalDelay(3 * DAY, sender=governance)
    assert tx.events == [payments.WithdrawalDelaySet(3 * DAY)]
    assert payments.withdrawalDelay() == 3 * DAY

    tx = payments.requestWithdrawal(OPEN, sender=payer)
    assert payments.accountOf(payer).withdrawalUnlockAt == tx.timestamp + 3 * DAY


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
    ("method", "args"), [("setWithdrawalDelay", (0,)), ("setTreasury", (ZERO,))]
)
def test_governance_setters_by_non_owner_revert(setup, payments, payer, method, args):
    with ape.reverts(payments.OwnableUnauthorizedAccount, account=payer.address):
        getattr(payments, method)(*args, sender=payer)
