"""Payments v2 on top of the scripted history, for the indexer and API tests: a second channel
of the payer (with a withdrawal request that lapses), session-key vouchers, every reason a
redemption skips a voucher, a revoked key that keeps signing until its ``validUntil``, a
zero-paid voucher with a model id beyond SQLite's integers, and two split changes (the first
takes effect, the second is still scheduled at the end)."""

from __future__ import annotations

from dataclasses import dataclass, field

from eth_account import Account

from backend.protocol.eip712 import Domain, Voucher, sign_voucher
from tests.protocol_history import OPEN, History, private_key

DAY = 86_400
HUGE_MODEL_ID = 2**200  # a voucher's model id is the node's calldata: any uint256
STRANGER_KEY = bytes.fromhex("11" * 32)  # signs vouchers it has no right to
FIRST_SPLIT = (5_000, 3_000, 1_500, 500)
SECOND_SPLIT = (4_000, 4_000, 1_500, 500)


@dataclass
class PaymentsHistory:
    other_node: str  # the payer's second channel is with it (it never redeems)
    late_key: str  # a session key authorized and revoked at the end: revoked, still live
    revoked_block: int = 0  # the challenger's key was revoked in it ...
    revoked_valid_until: int = 0  # ... and stays valid until then
    first_split_at: int = 0  # FIRST_SPLIT's effective time
    before_first_split: int = 0  # the last block before it took effect
    second_split_at: int = 0  # SECOND_SPLIT's effective time (after the end)
    late_expiry: int = 0  # the late key's authorized expiry
    late_valid_until: int = 0
    withdrawal_unlock_at: int = 0  # the second channel's request
    proofs: list[int] = field(default_factory=list)  # usage proofs of the added redemptions


def _travel(h: History, seconds: int) -> None:
    w3 = h.protocol.w3
    w3.provider.make_request("evm_increaseTime", [seconds])
    w3.provider.make_request("evm_mine", [])


def _now(h: History) -> int:
    return int(h.protocol.w3.eth.get_block("latest")["timestamp"])


def _redeem(h: History, vouchers: list[tuple], tag: bytes) -> int:
    """The node redeems ``vouchers``; returns the usage proof's id."""
    payments = h.protocol["InferencePayments"]
    proof = (tag * 32, len(vouchers), "bafkreceipts" + tag.hex())
    h.protocol.transact(h.roles.node, payments.functions.redeem(vouchers, proof))
    return int(payments.functions.usageProofCount().call())


def add_payments_v2(h: History) -> PaymentsHistory:
    """Runs the payments v2 scenario after ``make_history`` (see the module's docstring)."""
    p, r = h.protocol, h.roles
    w3 = p.w3
    payments, models = p["InferencePayments"].functions, p["ModelRegistry"].functions
    domain = Domain(w3.eth.chain_id, p["InferencePayments"].address)
    challenger_key, payer_key = private_key(8), private_key(4)
    late_key = Account.from_key(private_key(9)).address
    out = PaymentsHistory(other_node=r.curator, late_key=late_key)

    def voucher(key: bytes, payer: str, model_id: int, amount: int, deadline: int) -> tuple:
        v = Voucher(payer, r.node, model_id, amount, deadline)
        return sign_voucher(key, domain, v).redemption_tuple()

    # A second channel, whose withdrawal request will lapse; a split change scheduled.
    p.transact(r.payer, payments.deposit(out.other_node, 20 * OPEN))
    p.transact(r.payer, payments.requestWithdrawal(out.other_node, 3 * OPEN))
    out.withdrawal_unlock_at = _now(h) + DAY
    p.transact(r.developer, models.setSplit(1, FIRST_SPLIT))
    out.first_split_at = _now(h) + DAY

    # The challenger's session key pays 2 OPEN; three vouchers are skipped, one per reason.
    deadline = _now(h) + 10 * DAY
    batch = [
        voucher(challenger_key, r.payer, 1, 12 * OPEN, deadline),  # paid 2 (10 redeemed)
        voucher(payer_key, r.payer, 1, 5 * OPEN, deadline),  # not above the 12 redeemed
        voucher(payer_key, r.payer, 1, 20 * OPEN, _now(h) - 1),  # expired
        voucher(STRANGER_KEY, r.payer, HUGE_MODEL_ID, OPEN, deadline),  # invalid signer
    ]
    out.proofs.append(_redeem(h, batch, b"\x21"))

    # Revoked, the key keeps signing for the channel's delay: a voucher it signs is paid ...
    receipt = p.transact(r.payer, payments.revokeSessionKey(r.node, r.challenger))
    out.revoked_block = int(receipt["blockNumber"])
    out.revoked_valid_until = _now(h) + DAY
    batch = [voucher(challenger_key, r.payer, 1, 13 * OPEN, deadline)]
    out.proofs.append(_redeem(h, batch, b"\x22"))
    out.before_first_split = w3.eth.block_number

    # ... until validUntil; then it is skipped. A payer without a channel is paid nothing.
    _travel(h, DAY + 100)
    deadline = _now(h) + 10 * DAY
    alice_key = private_key(5)
    batch = [
        voucher(challenger_key, r.payer, 1, 14 * OPEN, deadline),  # key no longer live
        voucher(alice_key, r.alice, HUGE_MODEL_ID, OPEN, deadline),  # paid 0: no channel
    ]
    out.proofs.append(_redeem(h, batch, b"\x23"))

    # Past the second channel's withdrawal window; a second split change (the first is in
    # effect by now); a key authorized and revoked, live for the channel's delay.
    _travel(h, 2 * DAY)
    p.transact(r.developer, models.setSplit(1, SECOND_SPLIT))
    out.second_split_at = _now(h) + DAY
    # The expiry is what was authorized; the block after may carry a later timestamp.
    out.late_expiry = _now(h) + 30 * DAY
    p.transact(r.payer, payments.authorizeSessionKey(r.node, late_key, out.late_expiry, OPEN))
    p.transact(r.payer, payments.revokeSessionKey(r.node, late_key))
    out.late_valid_until = _now(h) + DAY
    return out
