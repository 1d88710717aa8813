"""The payment gate of the node's HTTP server: HTTP headers in, an accepted voucher or a
payment answer out (x402 v2, scheme ``openledger-voucher``: ``backend/protocol/payment_http.py``
and docs/payment-protocol.md).

Per paid request the server does::

    price = pricing.price(prompt_tokens, max_tokens)       # quoted up front
    try:
        acceptance = gate.admit(request.headers, model_id, price)
    except PaymentHTTPError as refused:
        return JSONResponse(refused.body, refused.status, headers=refused.headers)
    try:
        answer = ...                                        # the inference
        result = gate.settle(acceptance, receipt)           # durable, before the answer leaves
    except BaseException:
        gate.release(acceptance)                            # nothing was served
        raise
    return JSONResponse(answer, headers=result.headers())

``admit`` makes a few JSON-RPC calls to the chain (time, session key, deposit; relaying a
payment's session-key authorization, one transaction and its receipt) and ``settle`` an
fsync'ed SQLite write, so an async server calls them in a worker thread —
``await anyio.to_thread.run_sync(gate.admit, headers, model_id, price)`` — or uses the
``*_async`` twins below, which do exactly that. The gate itself is thread-safe (the verifier
reserves each accepted price under a lock, so concurrent requests on one channel cannot spend
the same credit twice).

A streamed answer has sent its headers before the receipt exists: the server settles when the
stream ends and reports the :class:`SettleResult` in its last chunk, not in headers.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio.to_thread
from eth_utils import to_checksum_address

from backend.protocol.eip712 import InvalidSignatureError
from backend.protocol.payment_http import (
    INVALID_REQUEST,
    INVALID_VOUCHER,
    PAYER_HEADER,
    PAYMENT_REQUIRED,
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    PaymentReceipt,
    caip2,
    decode_payment_with_authorization,
    header,
    parse_payer,
    payer_requirement,
    payment_error_body,
    payment_required,
)
from backend.protocol.receipts import Receipt
from inference_node.payments.errors import InvalidVoucherError, PaymentError
from inference_node.payments.ledger import AnswerAttribution
from inference_node.payments.verify import Acceptance, VoucherVerifier

log = logging.getLogger(__name__)


class _RefusalError(Exception):
    """Why :meth:`PaymentGate.admit` refuses; ``payer`` (when known) gets a fresh quote."""

    def __init__(
        self,
        status: int,
        error_type: str,
        code: str,
        message: str,
        payer: str | None,
        param: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.error_type, self.code = status, error_type, code
        self.payer, self.param = payer, param


class PaymentHTTPError(Exception):
    """A request the gate refused: answer it with ``status`` (402 or 400), JSON ``body`` and
    ``headers`` (``PAYMENT-REQUIRED``)."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str]) -> None:
        super().__init__(f"{status} {body['error']['code']}: {body['error']['message']}")
        self.status = status
        self.body = body
        self.headers = headers

    @property
    def code(self) -> str:
        return str(self.body["error"]["code"])


@dataclass(frozen=True)
class SettleResult:
    """A settled request: its receipt and what its channel holds after it."""

    receipt_id: int
    accepted: int  # OPEN wei, the channel's accepted cumulative amount
    credit: int  # OPEN wei, accepted - consumed after this request
    price: int  # OPEN wei, the actual price written in the receipt
    payer: str
    network: str  # CAIP-2

    def headers(self) -> dict[str, str]:
        """The ``PAYMENT-RESPONSE`` header of the answer."""
        receipt = PaymentReceipt(
            self.receipt_id, self.payer, self.network, self.price, self.accepted, self.credit
        )
        return receipt.to_headers()


