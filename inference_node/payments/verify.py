"""Checks a voucher before any work is done for it.

A voucher is accepted for a request of ``price`` on model ``model_id`` when:

1. it is for the channel (payer, this node) and pair ``model_id``;
2. its deadline is at least ``deadline_margin`` seconds ahead (time for the node to redeem) and
   at most ``max_deadline`` ahead (the node quotes the window);
3. its EIP-712 signature is by the payer, or by a session key of the channel whose on-chain
   ``validUntil`` is at least ``session_key_margin`` seconds ahead (a revoked key keeps its
   power for the channel's delay, then stops);
4. its cumulative amount is at least the quote's (quote.py's credit rule, counting requests
   still being served on the pair, and never below what the pair redeemed on-chain: the ledger
   may be new, or another process may have redeemed);
5. the channel's guaranteed balance (its balance less any withdrawal request still usable)
   covers everything outstanding on the payer's pairs with this node (latest voucher -
   redeemed, this voucher included);
6. when a session key signed it, the key's allowance left covers what the pairs whose latest
   voucher it signed would draw.

A payment may carry the payer's signed ``SessionKeyAuthorization`` for the voucher's key: when
that key is not usable under rule 3 and relaying is on, ``session_relay.py`` checks it
off-chain, this verifier checks rules 4-6 as if the key were authorized (reserving nothing),
the relay submits it, and the voucher is verified as usual against the key the chain now has.
Without an authorization nothing of this runs.

An accepted voucher holds a reservation of its price on the pair until it is settled or
released (:meth:`VoucherVerifier.settle`, :meth:`VoucherVerifier.release`), so
concurrent requests on one pair cannot spend the same credit twice. Reservations live in
memory: after a crash nothing is reserved, and nothing unanswered was written to the ledger.

Together these make every accepted voucher redeemable in full until its ``redeem_by``
(its deadline, or its key's end), whatever the payer does afterwards: the channel's balance is
the node's alone, withdrawals and revocations wait the channel's delay, and split changes wait
a day; the redeemer redeems before any of these bite.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from itertools import count

from eth_utils import to_checksum_address

from backend.protocol.eip712 import (
    SignedSessionKeyAuthorization,
    SignedVoucher,
    recover_voucher_signer,
)
from backend.protocol.payment_http import PaymentQuote
from backend.protocol.receipts import Receipt
from inference_node.payments.chain import PaymentsChain, SessionKeyState
from inference_node.payments.errors import (
    AllowanceExceededError,
    ChannelMismatchError,
    DeadlineTooFarError,
    DeadlineTooSoonError,
    InsufficientDepositError,
    SessionKeyExpiredError,
    UnderpaidError,
    WrongSignerError,
)
from inference_node.payments.ledger import AnswerAttribution, Ledger
from inference_node.payments.quote import expected_cumulative, make_quote
from inference_node.payments.session_relay import SessionKeyRelay, usable


@dataclass(frozen=True)
class VerifyPolicy:
    """Safety margins, in seconds."""

    deadline_margin: int = 3_600  # a voucher must stay redeemable this long
    max_deadline: int = 7 * 86_400  # and not longer than this: old promises do not linger
    session_key_margin: int = 3_600  # a session key must stay live this long


@dataclass(frozen=True)
class Acceptance:
    """An accepted voucher and the price reserved for its request."""

    id: int
    voucher: SignedVoucher
    price: int  # OPEN wei, quoted up front
    signer: str  # the payer, or the session key that signed
    redeem_by: int  # unix seconds: the voucher's deadline, or its key's end if sooner

    @property
    def channel(self) -> tuple[str, int]:
        return (to_checksum_address(self.voucher.voucher.payer), self.voucher.voucher.model_id)


@dataclass(frozen=True)
class _Pair:
    """A (payer, model) pair as the verifier sees it."""

    accepted: int  # OPEN wei: the latest voucher's (in flight included), at least redeemed
    consumed: int  # OPEN wei: receipts' prices, at least redeemed
    redeemed: int  # OPEN wei: on-chain, as far as known
    reserved: int  # OPEN wei: prices of requests in flight
    latest: SignedVoucher | None  # the payer's latest voucher the node holds
    signer: str  # who signed it


@dataclass
class VoucherVerifier:
    """Quotes and verifies vouchers for one node against the chain and the ledger."""

    chain: PaymentsChain
    ledger: Ledger
    policy: VerifyPolicy = field(default_factory=VerifyPolicy)
    relay: SessionKeyRelay | None = None  # None: payments' session-key authorizations ignored
    _inflight: dict[int, Acceptance] = field(default_factory=dict, init=False, repr=False)
    _ids: count = field(default_factory=count, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def _reserved(self, payer: str, model_id: int) -> tuple[int, Acceptance | None]:
        """(sum of reserved prices, the in-flight acceptance with the highest cumulative) on
        a pair."""
        held = [a for a in self._inflight.values() if a.channel == (payer, model_id)]
        top = max(held, key=lambda a: a.voucher.voucher.cumulative_amount, default=None)
        return sum(a.price for a in held), top

    def _pair(self, payer: str, model_id: int, redeemed_on_chain: int) -> _Pair:
        """The pair's state from the ledger, in-flight requests and the chain's floor."""
        state = self.ledger.channel(payer, model_id)
        reserved, top = self._reserved(payer, model_id)
        latest, signer = state.voucher, state.signer or payer
        accepted = state.accepted
        if top is not None and top.voucher.voucher.cumulative_amount > accepted:
            latest, signer = top.voucher, top.signer
            accepted = top.voucher.voucher.cumulative_amount
        floor = max(redeemed_on_chain, state.redeemed)
        consumed = state.consumed
        if floor > accepted:
            # Redeemed beyond any voucher this ledger holds (another process, a lost data
            # dir): all of it counts as served, and the next voucher must exceed it.
            accepted = consumed = floor
        return _Pair(
            accepted=accepted,
            consumed=consumed,
            redeemed=floor,
            reserved=reserved,
            latest=latest,
            signer=signer,
        )

    def quote(self, payer: str, model_id: int, price: int) -> PaymentQuote:
        """The 402 quote for a request of ``price`` by ``payer`` on ``model_id``."""
        payer = to_checksum_address(payer)
        redeemed = self.chain.redeemed(payer, model_id)
        now = self.chain.now()
        with self._lock:
            pair = self._pair(payer, model_id, redeemed)
        return make_quote(
            self.chain.domain,
            (payer, self.chain.node, model_id),
            asset=self.chain.token(),
            price=price,
            accepted=pair.accepted,
            consumed=pair.consumed,
            reserved=pair.reserved,
            min_deadline=now + self.policy.deadline_margin,
            max_deadline=now + self.policy.max_deadline,
            latest=pair.latest,
        )

    def verify(
        self,
        signed: SignedVoucher,
        model_id: int,
        price: int,
        authorization: SignedSessionKeyAuthorization | None = None,
    ) -> Acceptance:
        """Accepts ``signed`` for a request of ``price`` OPEN wei on ``model_id`` and reserves
        the price, or raises a :class:`~inference_node.payments.errors.PaymentError`.
        ``authorization``: the payer's for the voucher's key, relayed when the key needs it."""
        v = signed.voucher
        payer = to_checksum_address(v.payer)
        if to_checksum_address(v.node) != self.chain.node:
            raise ChannelMismatchError("node", to_checksum_address(v.node), self.chain.node)
        if v.model_id != model_id:
            raise ChannelMismatchError("modelId", v.model_id, model_id)
        now = self.chain.now()
        if v.deadline < now + self.policy.deadline_margin:
            raise DeadlineTooSoonError(v.deadline, now + self.policy.deadline_margin)
        if v.deadline > now + self.policy.max_deadline:
            raise DeadlineTooFarError(v.deadline, now + self.policy.max_deadline)
        signer = recover_voucher_signer(self.chain.domain, signed)
        redeem_by = v.deadline
        key = None
        if signer != payer:
            key = self.chain.session_key(payer, signer)
            needed = now + self.policy.session_key_margin
            if authorization is not None and self.relay is not None and not usable(key, needed):
                key = self._relay(authorization, signed, signer, key, price, now)
            if key.valid_until == 0:
                raise WrongSignerError(payer, signer)
            if key.valid_until < now + self.policy.session_key_margin:
                raise SessionKeyExpiredError(
                    signer, key.valid_until, now + self.policy.session_key_margin
                )
            redeem_by = min(redeem_by, key.valid_until)
        acceptance = self._check_amounts(signed, price, signer, key, redeem_by, now, reserve=True)
        assert acceptance is not None  # reserve=True
        return acceptance

    def _relay(
        self,
        authorization: SignedSessionKeyAuthorization,
        signed: SignedVoucher,
        signer: str,
        current: SessionKeyState,
        price: int,
        now: int,
    ) -> SessionKeyState:
        """Relays ``authorization`` (session_relay.py's rules, 6 checked here); the key as the
        chain has it afterwards."""
        assert self.relay is not None
        payer = to_checksum_address(signed.voucher.payer)
        margin = self.policy.session_key_margin
        prospective = self.relay.check(authorization, payer, signer, now, margin, current)
        redeem_by = min(signed.voucher.deadline, prospective.valid_until)
        self._check_amounts(signed, price, signer, prospective, redeem_by, now, reserve=False)
        self.relay.submit(authorization, now + margin)
        return self.chain.session_key(payer, signer)  # read again: no cached key goes stale

    def _check_amounts(
        self,
        signed: SignedVoucher,
        price: int,
        signer: str,
        key: SessionKeyState | None,
        redeem_by: int,
        now: int,
        *,
        reserve: bool,
    ) -> Acceptance | None:
        """Rules 4-6; reserves the price and returns the acceptance when ``reserve``."""
        v = signed.voucher
        payer, model_id = to_checksum_address(v.payer), v.model_id
        channel = self.chain.channel(payer)
        redeemed_here = self.chain.redeemed(payer, model_id)
        with self._lock:  # the ledger is read under the lock: see settle()
            models = {c.model_id for c in self.ledger.channels_of(payer)} | {model_id}
            outstanding = 0
            drawn_by_key = 0  # what the pairs whose latest voucher the key signed would draw
            for other in models:
                pair = self._pair(payer, other, redeemed_here if other == model_id else 0)
                accepted, pair_signer = pair.accepted, pair.signer
                if other == model_id:
                    required = expected_cumulative(
                        pair.accepted, pair.consumed, pair.reserved, price
                    )
                    if v.cumulative_amount < required:
                        raise UnderpaidError(v.cumulative_amount, required)
                    accepted, pair_signer = v.cumulative_amount, signer
                owed = max(0, accepted - pair.redeemed)
                outstanding += owed
                if key is not None and pair_signer == signer:
                    drawn_by_key += owed
            available = channel.guaranteed(now)
            if outstanding > available:
                raise InsufficientDepositError(payer, available, outstanding)
            if key is not None and drawn_by_key > key.left:
                raise AllowanceExceededError(signer, key.left, drawn_by_key)
            if not reserve:
                return None
            acceptance = Acceptance(next(self._ids), signed, price, signer, redeem_by)
            self._inflight[acceptance.id] = acceptance
        return acceptance

    def settle(
        self,
        acceptance: Acceptance,
        receipt: Receipt,
        attribution: AnswerAttribution | None = None,
    ) -> int:
        """Commits ``receipt`` (with the actual price), the accepted voucher and the answer's
        ``attribution`` (the record its digest commits to) to the ledger, then drops the
        reservation; returns the receipt id. Call before releasing the answer.

        Committing before releasing means a concurrent :meth:`verify` always sees the request's
        price either reserved or consumed, never neither.
        """
        if receipt.price > acceptance.price:
            self.release(acceptance)
            raise ValueError(f"actual price {receipt.price} above the quoted {acceptance.price}")
        try:
            return self.ledger.commit(
                acceptance.voucher,
                receipt,
                signer=acceptance.signer,
                redeem_by=acceptance.redeem_by,
                attribution=attribution,
            )
        finally:
            self.release(acceptance)

    def release(self, acceptance: Acceptance) -> None:
        """Drops the reservation of ``acceptance`` (after its receipt is committed, or the
        request failed)."""
        with self._lock:
            self._inflight.pop(acceptance.id, None)
