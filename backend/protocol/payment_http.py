"""The HTTP payment protocol between an inference node and its clients (one source of truth).

Every paid endpoint (``/v1/completions``, ``/v1/chat/completions`` …) speaks it; the node's
payment gate (``inference_node/server/payment_gate.py``) answers with it and the client SDK
(``backend/protocol/inference_client.py``) pays with it.

Request headers
    ``X-OpenLedger-Payer: 0x…``
        The address that pays (its deposit in InferencePayments). It lets the node quote a
        request that carries no voucher.
    ``X-OpenLedger-Voucher: <base64url>``
        base64url (RFC 4648 §5; the encoder leaves out the ``=`` padding, the decoder accepts
        both) of the compact JSON of :meth:`SignedVoucher.to_json`::

            {"payer":"0x…","node":"0x…","model_id":1,"cumulative_amount":…,"deadline":…,
             "signature":"0x<r><s><v>"}

        Integers may be JSON numbers or decimal strings (clients whose JSON numbers are
        doubles, such as JavaScript, must send amounts as strings). The signature must be
        canonical, as ``ECDSA.tryRecover`` on-chain demands: ``v`` 27/28 (or 0/1),
        ``0 < r < n``, ``0 < s <= n/2``; anything else could never be redeemed.

Payment answers (HTTP 402 and 400), shaped like OpenAI errors so that OpenAI SDKs surface the
message, plus the quote to sign::

    {"error": {"message": str, "type": str, "code": str, "param": str | null},
     "quote": Quote.to_json() | null}

* 402, ``type`` ``"payment_required"``: no voucher, or a voucher that does not pay enough
  (yet). ``code`` is :attr:`PaymentRequiredError.reason` (``underpaid``,
  ``deadline_too_soon``, ``session_key_expired``, ``insufficient_deposit``) or
  ``voucher_required`` (payer known, no voucher) or ``payer_required``.
* 400, ``type`` ``"invalid_voucher"``: a voucher that resending can never make valid; ``code``
  is :attr:`InvalidVoucherError.reason` (``wrong_signer``, ``channel_mismatch``) or
  ``malformed_voucher`` (undecodable header, ``param`` names it) or ``payer_mismatch``
  (payer header and voucher disagree).
* 400, ``type`` ``"invalid_request_error"``, ``code`` ``"malformed_payer"``: the payer header
  is not an address (``param`` names it).

``quote`` is present in every payment answer — that marks the answer as one (a 400 without a
``quote`` key is an ordinary bad request) — and is a fresh quote whenever the payer is known
(from the payer header or the voucher). Decision: a request with neither header is answered
402 ``payer_required`` with ``"quote": null`` — a quote names its channel (payer, node, model)
and the amount to sign depends on what that channel already accepted, so without a payer
there is nothing to sign; the client resends with ``X-OpenLedger-Payer``.

Success headers (set on the answer after the receipt is written)
    ``X-OpenLedger-Receipt``  the receipt's id in the node's ledger
    ``X-OpenLedger-Price``    the actual price of the request, OPEN wei (decimal)
    ``X-OpenLedger-Accepted`` the channel's accepted cumulative amount, OPEN wei
    ``X-OpenLedger-Credit``   accepted - consumed after this request, OPEN wei; requests still
                              in flight on the channel may spend part of it
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from eth_utils import is_address, to_checksum_address

from backend.protocol.eip712 import (
    VOUCHER_TYPE,
    Domain,
    Signature,
    SignedVoucher,
    Voucher,
)

PAYER_HEADER = "X-OpenLedger-Payer"
VOUCHER_HEADER = "X-OpenLedger-Voucher"
RECEIPT_HEADER = "X-OpenLedger-Receipt"
PRICE_HEADER = "X-OpenLedger-Price"
ACCEPTED_HEADER = "X-OpenLedger-Accepted"
CREDIT_HEADER = "X-OpenLedger-Credit"

PAYMENT_REQUIRED = "payment_required"  # error type of 402 answers
INVALID_VOUCHER = "invalid_voucher"  # error type of 400 answers about the voucher
INVALID_REQUEST = "invalid_request_error"  # error type of a malformed payer header
PAYMENT_STATUSES = (400, 402)

MAX_VOUCHER_HEADER = 2_048  # characters; an encoded voucher is about 400
UINT256_MAX = 2**256 - 1
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
EIP712_DOMAIN_TYPE = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]
_BASE64URL = re.compile(r"[A-Za-z0-9_-]*")
_VOUCHER_FIELDS = ("payer", "node", "model_id", "cumulative_amount", "deadline", "signature")


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


def _signature(value: object, where: str = VOUCHER_HEADER) -> Signature:
    what = f"{where} signature"
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ValueError(f"{what} must be 0x-prefixed hex, got {value!r}")
    try:
        raw = bytes.fromhex(value[2:])
    except ValueError:
        raise ValueError(f"{what} is not hex: {value!r}") from None
    if len(raw) != 65:
        raise ValueError(f"{what} must be 65 bytes (r, s, v), got {len(raw)}")
    signature = Signature.from_bytes(raw)
    r, s = int.from_bytes(signature.r, "big"), int.from_bytes(signature.s, "big")
    if signature.v not in (27, 28):
        raise ValueError(f"{what} v must be 27 or 28 (or 0 or 1), got {raw[64]}")
    if not 0 < r < SECP256K1_N:
        raise ValueError(f"{what} r is out of range")
    if not 0 < s <= SECP256K1_N // 2:
        raise ValueError(f"{what} s must be in the lower half of the curve order (EIP-2)")
    return signature


# ---------------------------------------------------------------- voucher header


def encode_voucher(signed: SignedVoucher) -> str:
    """The ``X-OpenLedger-Voucher`` value of ``signed``."""
    compact = json.dumps(signed.to_json(), separators=(",", ":"))
    return base64.urlsafe_b64encode(compact.encode()).rstrip(b"=").decode("ascii")


def decode_voucher(text: str) -> SignedVoucher:
    """The signed voucher of an ``X-OpenLedger-Voucher`` value; ValueError naming what is wrong."""
    text = text.strip()
    if not text:
        raise ValueError(f"{VOUCHER_HEADER} is empty")
    if len(text) > MAX_VOUCHER_HEADER:
        raise ValueError(
            f"{VOUCHER_HEADER} is {len(text)} characters, at most {MAX_VOUCHER_HEADER}"
        )
    body = text.rstrip("=")
    if not _BASE64URL.fullmatch(body):
        raise ValueError(f"{VOUCHER_HEADER} is not base64url (A-Z a-z 0-9 - _)")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except binascii.Error:
        raise ValueError(f"{VOUCHER_HEADER} is not base64url: truncated") from None
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{VOUCHER_HEADER} is not base64url of JSON: {exc}") from None
    return parse_signed_voucher(data, VOUCHER_HEADER)


def voucher_json(signed: SignedVoucher) -> dict[str, Any]:
    """The wire JSON of a signed voucher: amounts as decimal strings (safe in JavaScript)."""
    data = signed.to_json()
    for key in ("model_id", "cumulative_amount", "deadline"):
        data[key] = str(data[key])
    return data


def parse_signed_voucher(data: object, what: str) -> SignedVoucher:
    """The signed voucher of its wire JSON; ValueError naming what is wrong."""
    data = _object(data, what)
    missing = [k for k in _VOUCHER_FIELDS if k not in data]
    if missing:
        raise ValueError(f"{what} lacks field(s) {', '.join(missing)}")
    unknown = sorted(set(data) - set(_VOUCHER_FIELDS))
    if unknown:
        raise ValueError(f"{what} has unknown field(s) {', '.join(unknown)}")
    voucher = Voucher(
        payer=_address(data["payer"], f"{what} payer"),
        node=_address(data["node"], f"{what} node"),
        model_id=_uint(data["model_id"], f"{what} model_id"),
        cumulative_amount=_uint(data["cumulative_amount"], f"{what} cumulative_amount"),
        deadline=_uint(data["deadline"], f"{what} deadline"),
    )
    return SignedVoucher(voucher, _signature(data["signature"], what))


# ---------------------------------------------------------------- the quote


@dataclass(frozen=True)
class PaymentQuote:
    """A node's quote as a client reads it (the wire form of the node's ``Quote``)."""

    domain: Domain
    payer: str
    node: str
    model_id: int
    price: int  # OPEN wei, quoted up front from max_tokens
    last_accepted: int  # OPEN wei, cumulative amount of the channel's latest voucher
    credit: int  # OPEN wei, what the channel's latest voucher still covers
    cumulative_amount: int  # OPEN wei, the least cumulative amount to sign
    min_deadline: int  # unix seconds, the earliest voucher deadline the node accepts
    max_deadline: int | None = None  # unix seconds, the latest one (None: not stated)
    latest: SignedVoucher | None = None  # the payer's latest voucher the node holds

    @property
    def channel(self) -> tuple[str, str, int]:
        return (self.payer, self.node, self.model_id)

    def voucher(self, cumulative_amount: int, deadline: int) -> Voucher:
        """The voucher on this quote's channel for ``cumulative_amount`` until ``deadline``."""
        return Voucher(self.payer, self.node, self.model_id, cumulative_amount, deadline)

    def to_json(self) -> dict[str, Any]:
        """The wire form (the same as the node's ``Quote.to_json``)."""
        return {
            "price": str(self.price),
            "channel": {"payer": self.payer, "node": self.node, "modelId": self.model_id},
            "lastAccepted": str(self.last_accepted),
            "credit": str(self.credit),
            "cumulativeAmount": str(self.cumulative_amount),
            "minDeadline": self.min_deadline,
            "maxDeadline": self.max_deadline,
            "latestVoucher": None if self.latest is None else voucher_json(self.latest),
            "eip712": {
                "domain": self.domain.as_dict(),
                "types": {"EIP712Domain": EIP712_DOMAIN_TYPE, "Voucher": VOUCHER_TYPE},
                "primaryType": "Voucher",
            },
        }

    @classmethod
    def from_json(cls, data: object) -> PaymentQuote:
        """Parses and checks a quote; ValueError naming the bad field."""
        q = _object(data, "quote")
        channel = _object(_field(q, "channel", "quote"), "quote channel")
        eip712 = _object(_field(q, "eip712", "quote"), "quote eip712")
        if eip712.get("primaryType") != "Voucher":
            raise ValueError(f"quote asks to sign {eip712.get('primaryType')!r}, not a Voucher")
        types = _object(_field(eip712, "types", "quote eip712"), "quote eip712 types")
        if types.get("Voucher") != VOUCHER_TYPE:
            raise ValueError(f"quote Voucher type is {types.get('Voucher')!r}, not {VOUCHER_TYPE}")
        d = _object(_field(eip712, "domain", "quote eip712"), "quote eip712 domain")
        name, version = _field(d, "name", "quote domain"), _field(d, "version", "quote domain")
        if not isinstance(name, str) or not isinstance(version, str):
            raise ValueError(f"quote domain name and version must be strings: {name!r} {version!r}")
        domain = Domain(
            chain_id=_uint(_field(d, "chainId", "quote domain"), "quote domain chainId"),
            verifying_contract=_address(
                _field(d, "verifyingContract", "quote domain"), "quote domain verifyingContract"
            ),
            name=name,
            version=version,
        )
        quote = cls(
            domain=domain,
            payer=_address(_field(channel, "payer", "quote channel"), "quote channel payer"),
            node=_address(_field(channel, "node", "quote channel"), "quote channel node"),
            model_id=_uint(_field(channel, "modelId", "quote channel"), "quote channel modelId"),
            price=_uint(_field(q, "price", "quote"), "quote price"),
            last_accepted=_uint(_field(q, "lastAccepted", "quote"), "quote lastAccepted"),
            credit=_uint(_field(q, "credit", "quote"), "quote credit"),
            cumulative_amount=_uint(
                _field(q, "cumulativeAmount", "quote"), "quote cumulativeAmount"
            ),
            min_deadline=_uint(_field(q, "minDeadline", "quote"), "quote minDeadline"),
            max_deadline=None
            if q.get("maxDeadline") is None
            else _uint(q["maxDeadline"], "quote maxDeadline"),
            latest=None
            if q.get("latestVoucher") is None
            else parse_signed_voucher(q["latestVoucher"], "quote latestVoucher"),
        )
        if quote.cumulative_amount < quote.last_accepted:
            raise ValueError(
                f"quote cumulativeAmount {quote.cumulative_amount} is below its lastAccepted "
                f"{quote.last_accepted}"
            )
        if quote.credit > quote.last_accepted:
            raise ValueError(
                f"quote credit {quote.credit} exceeds its lastAccepted {quote.last_accepted}"
            )
        return quote


