"""Client SDK for paid inference: a wallet that signs vouchers for a node's quotes within the
limits its owner set, an ``httpx.Auth`` that pays automatically, and OpenAI clients wired
with it. The wire format is x402 v2 with the ``openledger-voucher`` scheme
(``backend/protocol/payment_http.py``, docs/payment-protocol.md).

One request, as :class:`PayingAuth` sends it::

    POST /v1/completions   X-OpenLedger-Payer, [PAYMENT-SIGNATURE: the latest voucher this
                           wallet signed on the request's channel, if any]
    <- 200                 the channel's credit covered it: one round trip
    <- 402 PAYMENT-REQUIRED  the wallet checks the quote, signs, and the request is sent again
    <- 402/400 again       PaymentRefusedError with the node's message (but see PayingAuth
                           for a concurrent request's larger voucher)

The wallet never trusts the node with more than the request's price: a quote may ask at most
``price`` above the highest cumulative amount *this wallet* signed on the channel (a node that
claims an older voucher was larger cannot inflate the next one), for at most ``max_price``, in
the configured domain and node, and within ``budget``. ``prepay`` signs that much beyond the
quote, so the next requests ride the channel's credit without a 402 round trip.

Concurrency: requests on one channel may run in parallel. A 402 quote computed before another
request's voucher (signed by this wallet) reached the node does not count that voucher; the
wallet adds what the node had not seen (``signed - max(lastAccepted, attached)``), capped at
``price`` above its last signature, so that the vouchers signed together pay for all the
requests. The node holds only vouchers at least as large as the largest it accepted, so a
retry overtaken by a larger voucher of the same wallet is sent again with the wallet's latest.
Should the node turn a voucher down for good, what it promised beyond the requests served
stays as credit on the channel for later requests.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import AsyncGenerator, Callable, Generator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
from eth_account import Account
from eth_utils import is_address, to_checksum_address
from x402.schemas.payments import PaymentRequirements

from backend.protocol.eip712 import Domain, SignedVoucher, recover_voucher_signer, sign_voucher
from backend.protocol.payment_http import (
    PAYER_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    PAYMENT_STATUSES,
    PaymentAnswer,
    PaymentQuote,
    encode_payment,
    parse_payment_answer,
)

DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)  # as the OpenAI SDK's default client
MAX_RESENDS = 8  # resends with a larger voucher of a concurrent request, per request
API_KEY = "openledger"  # the OpenAI clients require one; nodes are paid by vouchers instead


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


# ---------------------------------------------------------------- httpx


def model_id_from_json(request: httpx.Request) -> int | None:
    """The model id of an OpenAI-style JSON body: its ``"model"`` as a decimal string ("1"),
    optionally pinned to a version ("1@2")."""
    try:
        data = json.loads(request.content)
    except (ValueError, UnicodeDecodeError):
        return None
    model = data.get("model") if isinstance(data, dict) else None
    if isinstance(model, str):  # "7", or "7@2" for version 2 of model 7
        head = model.partition("@")[0]
        return int(head) if head.isascii() and head.isdecimal() else None
    if isinstance(model, int) and not isinstance(model, bool) and model >= 0:
        return model
    return None


def _origin(request: httpx.Request) -> tuple[str, str, int | None]:
    return (request.url.scheme, request.url.host, request.url.port)


class PayingAuth(httpx.Auth):
    """Pays every request from ``wallet``: sends the payer and the latest voucher of the
    request's channel, and answers a 402 by signing the node's quote and sending again.

    It signs at most once per request. A refusal of the signed retry raises
    :class:`PaymentRefusedError` — unless it was ``underpaid`` while concurrent requests of the
    same wallet signed a larger voucher on the channel: the node holds only vouchers at least
    as large as the largest it accepted, so the request goes again with the wallet's latest
    voucher (no new signature; at most ``MAX_RESENDS`` times, each with a larger one).

    ``model_id_of`` tells the model a request is for (None: unknown; the request then goes
    without a voucher and the 402's quote names the channel). Only 402/400 bodies are read, so
    successful streaming responses stream; request bodies are read up front to be resent.
    """

    requires_request_body = True

    def __init__(
        self,
        wallet: VoucherWallet,
        model_id_of: Callable[[httpx.Request], int | None] = model_id_from_json,
    ) -> None:
        self.wallet = wallet
        self.model_id_of = model_id_of
        self._nodes: dict[tuple[str, str, int | None], str] = {}  # origin -> node address
        # The requirement each channel was last quoted: what a proactive payment accepts.
        self._requirements: dict[tuple[str, int], PaymentRequirements] = {}
        self._lock = threading.Lock()

    def sync_auth_flow(
        self, request: httpx.Request
    ) -> Generator[httpx.Request, httpx.Response, None]:
        request.read()
        flow = self._flow(request)
        request = next(flow)
        while True:
            response = yield request
            if response.status_code in PAYMENT_STATUSES:
                response.read()  # only payment answers: a 200 streams untouched
            try:
                request = flow.send(response)
            except StopIteration:
                return

    async def async_auth_flow(
        self, request: httpx.Request
    ) -> AsyncGenerator[httpx.Request, httpx.Response]:
        await request.aread()
        flow = self._flow(request)
        request = next(flow)
        while True:
            response = yield request
            if response.status_code in PAYMENT_STATUSES:
                await response.aread()
            try:
                request = flow.send(response)
            except StopIteration:
                return

    def _flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        """The payment exchange; payment answers arrive read, other responses unread."""
        attached = self._prepare(request)
        response = yield request
        answer = self._answer(response)
        if answer is None:
            return
        if answer.quote is None or answer.requirement is None:
            raise PaymentRefusedError(answer)
        signed = self.wallet.pay(answer.quote, attached=attached)
        requirement = answer.requirement
        with self._lock:
            self._nodes[_origin(request)] = answer.quote.node
            self._requirements[(answer.quote.node, answer.quote.model_id)] = requirement
        request.headers[PAYMENT_SIGNATURE_HEADER] = encode_payment(requirement, signed)
        sent = signed.voucher
        for _ in range(MAX_RESENDS + 1):
            response = yield request
            refused = self._answer(response)
            if refused is None:
                return
            latest = self.wallet.latest(sent.node, sent.model_id)
            if (
                refused.code != "underpaid"
                or latest is None
                or latest.voucher.cumulative_amount <= sent.cumulative_amount
            ):
                break
            sent = latest.voucher  # a concurrent request signed more: no new signature
            request.headers[PAYMENT_SIGNATURE_HEADER] = encode_payment(requirement, latest)
        raise PaymentRefusedError(refused)

    def _prepare(self, request: httpx.Request) -> int:
        """Sets the payment headers; returns the attached voucher's cumulative amount."""
        request.headers[PAYER_HEADER] = self.wallet.payer
        with self._lock:
            node = self.wallet.node or self._nodes.get(_origin(request))
        model_id = self.model_id_of(request)
        voucher, requirement = None, None
        if node is not None and model_id is not None:
            voucher = self.wallet.latest(node, model_id)
            with self._lock:
                requirement = self._requirements.get((node, model_id))
        if voucher is None or requirement is None:
            request.headers.pop(PAYMENT_SIGNATURE_HEADER, None)
            return 0
        request.headers[PAYMENT_SIGNATURE_HEADER] = encode_payment(requirement, voucher)
        return voucher.voucher.cumulative_amount

    @staticmethod
    def _answer(response: httpx.Response) -> PaymentAnswer | None:
        """The payment answer of a response, if it is one (its body was read)."""
        if response.status_code not in PAYMENT_STATUSES:
            return None
        try:
            body = response.json()
        except (ValueError, UnicodeDecodeError):
            body = None
        try:
            return parse_payment_answer(response.status_code, response.headers, body)
        except ValueError as exc:
            raise MalformedQuoteError(
                f"node at {response.request.url} answered {response.status_code} with a "
                f"malformed payment requirement: {exc}",
                None,
            ) from None


# ---------------------------------------------------------------- OpenAI clients


def _client_kwargs(kw: dict[str, Any]) -> None:
    for taken in ("http_client", "api_key"):
        if taken in kw:
            raise TypeError(f"{taken} is set by this function; pass the wallet instead")


def openai_client(
    base_url: str,
    wallet: VoucherWallet,
    *,
    model_id_of: Callable[[httpx.Request], int | None] = model_id_from_json,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    **kw: Any,
) -> openai.OpenAI:
    """The official OpenAI client for the node at ``base_url`` (``…/v1``), paying from
    ``wallet``; ``kw`` goes to ``openai.OpenAI``. Payment errors propagate as raised."""
    _client_kwargs(kw)
    http = httpx.Client(
        auth=PayingAuth(wallet, model_id_of), timeout=timeout, follow_redirects=True
    )
    return openai.OpenAI(base_url=base_url, api_key=API_KEY, http_client=http, **kw)  # type: ignore[arg-type]


def async_openai_client(
    base_url: str,
    wallet: VoucherWallet,
    *,
    model_id_of: Callable[[httpx.Request], int | None] = model_id_from_json,
    timeout: httpx.Timeout = DEFAULT_TIMEOUT,
    **kw: Any,
) -> openai.AsyncOpenAI:
    """:func:`openai_client` for asyncio (``openai.AsyncOpenAI``)."""
    _client_kwargs(kw)
    http = httpx.AsyncClient(
        auth=PayingAuth(wallet, model_id_of), timeout=timeout, follow_redirects=True
    )
    return openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, http_client=http, **kw)  # type: ignore[arg-type]