class PaymentGate:
    """Admits requests that carry a voucher paying their price; refuses the others with a
    payment answer that includes a fresh quote whenever the payer is known."""

    def __init__(self, verifier: VoucherVerifier) -> None:
        self.verifier = verifier

    def admit(
        self,
        headers: Mapping[str, str],
        model_id: int,
        price: int,
        resource: str | None = None,
    ) -> Acceptance:
        """Accepts the request's voucher for ``price`` OPEN wei on ``model_id`` and reserves
        the price, or raises :class:`PaymentHTTPError` (``resource``: the URL, for x402's
        ``resource``)."""
        if price < 0 or model_id < 0:
            raise ValueError(f"price and model id must be >= 0, got {price}, {model_id}")
        try:
            return self._admit(headers, model_id, price)
        except _RefusalError as refusal:
            chain = self.verifier.chain
            if refusal.payer is not None:
                requirement = self.verifier.quote(refusal.payer, model_id, price).requirements()
            else:
                requirement = payer_requirement(chain.domain, chain.token(), chain.node, price)
            log.debug("payment refused (%s %s): %s", refusal.status, refusal.code, refusal)
            body = payment_error_body(
                error_type=refusal.error_type,
                code=refusal.code,
                message=str(refusal),
                param=refusal.param,
            )
            required = payment_required(
                requirement, error=f"{refusal.code}: {refusal}", resource=resource
            )
            raise PaymentHTTPError(
                refusal.status, body, {PAYMENT_REQUIRED_HEADER: required}
            ) from None

    def _admit(self, headers: Mapping[str, str], model_id: int, price: int) -> Acceptance:
        payer_text = header(headers, PAYER_HEADER)
        payment_text = header(headers, PAYMENT_SIGNATURE_HEADER)
        payer = None
        if payer_text is not None:
            try:
                payer = parse_payer(payer_text)
            except ValueError as exc:
                raise _RefusalError(
                    400, INVALID_REQUEST, "malformed_payer", str(exc), None, PAYER_HEADER
                ) from None
        if payment_text is None:
            if payer is None:
                message = (
                    f"payment required: send {PAYER_HEADER} with the paying address to get a "
                    f"quote, then {PAYMENT_SIGNATURE_HEADER} with a voucher signed for it"
                )
                raise _RefusalError(402, PAYMENT_REQUIRED, "payer_required", message, None)
            message = (
                f"payment required: this request costs up to {price} wei on model {model_id}; "
                f"sign the quoted voucher and send it in {PAYMENT_SIGNATURE_HEADER}"
            )
            raise _RefusalError(402, PAYMENT_REQUIRED, "voucher_required", message, payer)
        try:
            signed, accepted, authorization = decode_payment_with_authorization(payment_text)
        except ValueError as exc:
            raise _RefusalError(
                400, INVALID_VOUCHER, "malformed_payment", str(exc), payer,
                PAYMENT_SIGNATURE_HEADER,
            ) from None  # fmt: skip
        voucher_payer = to_checksum_address(signed.voucher.payer)
        if payer is not None and payer != voucher_payer:
            message = f"{PAYER_HEADER} is {payer} but the voucher's payer is {voucher_payer}"
            raise _RefusalError(400, INVALID_VOUCHER, "payer_mismatch", message, payer)
        chain = self.verifier.chain
        network = caip2(chain.domain.chain_id)
        if accepted.network != network or accepted.pay_to.lower() != chain.node.lower():
            message = (
                f"the payment accepts network {accepted.network} and payTo {accepted.pay_to}; "
                f"this node is {chain.node} on {network}"
            )
            raise _RefusalError(
                400, INVALID_VOUCHER, "requirement_mismatch", message, voucher_payer
            )
        try:
            return self.verifier.verify(signed, model_id, price, authorization)
        except PaymentError as exc:
            invalid = isinstance(exc, InvalidVoucherError)
            error_type = INVALID_VOUCHER if invalid else PAYMENT_REQUIRED
            raise _RefusalError(
                exc.http_status, error_type, exc.reason, str(exc), voucher_payer
            ) from None
        except InvalidSignatureError as exc:
            message = f"{PAYMENT_SIGNATURE_HEADER} signature recovers no address: {exc}"
            raise _RefusalError(
                400, INVALID_VOUCHER, "malformed_payment", message, voucher_payer,
                PAYMENT_SIGNATURE_HEADER,
            ) from None  # fmt: skip

    def settle(
        self,
        acceptance: Acceptance,
        receipt: Receipt,
        attribution: AnswerAttribution | None = None,
    ) -> SettleResult:
        """Writes ``receipt`` (with the actual price), the voucher and the answer's
        ``attribution`` durably and drops the reservation; call before releasing the answer.
        Raises like ``VoucherVerifier.settle`` (ValueError for a price above the quoted one,
        ``LedgerError``), released either way."""
        receipt_id = self.verifier.settle(acceptance, receipt, attribution)
        payer, model_id = acceptance.channel
        state = self.verifier.ledger.channel(payer, model_id)
        credit = max(0, state.accepted - state.consumed)
        network = caip2(self.verifier.chain.domain.chain_id)
        return SettleResult(receipt_id, state.accepted, credit, receipt.price, payer, network)

    def release(self, acceptance: Acceptance) -> None:
        """Drops the reservation of a request that was not served."""
        self.verifier.release(acceptance)

    async def admit_async(
        self, headers: Mapping[str, str], model_id: int, price: int, resource: str | None = None
    ) -> Acceptance:
        """:meth:`admit` in a worker thread (it reads the chain)."""
        admit = partial(self.admit, headers, model_id, price, resource)
        return await anyio.to_thread.run_sync(admit)

    async def settle_async(self, acceptance: Acceptance, receipt: Receipt) -> SettleResult:
        """:meth:`settle` in a worker thread (it fsyncs the ledger)."""
        return await anyio.to_thread.run_sync(partial(self.settle, acceptance, receipt))