# ---------------------------------------------------------------- payment answers


def payment_error_body(
    *,
    error_type: str,
    code: str,
    message: str,
    quote: Mapping[str, Any] | None,
    param: str | None = None,
) -> dict[str, Any]:
    """The JSON body of a 402/400 payment answer (``quote``: ``Quote.to_json()`` or None)."""
    return {
        "error": {"message": message, "type": error_type, "code": code, "param": param},
        "quote": None if quote is None else dict(quote),
    }


@dataclass(frozen=True)
class PaymentAnswer:
    """A node's 402/400 payment answer, parsed."""

    status: int
    type: str
    code: str
    message: str
    param: str | None
    quote: PaymentQuote | None


def parse_payment_answer(status: int, body: object) -> PaymentAnswer | None:
    """The payment answer of a response, or None when it is not one (another status, or a body
    without the ``error`` object and ``quote`` key). ValueError when its quote is malformed."""
    if status not in PAYMENT_STATUSES or not isinstance(body, dict) or "quote" not in body:
        return None
    error = body.get("error")
    if not isinstance(error, dict) or not isinstance(error.get("message"), str):
        return None
    quote = None if body["quote"] is None else PaymentQuote.from_json(body["quote"])
    param = error.get("param")
    return PaymentAnswer(
        status=status,
        type=str(error.get("type")),
        code=str(error.get("code")),
        message=error["message"],
        param=param if isinstance(param, str) else None,
        quote=quote,
    )


