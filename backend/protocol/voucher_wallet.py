"""The paying client's wallet: :class:`VoucherWallet` signs vouchers for a node's quotes
within the limits its owner set, and remembers the latest one per channel; the errors a paid
request raises. ``backend/protocol/inference_client.py`` has the rules it follows and the
``httpx.Auth`` that uses it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from eth_account import Account
from eth_utils import is_address, to_checksum_address

from backend.protocol.eip712 import Domain, SignedVoucher, recover_voucher_signer, sign_voucher
from backend.protocol.payment_http import PaymentAnswer, PaymentQuote

# ---------------------------------------------------------------- errors


class PaymentClientError(Exception):
    """A paid request could not be paid for."""


class PaymentRefusedError(PaymentClientError):
    """The node refused the payment (a second 402/400, or one the wallet cannot answer)."""

    def __init__(self, answer: PaymentAnswer) -> None:
        super().__init__(
            f"node refused the payment ({answer.status} {answer.code}): {answer.message}"
        )
        self.answer = answer
        self.status, self.code, self.quote = answer.status, answer.code, answer.quote


class QuoteRejectedError(PaymentClientError):
    """The wallet refuses to sign for a node's quote; nothing was signed."""

    def __init__(self, message: str, quote: PaymentQuote | None) -> None:
        super().__init__(message)
        self.quote = quote


class MalformedQuoteError(QuoteRejectedError):
    """The node's payment answer carries a quote that does not parse."""


class DomainMismatchError(QuoteRejectedError):
    """The quote is for another EIP-712 domain (chain or InferencePayments) than the wallet's."""


class NodeMismatchError(QuoteRejectedError):
    """The quote is for another node than the wallet's."""


class PayerMismatchError(QuoteRejectedError):
    """The quote is for another payer than the wallet's."""


class PriceAboveMaximumError(QuoteRejectedError):
    """The quoted price is above the wallet's ``max_price``."""


class InflatedQuoteError(QuoteRejectedError):
    """The quote asks for more than its price above what this wallet last signed."""


class BudgetExceededError(QuoteRejectedError):
    """Signing the quote would take the wallet beyond its ``budget``."""


# ---------------------------------------------------------------- the wallet


@dataclass
class _Channel:
    latest: SignedVoucher  # the highest voucher this wallet signed (or was given) on it
    base: int  # OPEN wei, cumulative amount given by remember(), not counted in the budget


