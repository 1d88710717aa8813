"""The payment gate of the node's HTTP server: HTTP headers in, an accepted voucher or a
payment answer out (the wire format is ``backend/protocol/payment_http.py``).

Per paid request the server does::

    price = pricing.price(prompt_tokens, max_tokens)       # quoted up front
    try:
        acceptance = gate.admit(request.headers, model_id, price)
    except PaymentHTTPError as refused:
        return JSONResponse(refused.body, status_code=refused.status)
    try:
        answer = ...                                        # the inference
        result = gate.settle(acceptance, receipt)           # durable, before the answer leaves
    except BaseException:
        gate.release(acceptance)                            # nothing was served
        raise
    return JSONResponse(answer, headers=result.headers())

``admit`` makes a few JSON-RPC calls to the chain (time, session key, deposit) and ``settle``
an fsync'ed SQLite write, so an async server calls them in a worker thread —
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
from eth_keys.exceptions import BadSignature
from eth_utils import to_checksum_address

from backend.protocol.payment_http import (
    INVALID_REQUEST,
    INVALID_VOUCHER,
    PAYER_HEADER,
    PAYMENT_REQUIRED,
    VOUCHER_HEADER,
    PaymentReceipt,
    decode_voucher,
    header,
    parse_payer,
    payment_error_body,
)
from backend.protocol.receipts import Receipt
from inference_node.payments.errors import InvalidVoucherError, PaymentError
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
    """A request the gate refused: answer it with ``status`` (402 or 400) and JSON ``body``."""

    def __init__(self, status: int, body: dict[str, Any]) -> None:
        super().__init__(f"{status} {body['error']['code']}: {body['error']['message']}")
        self.status = status
        self.body = body

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

    def headers(self) -> dict[str, str]:
        """The ``X-OpenLedger-Receipt/Price/Accepted/Credit`` headers of the answer."""
        return PaymentReceipt(self.receipt_id, self.price, self.accepted, self.credit).to_headers()


class PaymentGate:
    """Admits requests that carry a voucher paying their price; refuses the others with a
    payment answer that includes a fresh quote whenever the payer is known."""

    def __init__(self, verifier: VoucherVerifier) -> None:
        self.verifier = verifier

    def admit(self, headers: Mapping[str, str], model_id: int, price: int) -> Acceptance:
        """Accepts the request's voucher for ``price`` OPEN wei on ``model_id`` and reserves
        the price, or raises :class:`PaymentHTTPError`."""
        if price < 0 or model_id < 0:
            raise ValueError(f"price and model id must be >= 0, got {price}, {model_id}")
        try:
            return self._admit(headers, model_id, price)
        except _RefusalError as refusal:
            quote = None
            if refusal.payer is not None:
                quote = self.verifier.quote(refusal.payer, model_id, price).to_json()
            log.debug("payment refused (%s %s): %s", refusal.status, refusal.code, refusal)
            body = payment_error_body(
                error_type=refusal.error_type,
                code=refusal.code,
                message=str(refusal),
                quote=quote,
                param=refusal.param,
            )
            raise PaymentHTTPError(refusal.status, body) from None

    def _admit(self, headers: Mapping[str, str], model_id: int, price: int) -> Acceptance:
        payer_text, voucher_text = header(headers, PAYER_HEADER), header(headers, VOUCHER_HEADER)
        payer = None
        if payer_text is not None:
            try:
                payer = parse_payer(payer_text)
            except ValueError as exc:
                raise _RefusalError(
                    400, INVALID_REQUEST, "malformed_payer", str(exc), None, PAYER_HEADER
                ) from None
        if voucher_text is None:
            if payer is None:
                message = (
                    f"payment required: send {PAYER_HEADER} with the paying address to get a "
                    f"quote, then {VOUCHER_HEADER} with a voucher signed for it"
                )
                raise _RefusalError(402, PAYMENT_REQUIRED, "payer_required", message, None)
            message = (
                f"payment required: this request costs up to {price} wei on model {model_id}; "
                f"sign the quoted voucher and send it in {VOUCHER_HEADER}"
            )
            raise _RefusalError(402, PAYMENT_REQUIRED, "voucher_required", message, payer)
        try:
            signed = decode_voucher(voucher_text)
        except ValueError as exc:
            raise _RefusalError(
                400, INVALID_VOUCHER, "malformed_voucher", str(exc), payer, VOUCHER_HEADER
            ) from None
        voucher_payer = to_checksum_address(signed.voucher.payer)
        if payer is not None and payer != voucher_payer:
            message = f"{PAYER_HEADER} is {payer} but the voucher's payer is {voucher_payer}"
            raise _RefusalError(400, INVALID_VOUCHER, "payer_mismatch", message, payer)
        try:
            return self.verifier.verify(signed, model_id, price)
        except PaymentError as exc:
            invalid = isinstance(exc, InvalidVoucherError)
            error_type = INVALID_VOUCHER if invalid else PAYMENT_REQUIRED
            raise _RefusalError(
                exc.http_status, error_type, exc.reason, str(exc), voucher_payer
            ) from None
        except BadSignature as exc:
            message = f"{VOUCHER_HEADER} signature recovers no address: {exc}"
            raise _RefusalError(
                400, INVALID_VOUCHER, "malformed_voucher", message, voucher_payer, VOUCHER_HEADER
            ) from None

    def settle(self, acceptance: Acceptance, receipt: Receipt) -> SettleResult:
        """Writes ``receipt`` (with the actual price) and the voucher durably and drops the
        reservation; call before releasing the answer. Raises like ``VoucherVerifier.settle``
        (ValueError for a price above the quoted one, ``LedgerError``), released either way."""
        receipt_id = self.verifier.settle(acceptance, receipt)
        payer, model_id = acceptance.channel
        state = self.verifier.ledger.channel(payer, model_id)
        credit = max(0, state.accepted - state.consumed)
        return SettleResult(receipt_id, state.accepted, credit, receipt.price)

    def release(self, acceptance: Acceptance) -> None:
        """Drops the reservation of a request that was not served."""
        self.verifier.release(acceptance)

    async def admit_async(
        self, headers: Mapping[str, str], model_id: int, price: int
    ) -> Acceptance:
        """:meth:`admit` in a worker thread (it reads the chain)."""
        return await anyio.to_thread.run_sync(partial(self.admit, headers, model_id, price))

    async def settle_async(self, acceptance: Acceptance, receipt: Receipt) -> SettleResult:
        """:meth:`settle` in a worker thread (it fsyncs the ledger)."""
        return await anyio.to_thread.run_sync(partial(self.settle, acceptance, receipt))