# ---------------------------------------------------------------- success headers


@dataclass(frozen=True)
class PaymentReceipt:
    """What the success headers say about a paid request."""

    receipt_id: int
    price: int  # OPEN wei, actual
    accepted: int  # OPEN wei, the channel's accepted cumulative amount
    credit: int  # OPEN wei, accepted - consumed after this request

    def to_headers(self) -> dict[str, str]:
        return {
            RECEIPT_HEADER: str(self.receipt_id),
            PRICE_HEADER: str(self.price),
            ACCEPTED_HEADER: str(self.accepted),
            CREDIT_HEADER: str(self.credit),
        }

    @classmethod
    def from_headers(cls, headers: Mapping[str, str]) -> PaymentReceipt | None:
        """The receipt of a response's headers (matched case-insensitively); None when the
        response carries none; ValueError when they are partial or malformed."""
        names = (RECEIPT_HEADER, PRICE_HEADER, ACCEPTED_HEADER, CREDIT_HEADER)
        values = {name: header(headers, name) for name in names}
        if all(v is None for v in values.values()):
            return None
        missing = [name for name, v in values.items() if v is None]
        if missing:
            raise ValueError(f"payment headers lack {', '.join(missing)}")
        r, p, a, c = (_uint(values[name], name) for name in names)
        return cls(receipt_id=r, price=p, accepted=a, credit=c)


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
