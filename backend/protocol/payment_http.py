"""The HTTP payment protocol between an inference node and its clients: an x402 v2 scheme,
``openledger-voucher``, over x402's HTTP transport (one source of truth; the full spec with
examples is docs/payment-protocol.md).

The node's payment gate (``inference_node/server/payment_gate.py``) answers with it and the client
SDK (``backend/protocol/inference_client.py``) pays with it; any x402 client that signs EIP-712
(ethers, viem, a browser wallet's ``eth_signTypedData_v4``) can too.

Request headers
    ``X-OpenLedger-Payer: 0x…``
        The address that pays. The amount to sign depends on what the payer's channel already
        holds, so the node quotes only a known payer; x402 has no field for this before a
        payment, hence this header.
    ``PAYMENT-SIGNATURE: <base64 of PaymentPayload JSON>``
        x402 v2 ``PaymentPayload``: ``accepted`` is the requirement it pays (scheme
        ``openledger-voucher``), ``payload`` is ``{"voucher": <Voucher message>, "signature":
        "0x<r><s><v>"}``; the signature must be canonical (low s), as the contract demands.
        The payload may also carry ``sessionKeyAuthorization``: the payer's signed
        ``SessionKeyAuthorization`` of the key that signed the voucher, for the node to submit.

Answers
    402 (or 400 for a voucher that can never be valid) with ``PAYMENT-REQUIRED: <base64 of
    PaymentRequired JSON>`` — ``accepts[0]`` names the scheme, network (CAIP-2), asset (OPEN),
    ``amount`` (the request's price), ``payTo`` (the node) and in ``extra`` the channel, the
    cumulative amount to sign, the deadline window, the payer's latest voucher the node holds,
    and the EIP-712 typed data ready to sign — and an OpenAI-shaped JSON error body
    ``{"error": {"message", "type", "code", "param"}}`` so that OpenAI SDKs show the reason.
    Success: ``PAYMENT-RESPONSE: <base64 of SettleResponse JSON>`` with the receipt (settlement
    on-chain is deferred to the node's batched redemption, so ``transaction`` is empty).

This module holds the headers and answers; the values' JSON forms are in ``payment_wire.py``
and the quote in ``payment_quote.py`` (every name stays importable from here).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from x402.http.constants import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
)
from x402.http.utils import (
    encode_payment_required_header,
    encode_payment_response_header,
    encode_payment_signature_header,
)
from x402.schemas.payments import PaymentPayload, PaymentRequired, PaymentRequirements, ResourceInfo
from x402.schemas.responses import SettleResponse

from backend.protocol.eip712 import SignedSessionKeyAuthorization, SignedVoucher
from backend.protocol.payment_quote import (
    QUOTE_TIMEOUT,
    SUGGESTED_VALIDITY,
    PaymentQuote,
    payer_requirement,
)
from backend.protocol.payment_wire import (
    MAX_PAYMENT_HEADER,
    PAYER_HEADER,
    SCHEME,
    UINT256_MAX,
    X402_VERSION,
    base64_json,
    caip2,
    json_field,
    json_object,
    parse_address,
    parse_payer,
    parse_payment_payload,
    parse_signed_voucher,
    parse_uint,
    parse_voucher_message,
    payment_payload_json,
    signed_voucher_json,
    validate_model,
    voucher_message,
)

__all__ = [
    "INVALID_REQUEST",
    "INVALID_VOUCHER",
    "MAX_PAYMENT_HEADER",
    "PAYER_HEADER",
    "PAYMENT_HEADERS",
    "PAYMENT_REQUIRED",
    "PAYMENT_REQUIRED_HEADER",
    "PAYMENT_RESPONSE_HEADER",
    "PAYMENT_SIGNATURE_HEADER",
    "PAYMENT_STATUSES",
    "QUOTE_TIMEOUT",
    "SCHEME",
    "SUGGESTED_VALIDITY",
    "UINT256_MAX",
    "X402_VERSION",
    "PaymentAnswer",
    "PaymentQuote",
    "PaymentReceipt",
    "caip2",
    "decode_payment",
    "decode_payment_required",
    "decode_payment_with_authorization",
    "encode_payment",
    "header",
    "parse_payer",
    "parse_payment_answer",
    "parse_signed_voucher",
    "parse_voucher_message",
    "payer_requirement",
    "payment_error_body",
    "payment_required",
    "signed_voucher_json",
    "voucher_message",
]

PAYMENT_HEADERS = (PAYMENT_REQUIRED_HEADER, PAYMENT_SIGNATURE_HEADER, PAYMENT_RESPONSE_HEADER)

PAYMENT_REQUIRED = "payment_required"  # error type of 402 answers
INVALID_VOUCHER = "invalid_voucher"  # error type of 400 answers about the voucher
INVALID_REQUEST = "invalid_request_error"  # error type of a malformed payer header
PAYMENT_STATUSES = (400, 402)


# ---------------------------------------------------------------- PAYMENT-REQUIRED


def payment_required(
    requirement: PaymentRequirements, *, error: str, resource: str | None = None
) -> str:
    """The ``PAYMENT-REQUIRED`` header value: base64 of the x402 v2 ``PaymentRequired``."""
    answer = PaymentRequired(
        x402_version=X402_VERSION,
        error=error,
        resource=None if resource is None else ResourceInfo(url=resource),
        accepts=[requirement],
    )
    return encode_payment_required_header(answer)


def decode_payment_required(text: str) -> PaymentRequired:
    """The ``PaymentRequired`` of a ``PAYMENT-REQUIRED`` value; ValueError when malformed."""
    data = json_object(base64_json(text, PAYMENT_REQUIRED_HEADER), PAYMENT_REQUIRED_HEADER)
    if data.get("x402Version") != X402_VERSION:
        raise ValueError(f"{PAYMENT_REQUIRED_HEADER} is x402 version {data.get('x402Version')}")
    return validate_model(PaymentRequired, data, PAYMENT_REQUIRED_HEADER)


# ---------------------------------------------------------------- PAYMENT-SIGNATURE


def encode_payment(
    requirement: PaymentRequirements,
    signed: SignedVoucher,
    authorization: SignedSessionKeyAuthorization | None = None,
) -> str:
    """The ``PAYMENT-SIGNATURE`` value paying ``requirement`` with ``signed`` (and carrying
    the payer's session-key ``authorization`` for the node to submit, when given)."""
    payload = PaymentPayload(
        x402_version=X402_VERSION,
        accepted=requirement,
        payload=payment_payload_json(signed, authorization),
    )
    return encode_payment_signature_header(payload)


def decode_payment(text: str) -> tuple[SignedVoucher, PaymentRequirements]:
    """The voucher and the accepted requirement of a ``PAYMENT-SIGNATURE`` value; ValueError
    naming what is wrong."""
    signed, accepted, _ = decode_payment_with_authorization(text)
    return signed, accepted


def decode_payment_with_authorization(
    text: str,
) -> tuple[SignedVoucher, PaymentRequirements, SignedSessionKeyAuthorization | None]:
    """As :func:`decode_payment`, with the payload's optional ``sessionKeyAuthorization``."""
    what = PAYMENT_SIGNATURE_HEADER
    data = json_object(base64_json(text, what), what)
    if data.get("x402Version") != X402_VERSION:
        raise ValueError(f"{what} is x402 version {data.get('x402Version')!r}, not 2")
    payment = validate_model(PaymentPayload, data, what)
    if payment.accepted.scheme != SCHEME:
        raise ValueError(f"{what} pays scheme {payment.accepted.scheme!r}, not {SCHEME!r}")
    signed, authorization = parse_payment_payload(payment.payload, f"{what} payload")
    return signed, payment.accepted, authorization


# ---------------------------------------------------------------- PAYMENT-RESPONSE


@dataclass(frozen=True)
class PaymentReceipt:
    """What a paid answer's ``PAYMENT-RESPONSE`` says: the receipt the node wrote."""

    receipt_id: int
    payer: str
    network: str  # CAIP-2
    price: int  # OPEN wei, actual
    accepted: int  # OPEN wei, the channel's accepted cumulative amount
    credit: int  # OPEN wei, accepted - consumed after this request

    def to_headers(self) -> dict[str, str]:
        response = SettleResponse(
            success=True,
            transaction="",  # redeemed later, in a batch: the usage proof names the receipt
            network=self.network,
            payer=self.payer,
            amount=str(self.price),
            extra={
                "receiptId": str(self.receipt_id),
                "accepted": str(self.accepted),
                "credit": str(self.credit),
            },
        )
        return {PAYMENT_RESPONSE_HEADER: encode_payment_response_header(response)}

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> PaymentReceipt | None:
        """The receipt of a response's headers; None when it carries none; ValueError when it
        is malformed."""
        text = header(headers, PAYMENT_RESPONSE_HEADER)
        if text is None:
            return None
        data = json_object(base64_json(text, PAYMENT_RESPONSE_HEADER), PAYMENT_RESPONSE_HEADER)
        response = validate_model(SettleResponse, data, PAYMENT_RESPONSE_HEADER)
        if not response.success:
            raise ValueError(
                f"{PAYMENT_RESPONSE_HEADER} reports a failed payment: "
                f"{response.error_reason}: {response.error_message}"
            )
        extra = json_object(response.extra or {}, f"{PAYMENT_RESPONSE_HEADER} extra")
        what = f"{PAYMENT_RESPONSE_HEADER} extra"
        return cls(
            receipt_id=parse_uint(json_field(extra, "receiptId", what), f"{what}.receiptId"),
            payer=parse_address(response.payer, f"{PAYMENT_RESPONSE_HEADER} payer"),
            network=response.network,
            price=parse_uint(response.amount, f"{PAYMENT_RESPONSE_HEADER} amount"),
            accepted=parse_uint(json_field(extra, "accepted", what), f"{what}.accepted"),
            credit=parse_uint(json_field(extra, "credit", what), f"{what}.credit"),
        )


# ---------------------------------------------------------------- payment answers


def payment_error_body(
    *, error_type: str, code: str, message: str, param: str | None = None
) -> dict[str, Any]:
    """The OpenAI-shaped JSON body of a 402/400 payment answer."""
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


@dataclass(frozen=True)
class PaymentAnswer:
    """A node's 402/400 payment answer, parsed."""

    status: int
    type: str
    code: str
    message: str
    param: str | None
    requirement: PaymentRequirements | None  # accepts[0], our scheme
    quote: PaymentQuote | None  # None when the node did not know the payer


def parse_payment_answer(
    status: int, headers: Mapping[str, str], body: object
) -> PaymentAnswer | None:
    """The payment answer of a response, or None when it is not one (another status, or no
    ``PAYMENT-REQUIRED`` header). ValueError when the header is malformed."""
    text = header(headers, PAYMENT_REQUIRED_HEADER)
    if status not in PAYMENT_STATUSES or text is None:
        return None
    required = decode_payment_required(text)
    ours = [r for r in required.accepts if r.scheme == SCHEME]
    if not ours:
        raise ValueError(f"{PAYMENT_REQUIRED_HEADER} accepts no {SCHEME!r} payment")
    requirement = ours[0]
    quote = None
    if requirement.extra.get("channel") is not None:
        quote = PaymentQuote.from_requirements(requirement)
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        error = {"message": required.error or "payment required", "code": PAYMENT_REQUIRED}
    code, message = str(error.get("code")), str(error.get("message"))
    param = error.get("param")
    return PaymentAnswer(
        status=status,
        type=str(error.get("type", PAYMENT_REQUIRED)),
        code=code,
        message=message,
        param=param if isinstance(param, str) else None,
        requirement=requirement,
        quote=quote,
    )


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header ``name`` in ``headers``, matched case-insensitively."""
    value = headers.get(name)
    if value is not None:
        return value
    lower = name.lower()
    for key, value in headers.items():
        if key.lower() == lower:
            return value
    return None