class VoucherWallet:
    """Signs vouchers for ``payer`` with ``signing_key`` (the payer's own key or a session key
    the payer authorized on-chain) and remembers the latest one per channel. Thread-safe.

    ``domain``/``node``: the only ones it signs for (``domain=None``: the domain of the first
    quote it signs, then only that one; ``node=None``: any node, one channel each).
    ``trusted_signers``: earlier keys of this payer (old session keys) whose vouchers the
    wallet may continue from; the payer and ``signing_key`` are always trusted.
    ``max_price``: the highest price per request, OPEN wei. ``budget``: the most it signs in
    total beyond what :meth:`remember` gave it, OPEN wei. ``prepay``: OPEN wei signed beyond a
    quote (capped by the budget left). ``validity``: seconds a voucher stays redeemable
    (deadline = max(quote.minDeadline, now + validity)).
    """

    def __init__(
        self,
        payer: str,
        signing_key: bytes,
        domain: Domain | None = None,
        node: str | None = None,
        max_price: int | None = None,
        budget: int | None = None,
        prepay: int = 0,
        validity: int = 86_400,
        trusted_signers: tuple[str, ...] = (),
    ) -> None:
        if not is_address(payer):
            raise ValueError(f"payer must be an address, got {payer!r}")
        if node is not None and not is_address(node):
            raise ValueError(f"node must be an address, got {node!r}")
        for name, value in (("max_price", max_price), ("budget", budget)):
            if value is not None and value < 0:
                raise ValueError(f"{name} must be >= 0 OPEN wei, got {value}")
        if prepay < 0:
            raise ValueError(f"prepay must be >= 0 OPEN wei, got {prepay}")
        if validity <= 0:
            raise ValueError(f"validity must be > 0 seconds, got {validity}")
        self.payer = to_checksum_address(payer)
        self.signer = Account.from_key(signing_key).address  # ValueError for a bad key
        self.node = None if node is None else to_checksum_address(node)
        self.max_price = max_price  # OPEN wei
        self.budget = budget  # OPEN wei
        self.prepay = prepay  # OPEN wei
        self.validity = validity  # seconds
        self._key = bytes(signing_key)
        self.trusted_signers = frozenset(
            {self.payer, self.signer, *(to_checksum_address(a) for a in trusted_signers)}
        )
        self._domain = domain
        self._channels: dict[tuple[str, int], _Channel] = {}
        self._lock = threading.Lock()

    @property
    def domain(self) -> Domain | None:
        """The domain it signs for (None until the first quote when not configured)."""
        return self._domain

    @property
    def spent(self) -> int:
        """OPEN wei signed in total beyond what :meth:`remember` gave it (what the budget caps)."""
        with self._lock:
            return self._spent()

    def _spent(self) -> int:
        return sum(c.latest.voucher.cumulative_amount - c.base for c in self._channels.values())

    def latest(self, node: str, model_id: int) -> SignedVoucher | None:
        """The latest voucher on channel (payer, ``node``, ``model_id``), if any."""
        with self._lock:
            channel = self._channels.get((to_checksum_address(node), model_id))
        return None if channel is None else channel.latest

    def remember(self, signed: SignedVoucher) -> None:
        """Takes a voucher of this payer signed earlier (kept by the app across restarts) as
        the channel's latest, so that honest quotes building on it are not taken for inflated
        ones; it does not count against the budget. (A fresh wallet also resumes from the
        payer's latest voucher that the node hands back in its quote: see :meth:`pay`.)"""
        v = signed.voucher
        if to_checksum_address(v.payer) != self.payer:
            raise ValueError(f"voucher of payer {v.payer}, this wallet pays for {self.payer}")
        with self._lock:
            self._remember(signed)

    def _remember(self, signed: SignedVoucher) -> None:
        v = signed.voucher
        key = (to_checksum_address(v.node), v.model_id)
        channel = self._channels.get(key)
        if channel is None:
            self._channels[key] = _Channel(signed, v.cumulative_amount)
        elif v.cumulative_amount > channel.latest.voucher.cumulative_amount:
            grown = v.cumulative_amount - channel.latest.voucher.cumulative_amount
            self._channels[key] = _Channel(signed, channel.base + grown)

    def _resume(self, quote: PaymentQuote) -> None:
        """Continues the channel from the latest voucher the node holds when this wallet signed
        it (or the payer, or a trusted earlier key did) for this very channel: the node proves
        its ``lastAccepted`` with the payer's own signature, so nothing rests on its word."""
        held = quote.latest
        if held is None or held.voucher.channel != quote.channel:
            return
        if held.voucher.cumulative_amount != quote.last_accepted:
            return
        try:
            signer = recover_voucher_signer(quote.domain, held)
        except ValueError:
            return
        if signer in self.trusted_signers:
            self._remember(held)

    def pay(self, quote: PaymentQuote, *, attached: int = 0) -> SignedVoucher:
        """The voucher to send for ``quote``: the latest one when it already covers the quote,
        else a new one. ``attached``: cumulative amount of the voucher the refused request
        carried (0 if none). Raises a :class:`QuoteRejectedError` and signs nothing when the
        quote breaks one of the wallet's rules."""
        with self._lock:
            self._check(quote)
            self._resume(quote)
            key = (quote.node, quote.model_id)
            channel = self._channels.get(key)
            signed_before = channel.latest.voucher.cumulative_amount if channel else 0
            if quote.cumulative_amount > signed_before + quote.price:
                raise InflatedQuoteError(
                    f"quote asks for cumulative {quote.cumulative_amount} wei on channel "
                    f"{quote.channel}, more than its price {quote.price} above the "
                    f"{signed_before} wei this wallet last signed there",
                    quote,
                )
            unseen = max(0, signed_before - max(quote.last_accepted, attached))
            needed = min(quote.cumulative_amount + unseen, signed_before + quote.price)
            if channel is not None and needed <= signed_before:
                if channel.latest.voucher.deadline >= quote.min_deadline:
                    return channel.latest
                target = signed_before  # the same amount with a later deadline: no new money
            else:
                target = needed + self._prepay(needed - signed_before, quote)
            deadline = max(quote.min_deadline, int(time.time()) + self.validity)
            if quote.max_deadline is not None:
                deadline = min(deadline, quote.max_deadline)
            signed = sign_voucher(self._key, quote.domain, quote.voucher(target, deadline))
            base = channel.base if channel else 0
            self._channels[key] = _Channel(signed, base)
            if self._domain is None:
                self._domain = quote.domain
            return signed

    def _check(self, quote: PaymentQuote) -> None:
        if self._domain is not None and quote.domain.as_dict() != self._domain.as_dict():
            raise DomainMismatchError(
                f"quote is for EIP-712 domain {quote.domain.as_dict()}, this wallet signs for "
                f"{self._domain.as_dict()}",
                quote,
            )
        if self.node is not None and quote.node != self.node:
            raise NodeMismatchError(
                f"quote is for node {quote.node}, this wallet pays node {self.node}", quote
            )
        if quote.payer != self.payer:
            raise PayerMismatchError(
                f"quote is for payer {quote.payer}, this wallet pays for {self.payer}", quote
            )
        if self.max_price is not None and quote.price > self.max_price:
            raise PriceAboveMaximumError(
                f"quoted price {quote.price} wei is above this wallet's maximum "
                f"{self.max_price} wei",
                quote,
            )

    def _prepay(self, increase: int, quote: PaymentQuote) -> int:
        """What to sign beyond ``increase`` (the least new money the quote needs)."""
        if self.budget is None:
            return self.prepay
        room = self.budget - self._spent()
        if increase > room:
            raise BudgetExceededError(
                f"quote needs {increase} more wei; this wallet has {room} wei left of its "
                f"budget of {self.budget} wei",
                quote,
            )
        return min(self.prepay, room - increase)
