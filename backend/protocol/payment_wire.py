"""The payment protocol's values on the wire (``backend/protocol/payment_http.py`` has the
spec): uint256 amounts as decimal strings, checksummed addresses, the EIP-712 ``Voucher``
message and a signed voucher as JSON, CAIP-2 networks, base64 JSON header values; each parser
raises ValueError naming the field that is wrong.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any

from eth_utils import is_address, is_checksum_address, to_checksum_address
from pydantic import ValidationError

from backend.protocol.eip712 import (
    SessionKeyAuthorization,
    SignedSessionKeyAuthorization,
    SignedVoucher,
    Voucher,
    parse_signature,
)
from backend.protocol.json_fields import exact_keys

SCHEME = "openledger-voucher"
X402_VERSION = 2
PAYER_HEADER = "X-OpenLedger-Payer"
MAX_PAYMENT_HEADER = 16_384  # characters; a payment with its echoed requirement is ~3,000
UINT256_MAX = 2**256 - 1
_VOUCHER_FIELDS = ("payer", "node", "modelId", "cumulativeAmount", "deadline")
_AUTHORIZATION_FIELDS = ("payer", "node", "signer", "expiry", "allowance", "nonce", "deadline")
SESSION_KEY_AUTHORIZATION = "sessionKeyAuthorization"  # optional field of a payment's payload


# ---------------------------------------------------------------- field parsing


def parse_uint(value: object, what: str) -> int:
    """A uint256 given as a JSON integer or a decimal string."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{what} must be an integer or a decimal string, got {value!r}")
    if isinstance(value, str) and not (value.isascii() and value.isdecimal()):
        raise ValueError(f"{what} must be a decimal string of digits, got {value!r}")
    number = int(value)
    if not 0 <= number <= UINT256_MAX:
        raise ValueError(f"{what} must be in [0, 2**256), got {number}")
    return number


def parse_address(value: object, what: str) -> str:
    """A 0x address, checksummed; a mixed-case one must carry a valid EIP-55 checksum."""
    if not isinstance(value, str) or not is_address(value) or not value.startswith("0x"):
        raise ValueError(f"{what} must be a 0x-prefixed 20-byte hex address, got {value!r}")
    digits = value[2:]
    if digits != digits.lower() and digits != digits.upper() and not is_checksum_address(value):
        raise ValueError(f"{what} has a wrong EIP-55 checksum (a typo?): {value!r}")
    return to_checksum_address(value)


def json_object(value: object, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValueError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def json_field(data: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in data:
        raise ValueError(f"{what} lacks field {key!r}")
    return data[key]


def parse_payer(text: str) -> str:
    """The checksummed address of an ``X-OpenLedger-Payer`` header; ValueError otherwise."""
    return parse_address(text.strip(), PAYER_HEADER)


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
    data = json_object(data, what)
    unknown = sorted(set(data) - {"voucher", "signature"})
    if unknown:
        raise ValueError(f"{what} has unknown field(s) {', '.join(unknown)}")
    voucher = parse_voucher_message(json_field(data, "voucher", what), f"{what}.voucher")
    signature = parse_signature(json_field(data, "signature", what), f"{what}.signature")
    return SignedVoucher(voucher, signature)


def parse_voucher_message(data: object, what: str) -> Voucher:
    """The voucher of :func:`voucher_message`'s form; ValueError naming the field."""
    message = exact_keys(data, _VOUCHER_FIELDS, what)
    return Voucher(
        payer=parse_address(message["payer"], f"{what}.payer"),
        node=parse_address(message["node"], f"{what}.node"),
        model_id=parse_uint(message["modelId"], f"{what}.modelId"),
        cumulative_amount=parse_uint(message["cumulativeAmount"], f"{what}.cumulativeAmount"),
        deadline=parse_uint(message["deadline"], f"{what}.deadline"),
    )


# ---------------------------------------------------------------- payment payloads


def session_key_authorization_json(signed: SignedSessionKeyAuthorization) -> dict[str, Any]:
    """``{"authorization": <SessionKeyAuthorization message>, "signature": "0x<r><s><v>"}``,
    integers as decimal strings like a voucher's: the optional ``sessionKeyAuthorization`` of a
    payment's ``payload``, which the node submits (``authorizeSessionKeyWithSig``) before it
    checks a voucher signed by that key."""
    message = signed.authorization.message()
    return {
        "authorization": {k: str(v) if isinstance(v, int) else v for k, v in message.items()},
        "signature": "0x" + signed.signature.to_bytes().hex(),
    }


def parse_session_key_authorization(data: object, what: str) -> SignedSessionKeyAuthorization:
    """The signed authorization of :func:`session_key_authorization_json`'s form; ValueError
    naming the field."""
    data = exact_keys(data, ("authorization", "signature"), what)
    message = exact_keys(data["authorization"], _AUTHORIZATION_FIELDS, f"{what}.authorization")
    where = f"{what}.authorization"
    authorization = SessionKeyAuthorization(
        payer=parse_address(message["payer"], f"{where}.payer"),
        node=parse_address(message["node"], f"{where}.node"),
        signer=parse_address(message["signer"], f"{where}.signer"),
        expiry=parse_uint(message["expiry"], f"{where}.expiry"),
        allowance=parse_uint(message["allowance"], f"{where}.allowance"),
        nonce=parse_uint(message["nonce"], f"{where}.nonce"),
        deadline=parse_uint(message["deadline"], f"{where}.deadline"),
    )
    signature = parse_signature(data["signature"], f"{what}.signature")
    return SignedSessionKeyAuthorization(authorization, signature)


def payment_payload_json(
    signed: SignedVoucher, authorization: SignedSessionKeyAuthorization | None = None
) -> dict[str, Any]:
    """A payment's ``payload``: the signed voucher, and the session-key authorization for the
    node to relay when one is given (without it, exactly :func:`signed_voucher_json`)."""
    payload = signed_voucher_json(signed)
    if authorization is not None:
        payload[SESSION_KEY_AUTHORIZATION] = session_key_authorization_json(authorization)
    return payload


def parse_payment_payload(
    data: object, what: str
) -> tuple[SignedVoucher, SignedSessionKeyAuthorization | None]:
    """The voucher and the optional session-key authorization of a payment's ``payload``;
    ValueError naming the field."""
    data = json_object(data, what)
    if SESSION_KEY_AUTHORIZATION not in data:
        return parse_signed_voucher(data, what), None
    rest = {k: v for k, v in data.items() if k != SESSION_KEY_AUTHORIZATION}
    authorization = parse_session_key_authorization(
        data[SESSION_KEY_AUTHORIZATION], f"{what}.{SESSION_KEY_AUTHORIZATION}"
    )
    return parse_signed_voucher(rest, what), authorization


# ---------------------------------------------------------------- header values


def base64_json(text: str, what: str) -> Any:
    """The JSON in a base64 header value (padding optional, at most ``MAX_PAYMENT_HEADER``)."""
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


def validate_model(cls: Any, data: Any, what: str) -> Any:
    """``cls`` (an x402 pydantic model) from ``data``; ValueError naming its first error."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise ValueError(f"{what}: {where}: {first['msg']}") from None
