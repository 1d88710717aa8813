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

Answers
    402 (or 400 for a voucher that can never be valid) with ``PAYMENT-REQUIRED: <base64 of
    PaymentRequired JSON>`` — ``accepts[0]`` names the scheme, network (CAIP-2), asset (OPEN),
    ``amount`` (the request's price), ``payTo`` (the node) and in ``extra`` the channel, the
    cumulative amount to sign, the deadline window, the payer's latest voucher the node holds,
    and the EIP-712 typed data ready to sign — and an OpenAI-shaped JSON error body
    ``{"error": {"message", "type", "code", "param"}}`` so that OpenAI SDKs show the reason.
    Success: ``PAYMENT-RESPONSE: <base64 of SettleResponse JSON>`` with the receipt (settlement
    on-chain is deferred to the node's batched redemption, so ``transaction`` is empty).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils import is_address, is_checksum_address, to_checksum_address
from pydantic import ValidationError
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

from backend.protocol.eip712 import (
    EIP712_DOMAIN_TYPE,
    VOUCHER_TYPE,
    Domain,
    SignedVoucher,
    Voucher,
    parse_signature,
)

SCHEME = "openledger-voucher"
X402_VERSION = 2
PAYER_HEADER = "X-OpenLedger-Payer"
PAYMENT_HEADERS = (PAYMENT_REQUIRED_HEADER, PAYMENT_SIGNATURE_HEADER, PAYMENT_RESPONSE_HEADER)

PAYMENT_REQUIRED = "payment_required"  # error type of 402 answers
INVALID_VOUCHER = "invalid_voucher"  # error type of 400 answers about the voucher
INVALID_REQUEST = "invalid_request_error"  # error type of a malformed payer header
PAYMENT_STATUSES = (400, 402)

QUOTE_TIMEOUT = 300  # seconds a quote is meant to be answered in (x402 maxTimeoutSeconds)
SUGGESTED_VALIDITY = 86_400  # seconds: the deadline the typed data suggests, within the window
MAX_PAYMENT_HEADER = 16_384  # characters; a payment with its echoed requirement is ~3,000
UINT256_MAX = 2**256 - 1
_VOUCHER_FIELDS = ("payer", "node", "modelId", "cumulativeAmount", "deadline")


# ---------------------------------------------------------------- field parsing


def _uint(value: object, what: str) -> int:
    """A uint256 given as a JSON integer or a decimal string."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} must be an integer or a decimal string, got {value!r}")
    if isinstance(value, str) and not (value.isascii() and value.isdecimal()):
        raise ValueError(f"{what} must be a decimal string of digits, got {value!r}")
    number = int(value)
    if not 0 <= number <= UINT256_MAX:
        raise ValueError(f"{what} must be in [0, 2**256), got {number}")
    return number


def _address(value: object, what: str) -> str:
    if not isinstance(value, str) or not is_address(value) or not value.startswith("0x"):
        raise ValueError(f"{what} must be a 0x-prefixed 20-byte hex address, got {value!r}")
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
        raise ValueError(f"{what} has a wrong EIP-55 checksum (a typo?): {value!r}")
    return to_checksum_address(value)


def _object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _field(data: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in data:
        raise ValueError(f"{what} lacks field {key!r}")
    return data[key]


def parse_payer(text: str) -> str:
    """The checksummed address of an ``X-OpenLedger-Payer`` header; ValueError otherwise."""
    return _address(text.strip(), PAYER_HEADER)


def caip2(chain_id: int) -> str:
    """The CAIP-2 id of an EVM chain (``eip155:<chain id>``), x402's ``network``."""
    return f"eip155:{chain_id}"


# ---------------------------------------------------------------- vouchers on the wire


def voucher_message(voucher: Voucher) -> dict[str, str]:
    """The EIP-712 ``Voucher`` message as JSON: addresses checksummed, integers as decimal
    strings (exact in JavaScript; ethers and ``eth_signTypedData_v4`` take them as-is)."""
    m = voucher.message()
    return {k: str(v) if isinstance(v, int) else v for k, v in m.items()}


def signed_voucher_json(signed: SignedVoucher) -> dict[str, Any]:
    """``{"voucher": <message>, "signature": "0x<r><s><v>"}``: a payment's ``payload``, and the
    form of a quote's ``latestVoucher``."""
    return {
        "voucher": voucher_message(signed.voucher),
        "signature": "0x" + signed.signature.to_bytes().hex(),
    }


def parse_signed_voucher(data: object, what: str) -> SignedVoucher:
    """The signed voucher of :func:`signed_voucher_json`'s form; ValueError naming the field."""
    data = _object(data, what)
    unknown = sorted(set(data) - {"voucher", "signature"})
    if unknown:
        raise ValueError(f"{what} has unknown field(s) {', '.join(unknown)}")
    voucher = parse_voucher_message(_field(data, "voucher", what), f"{what}.voucher")
    signature = parse_signature(_field(data, "signature", what), f"{what}.signature")
    return SignedVoucher(voucher, signature)


def parse_voucher_message(data: object, what: str) -> Voucher:
    """The voucher of :func:`voucher_message`'s form; ValueError naming the field."""
    message = _object(data, what)
    missing = [k for k in _VOUCHER_FIELDS if k not in message]
    if missing:
        raise ValueError(f"{what} lacks field(s) {', '.join(missing)}")
    unknown = sorted(set(message) - set(_VOUCHER_FIELDS))
    if unknown:
        raise ValueError(f"{what} has unknown field(s) {', '.join(unknown)}")
    return Voucher(
        payer=_address(message["payer"], f"{what}.payer"),
        node=_address(message["node"], f"{what}.node"),
        model_id=_uint(message["modelId"], f"{what}.modelId"),
        cumulative_amount=_uint(message["cumulativeAmount"], f"{what}.cumulativeAmount"),
        deadline=_uint(message["deadline"], f"{what}.deadline"),
    )


# ---------------------------------------------------------------- the quote


@dataclass(frozen=True)
class PaymentQuote:
    """What a request costs and what the next voucher on its channel must promise: the
    ``extra`` of an ``openledger-voucher`` requirement, as the node states it and a client
    reads it."""

    domain: Domain  # EIP-712 domain of InferencePayments
    asset: str  # the OPEN token
    payer: str
    node: str
    model_id: int
    price: int  # OPEN wei, quoted up front from max_tokens
    last_accepted: int  # OPEN wei, cumulative amount of the channel's latest voucher
    credit: int  # OPEN wei, what the channel's latest voucher still covers
    cumulative_amount: int  # OPEN wei, the least cumulative amount to sign
    min_deadline: int  # unix seconds, the earliest voucher deadline the node accepts
    max_deadline: int  # unix seconds, the latest one
    latest: SignedVoucher | None = None  # the payer's latest voucher the node holds

    @property
    def channel(self) -> tuple[str, str, int]:
        return (self.payer, self.node, self.model_id)

    def voucher(self, cumulative_amount: int, deadline: int) -> Voucher:
        """The voucher on this quote's channel for ``cumulative_amount`` until ``deadline``."""
        return Voucher(self.payer, self.node, self.model_id, cumulative_amount, deadline)

    @property
    def suggested_deadline(self) -> int:
        """A deadline inside the node's window: a day after the earliest, at most the latest."""
        return min(self.max_deadline, self.min_deadline + SUGGESTED_VALIDITY)

    def typed_data(self) -> dict[str, Any]:
        """The quoted voucher as ``eth_signTypedData_v4`` JSON (types include EIP712Domain)."""
        message = voucher_message(self.voucher(self.cumulative_amount, self.suggested_deadline))
        return {
            "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "Voucher": VOUCHER_TYPE},
            "primaryType": "Voucher",
            "domain": self.domain.as_dict(),
            "message": message,
        }

    def extra(self) -> dict[str, Any]:
        return {
            "channel": {"payer": self.payer, "node": self.node, "modelId": str(self.model_id)},
            "cumulativeAmount": str(self.cumulative_amount),
            "lastAccepted": str(self.last_accepted),
            "credit": str(self.credit),
            "minDeadline": self.min_deadline,
            "maxDeadline": self.max_deadline,
            # The payer's own latest signed voucher: a wallet that lost its state checks the
            # signature and continues the channel from it (nothing rests on the node's word).
            "latestVoucher": None if self.latest is None else signed_voucher_json(self.latest),
            "typedData": self.typed_data(),
            # ethers' signTypedData(domain, types, message) refuses EIP712Domain in types.
            "voucherTypes": {"Voucher": VOUCHER_TYPE},
        }

    def requirements(self) -> PaymentRequirements:
        """The x402 v2 requirement (an ``accepts`` entry) of this quote."""
        return PaymentRequirements(
            scheme=SCHEME,
            network=caip2(self.domain.chain_id),
            asset=self.asset,
            amount=str(self.price),
            pay_to=self.node,
            max_timeout_seconds=QUOTE_TIMEOUT,
            extra=self.extra(),
        )

    @classmethod
    def from_requirements(cls, requirements: PaymentRequirements) -> PaymentQuote:
        """Parses and checks an ``openledger-voucher`` requirement; ValueError naming the bad
        field."""
        if requirements.scheme != SCHEME:
            raise ValueError(f"requirement scheme is {requirements.scheme!r}, not {SCHEME!r}")
        q = _object(requirements.extra, "extra")
        if q.get("channel") is None:
            raise ValueError(f"the node needs the payer first: send {PAYER_HEADER}")
        channel = _object(q["channel"], "extra.channel")
        typed = _object(_field(q, "typedData", "extra"), "extra.typedData")
        if typed.get("primaryType") != "Voucher":
            raise ValueError(f"extra.typedData signs {typed.get('primaryType')!r}, not a Voucher")
        types = _object(_field(typed, "types", "extra.typedData"), "extra.typedData.types")
        if types.get("Voucher") != VOUCHER_TYPE:
            raise ValueError(f"extra.typedData Voucher type is {types.get('Voucher')!r}")
        if types.get("EIP712Domain") != EIP712_DOMAIN_TYPE:
            raise ValueError(f"extra.typedData EIP712Domain is {types.get('EIP712Domain')!r}")
        d = _object(_field(typed, "domain", "extra.typedData"), "extra.typedData.domain")
        name, version = _field(d, "name", "domain"), _field(d, "version", "domain")
        if not isinstance(name, str) or not isinstance(version, str):
            raise ValueError(f"domain name and version must be strings: {name!r} {version!r}")
        domain = Domain(
            chain_id=_uint(_field(d, "chainId", "domain"), "domain chainId"),
            verifying_contract=_address(
                _field(d, "verifyingContract", "domain"), "domain verifyingContract"
            ),
            name=name,
            version=version,
        )
        if requirements.network != caip2(domain.chain_id):
            raise ValueError(
                f"requirement network {requirements.network!r} is not the domain's chain "
                f"{caip2(domain.chain_id)!r}"
            )
        node = _address(_field(channel, "node", "extra.channel"), "extra.channel.node")
        if _address(requirements.pay_to, "payTo") != node:
            raise ValueError(f"payTo {requirements.pay_to} is not the channel's node {node}")
        latest = q.get("latestVoucher")
        quote = cls(
            domain=domain,
            asset=_address(requirements.asset, "asset"),
            payer=_address(_field(channel, "payer", "extra.channel"), "extra.channel.payer"),
            node=node,
            model_id=_uint(_field(channel, "modelId", "extra.channel"), "extra.channel.modelId"),
            price=_uint(requirements.amount, "amount"),
            last_accepted=_uint(_field(q, "lastAccepted", "extra"), "extra.lastAccepted"),
            credit=_uint(_field(q, "credit", "extra"), "extra.credit"),
            cumulative_amount=_uint(
                _field(q, "cumulativeAmount", "extra"), "extra.cumulativeAmount"
            ),
            min_deadline=_uint(_field(q, "minDeadline", "extra"), "extra.minDeadline"),
            max_deadline=_uint(_field(q, "maxDeadline", "extra"), "extra.maxDeadline"),
            latest=None if latest is None else parse_signed_voucher(latest, "extra.latestVoucher"),
        )
        if quote.cumulative_amount < quote.last_accepted:
            raise ValueError(
                f"extra.cumulativeAmount {quote.cumulative_amount} is below its lastAccepted "
                f"{quote.last_accepted}"
            )
        if quote.credit > quote.last_accepted:
            raise ValueError(
                f"extra.credit {quote.credit} exceeds its lastAccepted {quote.last_accepted}"
            )
        signs = parse_voucher_message(
            _field(typed, "message", "extra.typedData"), "extra.typedData.message"
        )
        if signs.channel != quote.channel or signs.cumulative_amount != quote.cumulative_amount:
            raise ValueError(
                f"extra.typedData.message signs {signs.cumulative_amount} on {signs.channel}, "
                f"not the quoted {quote.cumulative_amount} on {quote.channel}"
            )
        if quote.max_deadline < quote.min_deadline:
            raise ValueError(
                f"extra.maxDeadline {quote.max_deadline} is before minDeadline {quote.min_deadline}"
            )
        return quote


# ---------------------------------------------------------------- PAYMENT-REQUIRED


def payer_requirement(domain: Domain, asset: str, node: str, price: int) -> PaymentRequirements:
    """The requirement answered to a request with no payer: the price and the domain, and
    ``extra.channel`` null (resend with ``X-OpenLedger-Payer`` for the amount to sign)."""
    return PaymentRequirements(
        scheme=SCHEME,
        network=caip2(domain.chain_id),
        asset=asset,
        amount=str(price),
        pay_to=node,
        max_timeout_seconds=QUOTE_TIMEOUT,
        extra={"channel": None, "payerHeader": PAYER_HEADER, "domain": domain.as_dict()},
    )


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


def _base64_json(text: str, what: str) -> Any:
    text = text.strip()
    if not text:
        raise ValueError(f"{what} is empty")
    if len(text) > MAX_PAYMENT_HEADER:
        raise ValueError(f"{what} is {len(text)} characters, at most {MAX_PAYMENT_HEADER}")
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not base64") from None
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{what} is not base64 of JSON: {exc}") from None


def _model(cls: Any, data: Any, what: str) -> Any:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{what}: {where}: {first['msg']}") from None


def decode_payment_required(text: str) -> PaymentRequired:
    """The ``PaymentRequired`` of a ``PAYMENT-REQUIRED`` value; ValueError when malformed."""
    data = _object(_base64_json(text, PAYMENT_REQUIRED_HEADER), PAYMENT_REQUIRED_HEADER)
    if data.get("x402Version") != X402_VERSION:
        raise ValueError(f"{PAYMENT_REQUIRED_HEADER} is x402 version {data.get('x402Version')}")
    return _model(PaymentRequired, data, PAYMENT_REQUIRED_HEADER)


# ---------------------------------------------------------------- PAYMENT-SIGNATURE


def encode_payment(requirement: PaymentRequirements, signed: SignedVoucher) -> str:
    """The ``PAYMENT-SIGNATURE`` value paying ``requirement`` with ``signed``."""
    payload = PaymentPayload(
        x402_version=X402_VERSION, accepted=requirement, payload=signed_voucher_json(signed)
    )
    return encode_payment_signature_header(payload)


def decode_payment(text: str) -> tuple[SignedVoucher, PaymentRequirements]:
    """The voucher and the accepted requirement of a ``PAYMENT-SIGNATURE`` value; ValueError
    naming what is wrong."""
    what = PAYMENT_SIGNATURE_HEADER
    data = _object(_base64_json(text, what), what)
    if data.get("x402Version") != X402_VERSION:
        raise ValueError(f"{what} is x402 version {data.get('x402Version')!r}, not 2")
    payment = _model(PaymentPayload, data, what)
    if payment.accepted.scheme != SCHEME:
        raise ValueError(f"{what} pays scheme {payment.accepted.scheme!r}, not {SCHEME!r}")
    return parse_signed_voucher(payment.payload, f"{what} payload"), payment.accepted


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
        data = _object(_base64_json(text, PAYMENT_RESPONSE_HEADER), PAYMENT_RESPONSE_HEADER)
        response = _model(SettleResponse, data, PAYMENT_RESPONSE_HEADER)
        if not response.success:
            raise ValueError(
                f"{PAYMENT_RESPONSE_HEADER} reports a failed payment: "
                f"{response.error_reason}: {response.error_message}"
            )
        extra = _object(response.extra or {}, f"{PAYMENT_RESPONSE_HEADER} extra")
        what = f"{PAYMENT_RESPONSE_HEADER} extra"
        return cls(
            receipt_id=_uint(_field(extra, "receiptId", what), f"{what}.receiptId"),
            payer=_address(response.payer, f"{PAYMENT_RESPONSE_HEADER} payer"),
            network=response.network,
            price=_uint(response.amount, f"{PAYMENT_RESPONSE_HEADER} amount"),
            accepted=_uint(_field(extra, "accepted", what), f"{what}.accepted"),
            credit=_uint(_field(extra, "credit", what), f"{what}.credit"),
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
