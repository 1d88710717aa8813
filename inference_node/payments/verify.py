"""Checks a voucher before any work is done for it.

A voucher is accepted for a request of ``price`` on model ``model_id`` when:

1. it is for the channel (payer, this node, ``model_id``);
2. its deadline is at least ``deadline_margin`` seconds ahead (time for the node to redeem);
3. its EIP-712 signature is by the payer, or by a session key of the payer whose on-chain
   expiry is at least ``session_key_margin`` seconds ahead (a revoked key has expiry 0);
4. its cumulative amount is at least the quote's (quote.py's credit rule, counting requests
   still being served on the channel);
5. the payer's deposit covers everything outstanding on all its channels with this node
   (latest voucher - redeemed, this voucher included), less a pending withdrawal that unlocks
   within ``withdrawal_margin`` seconds (before the node could redeem).

An accepted voucher holds a reservation of its price on the channel until it is settled or
released (:meth:`VoucherVerifier.settle`, :meth:`VoucherVerifier.release`), so
concurrent requests on one channel cannot spend the same credit twice. Reservations live in
memory: after a crash nothing is reserved, and nothing unanswered was written to the ledger.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from itertools import count

from eth_utils import to_checksum_address

from backend.protocol.eip712 import SignedVoucher, recover_voucher_signer
from backend.protocol.receipts import Receipt
from inference_node.payments.chain import PaymentsChain
from inference_node.payments.errors import (
    ChannelMismatchError,
    DeadlineTooSoonError,
    InsufficientDepositError,
    SessionKeyExpiredError,
    UnderpaidError,
    WrongSignerError,
)
from inference_node.payments.ledger import Ledger
from inference_node.payments.quote import Quote, expected_cumulative, make_quote


@dataclass(frozen=True)
class VerifyPolicy:
    """Safety margins, in seconds."""

    deadline_margin: int = 3_600  # a voucher must stay redeemable this long
    session_key_margin: int = 600  # a session key must stay live this long
    withdrawal_margin: int = 3_600  # withdrawals unlocking within this are not counted


@dataclass(frozen=True)
class Acceptance:
    """An accepted voucher and the price reserved for its request."""

    id: int
    voucher: SignedVoucher
    price: int  # OPEN wei, quoted up front

    @property
    def channel(self) -> tuple[str, int]:
        return (to_checksum_address(self.voucher.voucher.payer), self.voucher.voucher.model_id)


@dataclass
class VoucherVerifier:
    """Quotes and verifies vouchers for one node against the chain and the ledger."""

    chain: PaymentsChain
    ledger: Ledger
    policy: VerifyPolicy = field(default_factory=VerifyPolicy)
    _inflight: dict[int, Acceptance] = field(default_factory=dict, init=False, repr=False)
    _ids: count = field(default_factory=count, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _reserved(self, payer: str, model_id: int) -> tuple[int, int]:
        """(sum of reserved prices, highest in-flight cumulative) on a channel."""
        held = [a for a in self._inflight.values() if a.channel == (payer, model_id)]
        top = max((a.voucher.voucher.cumulative_amount for a in held), default=0)
        return sum(a.price for a in held), top

    def quote(self, payer: str, model_id: int, price: int) -> Quote:
        """The 402 quote for a request of ``price`` by ``payer`` on ``model_id``."""
        payer = to_checksum_address(payer)
        with self._lock:
            state = self.ledger.channel(payer, model_id)
            reserved, top = self._reserved(payer, model_id)
        return make_quote(
            self.chain.domain,
            (payer, self.chain.node, model_id),
            price=price,
            accepted=max(state.accepted, top),
            consumed=state.consumed,
            reserved=reserved,
            min_deadline=self.chain.now() + self.policy.deadline_margin,
        )

    def verify(self, signed: SignedVoucher, model_id: int, price: int) -> Acceptance:
        """Accepts ``signed`` for a request of ``price`` OPEN wei on ``model_id`` and reserves
        the price, or raises a :class:`~inference_node.payments.errors.PaymentError`."""
        v = signed.voucher
        payer = to_checksum_address(v.payer)
        if to_checksum_address(v.node) != self.chain.node:
            raise ChannelMismatchError("node", to_checksum_address(v.node), self.chain.node)
        if v.model_id != model_id:
            raise ChannelMismatchError("modelId", v.model_id, model_id)
        now = self.chain.now()
        if v.deadline < now + self.policy.deadline_margin:
            raise DeadlineTooSoonError(v.deadline, now + self.policy.deadline_margin)
        signer = recover_voucher_signer(self.chain.domain, signed)
        if signer != payer:
            expiry = self.chain.session_key_expiry(payer, signer)
            if expiry == 0:
                raise WrongSignerError(payer, signer)
            if expiry < now + self.policy.session_key_margin:
                raise SessionKeyExpiredError(signer, expiry, now + self.policy.session_key_margin)
        account = self.chain.account(payer)
        with self._lock:  # the ledger is read under the lock: see settle()
            channels = {c.model_id: c for c in self.ledger.channels_of(payer)}
            outstanding = 0
            for other in {*channels, model_id}:
                state = channels.get(other)
                accepted = state.accepted if state else 0
                redeemed = state.redeemed if state else 0
                reserved, top = self._reserved(payer, other)
                accepted = max(accepted, top)
                if other == model_id:
                    consumed = state.consumed if state else 0
                    required = expected_cumulative(accepted, consumed, reserved, price)
                    if v.cumulative_amount < required:
                        raise UnderpaidError(v.cumulative_amount, required)
                    accepted = v.cumulative_amount
                outstanding += max(0, accepted - redeemed)
            available = account.available(now + self.policy.withdrawal_margin)
            if outstanding > available:
                raise InsufficientDepositError(payer, available, outstanding)
            acceptance = Acceptance(next(self._ids), signed, price)
            self._inflight[acceptance.id] = acceptance
        return acceptance

    def settle(self, acceptance: Acceptance, receipt: Receipt) -> int:
        """Commits ``receipt`` (with the actual price) and the accepted voucher to the ledger,
        then drops the reservation; returns the receipt id. Call before releasing the answer.

        Committing before releasing means a concurrent :meth:`verify` always sees the request's
        price either reserved or consumed, never neither.
        """
        if receipt.price > acceptance.price:
            self.release(acceptance)
            raise ValueError(f"actual price {receipt.price} above the quoted {acceptance.price}")
        try:
            return self.ledger.commit(acceptance.voucher, receipt)
        finally:
            self.release(acceptance)

    def release(self, acceptance: Acceptance) -> None:
        """Drops the reservation of ``acceptance`` (after its receipt is committed, or the
        request failed)."""
        with self._lock:
            self._inflight.pop(acceptance.id, None)
