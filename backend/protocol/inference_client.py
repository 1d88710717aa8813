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

The wallet and the errors are in ``voucher_wallet.py`` (importable from here too).
"""

from __future__ import annotations

import json
import threading
from collections.abc import AsyncGenerator, Callable, Generator
from typing import Any

import httpx
import openai
from x402.schemas.payments import PaymentRequirements

from backend.protocol.payment_http import (
    PAYER_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    PAYMENT_STATUSES,
    PaymentAnswer,
    encode_payment,
    parse_payment_answer,
)
from backend.protocol.voucher_wallet import (
    BudgetExceededError,
    DomainMismatchError,
    InflatedQuoteError,
    MalformedQuoteError,
    NodeMismatchError,
    PayerMismatchError,
    PaymentClientError,
    PaymentRefusedError,
    PriceAboveMaximumError,
    QuoteRejectedError,
    VoucherWallet,
)

__all__ = [
    "API_KEY",
    "DEFAULT_TIMEOUT",
    "MAX_RESENDS",
    "BudgetExceededError",
    "DomainMismatchError",
    "InflatedQuoteError",
    "MalformedQuoteError",
    "NodeMismatchError",
    "PayerMismatchError",
    "PayingAuth",
    "PaymentClientError",
    "PaymentRefusedError",
    "PriceAboveMaximumError",
    "QuoteRejectedError",
    "VoucherWallet",
    "async_openai_client",
    "model_id_from_json",
    "openai_client",
]

DEFAULT_TIMEOUT = httpx.Timeout(600.0, connect=5.0)  # as the OpenAI SDK's default client
MAX_RESENDS = 8  # resends with a larger voucher of a concurrent request, per request
API_KEY = "openledger"  # the OpenAI clients require one; nodes are paid by vouchers instead


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


def _http_options(
    wallet: VoucherWallet,
    model_id_of: Callable[[httpx.Request], int | None],
    timeout: httpx.Timeout,
    kw: dict[str, Any],
) -> dict[str, Any]:
    """The options of the paying httpx client; refuses ``kw`` that would replace it."""
    for taken in ("http_client", "api_key"):
        if taken in kw:
            raise TypeError(f"{taken} is set by this function; pass the wallet instead")
    return {"auth": PayingAuth(wallet, model_id_of), "timeout": timeout, "follow_redirects": True}


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
    http = httpx.Client(**_http_options(wallet, model_id_of, timeout, kw))
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
    http = httpx.AsyncClient(**_http_options(wallet, model_id_of, timeout, kw))
    return openai.AsyncOpenAI(base_url=base_url, api_key=API_KEY, http_client=http, **kw)  # type: ignore[arg-type]
