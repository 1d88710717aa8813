"""The HTTP payment protocol, x402 v2 scheme ``openledger-voucher``: the payer header, the
``PAYMENT-SIGNATURE`` payment, the ``PAYMENT-REQUIRED`` requirement with its quote, the 402/400
answers and the ``PAYMENT-RESPONSE`` receipt — and the node's payment gate that speaks it,
against a real anvil."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

import anyio
import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_utils import keccak, to_checksum_address
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_response_header,
    decode_payment_signature_header,
    encode_payment_required_header,
    encode_payment_signature_header,
)
from x402.schemas.payments import (
    PaymentPayload,
    PaymentRequired,
    PaymentRequirements,
    ResourceInfo,
)
from x402.schemas.responses import SettleResponse

from backend.protocol.eip712 import (
    EIP712_DOMAIN_TYPE,
    SECP256K1_N,
    VOUCHER_TYPE,
    Domain,
    Signature,
    SignedVoucher,
    Voucher,
    sign_voucher,
    voucher_digest,
)
from backend.protocol.payment_http import (
    INVALID_REQUEST,
    INVALID_VOUCHER,
    MAX_PAYMENT_HEADER,
    PAYER_HEADER,
    PAYMENT_REQUIRED,
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    QUOTE_TIMEOUT,
    SCHEME,
    SUGGESTED_VALIDITY,
    PaymentQuote,
    PaymentReceipt,
    caip2,
    decode_payment,
    decode_payment_required,
    encode_payment,
    parse_payer,
    parse_payment_answer,
    payer_requirement,
    payment_error_body,
    payment_required,
    signed_voucher_json,
    voucher_message,
)
from inference_node.payments import Receipt, VoucherVerifier, make_quote
from inference_node.server.payment_gate import PaymentGate, PaymentHTTPError
from tests.node.conftest import MODEL_ID, OPEN, PRICING, World

DOMAIN = Domain(chain_id=31337, verifying_contract=to_checksum_address("0x" + "c0" * 20))
NETWORK = "eip155:31337"
PAYER_KEY = b"\x01" * 32
PAYER = Account.from_key(PAYER_KEY).address
NODE = to_checksum_address("0x" + "ab" * 20)
ASSET = to_checksum_address("0x" + "0e" * 20)  # the OPEN token
PRICE = PRICING.price(10, 20)  # OPEN wei
MIN_DEADLINE, MAX_DEADLINE = 1_800_000_000, 1_800_600_000


def signed_voucher(cumulative: int = PRICE, **fields: Any) -> SignedVoucher:
    values = {
        "payer": PAYER,
        "node": NODE,
        "model_id": MODEL_ID,
        "cumulative_amount": cumulative,
        "deadline": 1_900_000_000,
        **fields,
    }
    return sign_voucher(PAYER_KEY, DOMAIN, Voucher(**values))


def b64(data: object) -> str:
    """Standard base64 (x402's) of ``data``'s JSON, or of raw bytes."""
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.b64encode(raw).decode()


def unb64(text: str) -> Any:
    return json.loads(base64.b64decode(text))


def high_s(signed: SignedVoucher) -> SignedVoucher:
    """The same signature with s' = n - s (valid off-chain, refused by OZ ECDSA on-chain)."""
    sig = signed.signature
    s = SECP256K1_N - int.from_bytes(sig.s, "big")
    return SignedVoucher(signed.voucher, Signature(55 - sig.v, sig.r, s.to_bytes(32, "big")))


def quote(latest: SignedVoucher | None = None, **changes: Any) -> PaymentQuote:
    values: dict[str, Any] = {
        "price": PRICE,
        "accepted": 3 * PRICE,
        "consumed": 2 * PRICE,
        "reserved": PRICE // 2,
        "min_deadline": MIN_DEADLINE,
        "max_deadline": MAX_DEADLINE,
        "latest": signed_voucher(cumulative=3 * PRICE) if latest is None else latest,
        **changes,
    }
    return make_quote(DOMAIN, (PAYER, NODE, MODEL_ID), asset=ASSET, **values)


def requirement() -> PaymentRequirements:
    return quote().requirements()


def requirement_json() -> dict[str, Any]:
    """The requirement as it travels (camelCase JSON)."""
    return json.loads(requirement().model_dump_json(by_alias=True, exclude_none=True))


def payment_json(
    voucher: Mapping[str, Any] | None = None,
    *,
    payload: object = None,
    accepted: object = None,
    **top: Any,
) -> dict[str, Any]:
    """A ``PaymentPayload`` JSON paying :func:`requirement` with :func:`signed_voucher`, with
    ``voucher`` fields, ``payload`` and ``accepted`` fields (a mapping) or values (anything
    else) and top-level fields changed; the value ``KeyError`` deletes a field."""

    def changed(base: dict[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
        out = {**base, **changes}
        return {k: v for k, v in out.items() if v is not KeyError}

    def part(base: dict[str, Any], change: object) -> object:
        if change is None:
            return base
        return changed(base, change) if isinstance(change, Mapping) else change

    body = part(signed_voucher_json(signed_voucher()), payload)
    if voucher is not None and isinstance(body, dict):
        body["voucher"] = changed(body["voucher"], voucher)
    wire = {"x402Version": 2, "accepted": part(requirement_json(), accepted), "payload": body}
    return changed(wire, top)


def mutated(data: dict[str, Any], path: tuple[str, ...], value: object) -> dict[str, Any]:
    """A deep copy of ``data`` with the field at ``path`` set to ``value`` (KeyError: deleted)."""
    data = json.loads(json.dumps(data))
    target = data
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


# ---------------------------------------------------------------- PAYMENT-SIGNATURE


def test_payment_header_round_trips_and_is_standard_x402() -> None:
    signed = signed_voucher(cumulative=12 * OPEN)
    text = encode_payment(requirement(), signed)
    assert text.isascii() and " " not in text
    assert decode_payment(text) == (signed, requirement())
    assert decode_payment(text.rstrip("=")) == (signed, requirement())  # unpadded is read too
    assert decode_payment(f"  {text}\n") == (signed, requirement())

    wire = unb64(text)
    assert wire == {
        "x402Version": 2,
        "accepted": requirement_json(),
        "payload": {
            "voucher": {
                "payer": PAYER, "node": NODE, "modelId": str(MODEL_ID),
                "cumulativeAmount": str(12 * OPEN), "deadline": "1900000000",
            },
            "signature": "0x" + signed.signature.to_bytes().hex(),
        },
    }  # fmt: skip
    assert wire["payload"]["voucher"] == voucher_message(signed.voucher)

    standard = decode_payment_signature_header(text)  # x402's own decoder reads it
    assert isinstance(standard, PaymentPayload)
    assert (standard.x402_version, standard.accepted) == (2, requirement())
    assert standard.payload == signed_voucher_json(signed)
    # ... and what x402's encoder writes is read back.
    assert decode_payment(encode_payment_signature_header(standard)) == (signed, requirement())


def test_payment_header_accepts_amounts_as_decimal_strings_or_numbers() -> None:
    signed = signed_voucher(cumulative=2**70)
    as_numbers = {"cumulativeAmount": 2**70, "modelId": MODEL_ID, "deadline": 1_900_000_000}
    as_strings = {k: str(v) for k, v in as_numbers.items()}
    for changes in (as_numbers, as_strings):
        signature = signed_voucher_json(signed)["signature"]
        assert decode_payment(paid(changes, payload={"signature": signature}))[0] == signed
    lower = {"payer": PAYER.lower(), "node": NODE.lower()}  # addresses are checksummed
    assert decode_payment(paid(lower))[0] == signed_voucher()


def test_payment_header_normalizes_v_0_or_1() -> None:
    signed = signed_voucher()
    raw = signed.signature.to_bytes()
    low_v = "0x" + (raw[:64] + bytes([raw[64] - 27])).hex()
    assert decode_payment(signed_with(low_v))[0] == signed
    assert decode_payment(signed_with("0x" + raw.hex().upper()))[0] == signed


def paid(voucher: Mapping[str, Any] | None = None, **changes: Any) -> str:
    """The ``PAYMENT-SIGNATURE`` text of :func:`payment_json`."""
    return b64(payment_json(voucher, **changes))


SIG = signed_voucher().signature.to_bytes()
R, S, V = SIG[:32].hex(), SIG[32:64].hex(), SIG[64:].hex()


def signed_with(signature: object) -> str:
    return paid(payload={"signature": signature})


MALFORMED_PAYMENTS = [
    ("", "is empty"),
    ("  \n", "is empty"),
    ("a" * (MAX_PAYMENT_HEADER + 1), f"at most {MAX_PAYMENT_HEADER}"),
    ("not base64!", "is not base64"),
    ("abcde", "is not base64"),
    (base64.urlsafe_b64encode(b"\xfb\xff" * 3).decode(), "is not base64"),  # url alphabet
    (b64(b"\xff\xfe"), "not base64 of JSON"),
    (b64(b"{oops"), "not base64 of JSON"),
    (b64([1, 2]), "must be a JSON object, got list"),
    (b64("text"), "must be a JSON object, got str"),
    (paid(x402Version=1), "x402 version 1, not 2"),
    (paid(x402Version="2"), "x402 version '2', not 2"),
    (paid(x402Version=KeyError), "x402 version None, not 2"),
    (paid(accepted=KeyError), "accepted: Field required"),
    (paid(accepted={"payTo": KeyError}), "accepted.payTo: Field required"),
    (paid(payload=KeyError), "payload: Field required"),
    (paid(payload=[]), "payload: Input should be a valid dictionary"),
    (paid(accepted={"scheme": "exact"}), "pays scheme 'exact'"),
    (paid(payload={"voucher": KeyError}), "payload lacks field 'voucher'"),
    (paid(payload={"voucher": "v"}), "payload.voucher must be a JSON object"),
    (paid(payload={"signature": KeyError}), "lacks field 'signature'"),
    (paid(payload={"nonce": 1}), "payload has unknown field(s) nonce"),
    (paid({"deadline": KeyError}), "voucher lacks field(s) deadline"),
    (paid({"payer": KeyError, "node": KeyError}), "lacks field(s) payer, node"),
    (paid({"cumulative_amount": 1}), "unknown field(s) cumulative_amount"),
    (paid({"payer": "0x1234"}), "voucher.payer must be a 0x-prefixed"),
    (paid({"node": "ab" * 20}), "voucher.node must be a 0x-prefixed"),
    (paid({"payer": 7}), "voucher.payer must be a 0x-prefixed"),
    (paid({"cumulativeAmount": -1}), "cumulativeAmount must be in [0, 2**256)"),
    (paid({"cumulativeAmount": 2**256}), "cumulativeAmount must be in"),
    (paid({"cumulativeAmount": str(2**256)}), "cumulativeAmount must be in"),
    (paid({"cumulativeAmount": 1.5}), "cumulativeAmount must be an integer"),
    (paid({"cumulativeAmount": 1.0}), "cumulativeAmount must be an integer"),
    (paid({"cumulativeAmount": "1e18"}), "decimal string of digits"),
    (paid({"cumulativeAmount": "-1"}), "decimal string of digits"),
    (paid({"cumulativeAmount": "0x10"}), "decimal string of digits"),
    (paid({"cumulativeAmount": " 1"}), "decimal string of digits"),
    (paid({"cumulativeAmount": "\uff11\uff12"}), "decimal string of digits"),  # fullwidth 12
    (paid({"deadline": ""}), "voucher.deadline must be a decimal string"),
    (paid({"deadline": None}), "voucher.deadline must be an integer"),
    (paid({"modelId": True}), "voucher.modelId must be an integer"),
    (signed_with("0x1234"), "65 bytes (r, s, v), got 2"),
    (signed_with("0x" + "zz" * 65), "signature is not hex"),
    (signed_with(R + S + V), "must be 0x-prefixed hex"),
    (signed_with(7), "must be 0x-prefixed hex"),
    (signed_with(f"0x{R}{S}1e"), "v must be 27 or 28 (or 0 or 1), got 30"),
    (signed_with(f"0x{R}{S}02"), "or 1), got 2"),
    (signed_with(f"0x{'00' * 32}{S}{V}"), "signature r is out of range"),
    (signed_with(f"0x{SECP256K1_N:064x}{S}{V}"), "signature r is out of range"),
    (signed_with(f"0x{R}{'00' * 32}{V}"), "lower half of the curve order"),
    (signed_with(f"0x{R}{SECP256K1_N // 2 + 1:064x}{V}"), "lower half of the curve order"),
]


@pytest.mark.parametrize(
    ("text", "problem"), MALFORMED_PAYMENTS, ids=[p for _, p in MALFORMED_PAYMENTS]
)
def test_payment_header_names_what_is_malformed(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match=PAYMENT_SIGNATURE_HEADER) as refused:
        decode_payment(text)
    assert problem in str(refused.value)


def test_payment_header_refuses_a_high_s_signature() -> None:
    signed = signed_voucher()
    flipped = high_s(signed)
    assert flipped != signed and int.from_bytes(flipped.signature.s, "big") > SECP256K1_N // 2
    with pytest.raises(ValueError, match="lower half"):
        decode_payment(encode_payment(requirement(), flipped))


BAD_CHECKSUM = NODE[:-1] + NODE[-1].swapcase()  # mixed case, EIP-55 checksum wrong


def test_addresses_with_a_wrong_eip55_checksum_are_refused() -> None:
    with pytest.raises(ValueError, match="X-OpenLedger-Payer has a wrong EIP-55 checksum"):
        parse_payer(BAD_CHECKSUM)
    with pytest.raises(ValueError, match=r"voucher\.node has a wrong EIP-55 checksum"):
        decode_payment(paid({"node": BAD_CHECKSUM}))


def test_payer_header_is_a_checksummed_address() -> None:
    assert parse_payer(f" {PAYER.lower()} ") == PAYER
    assert parse_payer(PAYER.upper().replace("0X", "0x")) == PAYER
    for bad in ("", "0x1234", "ab" * 20, "0x" + "zz" * 20, "0X" + PAYER[2:]):
        with pytest.raises(ValueError, match="X-OpenLedger-Payer must be"):
            parse_payer(bad)


# ---------------------------------------------------------------- the quote


def test_quote_round_trips_through_payment_required() -> None:
    node_quote = quote()
    assert node_quote == PaymentQuote(
        domain=DOMAIN, asset=ASSET, payer=PAYER, node=NODE, model_id=MODEL_ID, price=PRICE,
        last_accepted=3 * PRICE, credit=PRICE // 2, cumulative_amount=3 * PRICE + PRICE // 2,
        min_deadline=MIN_DEADLINE, max_deadline=MAX_DEADLINE,
        latest=signed_voucher(cumulative=3 * PRICE),
    )  # fmt: skip
    text = payment_required(node_quote.requirements(), error="voucher_required: sign")

    standard = decode_payment_required_header(text)  # x402's own decoder reads it
    assert isinstance(standard, PaymentRequired)
    assert (standard.x402_version, standard.error, standard.resource) == (
        2, "voucher_required: sign", None,
    )  # fmt: skip
    assert standard.accepts == [node_quote.requirements()]
    ours = decode_payment_required(text)
    assert ours == standard
    assert decode_payment_required(encode_payment_required_header(standard)) == standard

    parsed = PaymentQuote.from_requirements(ours.accepts[0])
    assert parsed == node_quote and parsed.latest == node_quote.latest
    assert parsed.requirements() == node_quote.requirements()
    assert parsed.channel == (PAYER, NODE, MODEL_ID)
    voucher = parsed.voucher(parsed.cumulative_amount, 1_900_000_000)
    assert voucher == Voucher(PAYER, NODE, MODEL_ID, 3 * PRICE + PRICE // 2, 1_900_000_000)

    # Without a latest voucher (a new channel) it round-trips too.
    fresh = make_quote(
        DOMAIN, (PAYER.lower(), NODE.lower(), MODEL_ID), asset=ASSET.lower(), price=PRICE,
        accepted=0, consumed=0, reserved=0, min_deadline=MIN_DEADLINE, max_deadline=MAX_DEADLINE,
    )  # fmt: skip
    assert (fresh.payer, fresh.node, fresh.asset) == (PAYER, NODE, ASSET)
    text = payment_required(fresh.requirements(), error="e")
    assert unb64(text)["accepts"][0]["extra"]["latestVoucher"] is None
    (read,) = decode_payment_required(text).accepts
    assert PaymentQuote.from_requirements(read) == fresh and fresh.latest is None


def test_quote_requirement_is_the_x402_wire_with_typed_data_ready_to_sign() -> None:
    node_quote = quote()
    wire = unb64(payment_required(node_quote.requirements(), error="e"))
    assert wire["x402Version"] == 2 and "resource" not in wire
    (accepted,) = wire["accepts"]
    extra = accepted.pop("extra")
    assert accepted == {
        "scheme": SCHEME, "network": NETWORK, "asset": ASSET, "amount": str(PRICE),
        "payTo": NODE, "maxTimeoutSeconds": QUOTE_TIMEOUT,
    }  # fmt: skip
    assert SCHEME == "openledger-voucher" and caip2(DOMAIN.chain_id) == NETWORK
    assert extra["channel"] == {"payer": PAYER, "node": NODE, "modelId": str(MODEL_ID)}
    assert (extra["cumulativeAmount"], extra["lastAccepted"], extra["credit"]) == (
        str(3 * PRICE + PRICE // 2), str(3 * PRICE), str(PRICE // 2),
    )  # fmt: skip
    assert (extra["minDeadline"], extra["maxDeadline"]) == (MIN_DEADLINE, MAX_DEADLINE)
    latest = extra["latestVoucher"]
    assert latest == signed_voucher_json(signed_voucher(cumulative=3 * PRICE))
    assert latest["voucher"]["cumulativeAmount"] == str(3 * PRICE)  # strings for JavaScript

    typed = extra["typedData"]
    assert typed["primaryType"] == "Voucher"
    assert list(typed["types"]) == ["EIP712Domain", "Voucher"]  # v4: EIP712Domain first
    assert typed["types"] == {"EIP712Domain": EIP712_DOMAIN_TYPE, "Voucher": VOUCHER_TYPE}
    assert typed["domain"] == DOMAIN.as_dict() and typed["domain"]["chainId"] == 31337
    assert node_quote.suggested_deadline == MIN_DEADLINE + SUGGESTED_VALIDITY
    suggested = node_quote.voucher(node_quote.cumulative_amount, node_quote.suggested_deadline)
    assert typed["message"] == voucher_message(suggested)
    assert typed["message"]["cumulativeAmount"] == extra["cumulativeAmount"]
    assert extra["voucherTypes"] == {"Voucher": VOUCHER_TYPE}
    assert "EIP712Domain" not in extra["voucherTypes"]  # ethers refuses it

    # A wallet's eth_signTypedData_v4 of typedData, and ethers' signTypedData(domain,
    # voucherTypes, message), sign the very digest the node verifies.
    signable = encode_typed_data(full_message=typed)
    assert keccak(b"\x19" + signable.version + signable.header + signable.body) == (
        voucher_digest(DOMAIN, suggested)
    )
    v4 = Account.sign_typed_data(PAYER_KEY, full_message=typed)
    ethers = Account.sign_typed_data(
        PAYER_KEY, typed["domain"], extra["voucherTypes"], typed["message"]
    )
    expected = sign_voucher(PAYER_KEY, DOMAIN, suggested).signature.to_bytes()
    assert bytes(v4.signature) == bytes(ethers.signature) == expected


def test_suggested_deadline_stays_inside_the_window() -> None:
    assert quote().suggested_deadline == MIN_DEADLINE + SUGGESTED_VALIDITY
    narrow = quote(max_deadline=MIN_DEADLINE + 60)
    assert narrow.suggested_deadline == MIN_DEADLINE + 60
    assert narrow.typed_data()["message"]["deadline"] == str(MIN_DEADLINE + 60)


OTHER = to_checksum_address("0x" + "12" * 20)


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("extra", "channel"), None, "needs the payer first: send X-OpenLedger-Payer"),
        (("extra", "channel"), KeyError, "needs the payer first"),
        (("extra", "channel"), [], "extra.channel must be a JSON object, got list"),
        (("extra", "channel", "node"), "0xnope", "extra.channel.node must be"),
        (("extra", "channel", "payer"), KeyError, "extra.channel lacks field 'payer'"),
        (("extra", "channel", "modelId"), -2, "extra.channel.modelId must be in"),
        (("scheme",), "exact", "requirement scheme is 'exact', not 'openledger-voucher'"),
        (("network",), "eip155:1", "network 'eip155:1' is not the domain's chain 'eip155:31337'"),
        (("network",), "31337", "is not the domain's chain"),
        (("payTo",), OTHER, f"payTo {OTHER} is not the channel's node {NODE}"),
        (("payTo",), "node", "payTo must be a 0x-prefixed"),
        (("asset",), "OPEN", "asset must be a 0x-prefixed"),
        (("amount",), "1.5", "amount must be a decimal string"),
        (("amount",), "-1", "amount must be a decimal string"),
        (("extra", "typedData"), KeyError, "extra lacks field 'typedData'"),
        (("extra", "typedData"), "sign me", "extra.typedData must be a JSON object"),
        (("extra", "typedData", "primaryType"), "Permit", "signs 'Permit', not a Voucher"),
        (("extra", "typedData", "types", "Voucher"), [], "Voucher type is []"),
        (("extra", "typedData", "types", "Voucher"), VOUCHER_TYPE[::-1], "Voucher type is"),
        (("extra", "typedData", "types", "EIP712Domain"), KeyError, "EIP712Domain is None"),
        (("extra", "typedData", "types", "EIP712Domain"), EIP712_DOMAIN_TYPE[:3], "EIP712Domain"),
        (("extra", "typedData", "types"), KeyError, "extra.typedData lacks field 'types'"),
        (("extra", "typedData", "domain", "chainId"), "x", "domain chainId must be a decimal"),
        (("extra", "typedData", "domain", "chainId"), KeyError, "domain lacks field 'chainId'"),
        (("extra", "typedData", "domain", "name"), 7, "name and version must be strings"),
        (("extra", "typedData", "domain", "version"), 1, "name and version must be strings"),
        (("extra", "typedData", "domain", "verifyingContract"), "0x", "verifyingContract must"),
        (("extra", "cumulativeAmount"), str(3 * PRICE - 1), "below its lastAccepted"),
        (("extra", "cumulativeAmount"), 1.5, "extra.cumulativeAmount must be an integer"),
        (("extra", "credit"), str(3 * PRICE + 1), "exceeds its lastAccepted"),
        (("extra", "lastAccepted"), KeyError, "extra lacks field 'lastAccepted'"),
        (("extra", "maxDeadline"), MIN_DEADLINE - 1, "is before minDeadline"),
        (("extra", "minDeadline"), "soon", "extra.minDeadline must be a decimal string"),
        (("extra", "latestVoucher", "signature"), "0x12", "latestVoucher.signature must be 65"),
        (("extra", "latestVoucher", "voucher", "deadline"), KeyError, "lacks field(s) deadline"),
    ],
)
def test_quote_from_requirements_names_the_bad_field(
    path: tuple[str, ...], value: object, problem: str
) -> None:
    bad = PaymentRequirements.model_validate(mutated(requirement_json(), path, value))
    with pytest.raises(ValueError) as refused:
        PaymentQuote.from_requirements(bad)
    assert problem in str(refused.value)


def test_quote_from_requirements_reads_addresses_in_any_case() -> None:
    wire = mutated(requirement_json(), ("payTo",), NODE.lower())
    wire = mutated(wire, ("extra", "channel", "payer"), PAYER.lower())
    wire = mutated(wire, ("extra", "typedData", "domain", "chainId"), "31337")
    assert PaymentQuote.from_requirements(PaymentRequirements.model_validate(wire)) == quote()


# ---------------------------------------------------------------- answers and receipts


def test_payment_answer_round_trips() -> None:
    body = payment_error_body(error_type=PAYMENT_REQUIRED, code="underpaid", message="pay more")
    assert body == {
        "error": {
            "message": "pay more", "type": "payment_required", "code": "underpaid", "param": None,
        },
    }  # fmt: skip
    headers = {PAYMENT_REQUIRED_HEADER: payment_required(requirement(), error="underpaid: x")}
    answer = parse_payment_answer(402, headers, json.loads(json.dumps(body)))
    assert answer is not None
    assert (answer.status, answer.type, answer.code, answer.message, answer.param) == (
        402, "payment_required", "underpaid", "pay more", None,
    )  # fmt: skip
    assert answer.requirement == requirement() and answer.quote == quote()

    # A 400 about the voucher, its header read case-insensitively (httpx and plain dicts).
    bad = payment_error_body(
        error_type=INVALID_VOUCHER, code="malformed_payment", message="bad",
        param=PAYMENT_SIGNATURE_HEADER,
    )  # fmt: skip
    for lowered in (httpx.Headers(headers), {k.lower(): v for k, v in headers.items()}):
        answer = parse_payment_answer(400, lowered, bad)
        assert answer is not None and answer.quote == quote()
        assert (answer.type, answer.code, answer.param) == (
            INVALID_VOUCHER, "malformed_payment", PAYMENT_SIGNATURE_HEADER,
        )  # fmt: skip

    # A body that is no OpenAI error: the reason is PaymentRequired.error.
    answer = parse_payment_answer(402, headers, "Payment Required")
    assert answer is not None and answer.quote == quote()
    assert (answer.type, answer.code, answer.message) == (
        PAYMENT_REQUIRED, PAYMENT_REQUIRED, "underpaid: x",
    )  # fmt: skip


def test_payment_answer_picks_our_scheme_among_others() -> None:
    exact = requirement().model_copy(update={"scheme": "exact", "extra": {}})
    required = PaymentRequired(accepts=[exact, requirement()], error="pay")
    headers = {PAYMENT_REQUIRED_HEADER: encode_payment_required_header(required)}
    answer = parse_payment_answer(402, headers, None)
    assert answer is not None and answer.requirement == requirement()
    assert answer.quote == quote()


def test_payment_answer_without_a_payer_has_the_requirement_but_no_quote() -> None:
    unknown = payer_requirement(DOMAIN, ASSET, NODE, PRICE)
    headers = {PAYMENT_REQUIRED_HEADER: payment_required(unknown, error="payer_required: who")}
    body = payment_error_body(error_type=PAYMENT_REQUIRED, code="payer_required", message="who")
    answer = parse_payment_answer(402, headers, body)
    assert answer is not None and answer.quote is None and answer.code == "payer_required"
    assert answer.requirement == unknown
    assert (unknown.scheme, unknown.network, unknown.asset, unknown.pay_to, unknown.amount) == (
        SCHEME, NETWORK, ASSET, NODE, str(PRICE),
    )  # fmt: skip
    assert unknown.extra == {
        "channel": None, "payerHeader": PAYER_HEADER, "domain": DOMAIN.as_dict(),
    }  # fmt: skip
    assert unb64(headers[PAYMENT_REQUIRED_HEADER])["accepts"][0]["extra"]["channel"] is None
    with pytest.raises(ValueError, match="needs the payer first"):
        PaymentQuote.from_requirements(unknown)


def test_only_402_and_400_with_payment_required_are_payment_answers() -> None:
    headers = {PAYMENT_REQUIRED_HEADER: payment_required(requirement(), error="e")}
    body = payment_error_body(error_type=PAYMENT_REQUIRED, code="x", message="m")
    assert parse_payment_answer(200, headers, body) is None
    assert parse_payment_answer(500, headers, body) is None
    assert parse_payment_answer(401, headers, body) is None
    assert parse_payment_answer(402, {}, body) is None  # no PAYMENT-REQUIRED: not ours
    assert parse_payment_answer(400, {"content-type": "application/json"}, body) is None

    exact = requirement().model_copy(update={"scheme": "exact", "extra": {}})
    only_exact = PaymentRequired(accepts=[exact])
    other = {PAYMENT_REQUIRED_HEADER: encode_payment_required_header(only_exact)}
    with pytest.raises(ValueError, match="accepts no 'openledger-voucher' payment"):
        parse_payment_answer(402, other, body)
    with pytest.raises(ValueError, match="PAYMENT-REQUIRED is not base64"):
        parse_payment_answer(402, {PAYMENT_REQUIRED_HEADER: "%%%"}, body)
    v1 = {**unb64(headers[PAYMENT_REQUIRED_HEADER]), "x402Version": 1}
    with pytest.raises(ValueError, match="PAYMENT-REQUIRED is x402 version 1"):
        parse_payment_answer(402, {PAYMENT_REQUIRED_HEADER: b64(v1)}, body)
    no_accepts = {k: v for k, v in v1.items() if k != "accepts"} | {"x402Version": 2}
    with pytest.raises(ValueError, match="PAYMENT-REQUIRED: accepts: Field required"):
        parse_payment_answer(402, {PAYMENT_REQUIRED_HEADER: b64(no_accepts)}, body)
    inflated = mutated(requirement_json(), ("extra", "credit"), str(4 * PRICE))
    bad_quote = mutated(unb64(headers[PAYMENT_REQUIRED_HEADER]), ("accepts",), [inflated])
    with pytest.raises(ValueError, match="exceeds its lastAccepted"):
        parse_payment_answer(402, {PAYMENT_REQUIRED_HEADER: b64(bad_quote)}, body)


def receipt() -> PaymentReceipt:
    return PaymentReceipt(
        receipt_id=7, payer=PAYER, network=NETWORK, price=PRICE, accepted=2**80, credit=OPEN // 3
    )


def test_payment_response_round_trips_case_insensitively() -> None:
    headers = receipt().to_headers()
    assert list(headers) == [PAYMENT_RESPONSE_HEADER]
    standard = decode_payment_response_header(headers[PAYMENT_RESPONSE_HEADER])  # x402 reads it
    assert standard == SettleResponse(
        success=True, transaction="", network=NETWORK, payer=PAYER, amount=str(PRICE),
        extra={"receiptId": "7", "accepted": str(2**80), "credit": str(OPEN // 3)},
    )  # fmt: skip
    assert PaymentReceipt.from_headers(headers) == receipt()
    assert PaymentReceipt.from_headers(httpx.Headers(headers)) == receipt()
    assert PaymentReceipt.from_headers({k.lower(): v for k, v in headers.items()}) == receipt()
    assert PaymentReceipt.from_headers({"content-type": "application/json"}) is None


def _response(**changes: Any) -> dict[str, str]:
    wire = unb64(receipt().to_headers()[PAYMENT_RESPONSE_HEADER])
    for key, value in changes.items():
        wire = mutated(wire, tuple(key.split("__")), value)
    return {PAYMENT_RESPONSE_HEADER: b64(wire)}


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({PAYMENT_RESPONSE_HEADER: ""}, "PAYMENT-RESPONSE is empty"),
        ({PAYMENT_RESPONSE_HEADER: "%%%"}, "PAYMENT-RESPONSE is not base64"),
        ({PAYMENT_RESPONSE_HEADER: b64(b"{")}, "PAYMENT-RESPONSE is not base64 of JSON"),
        ({PAYMENT_RESPONSE_HEADER: b64([1])}, "PAYMENT-RESPONSE must be a JSON object"),
        (_response(network=KeyError), "PAYMENT-RESPONSE: network: Field required"),
        (_response(extra__credit=KeyError), "PAYMENT-RESPONSE extra lacks field 'credit'"),
        (_response(extra__receiptId="#7"), "extra.receiptId must be a decimal string"),
        (_response(extra=KeyError), "lacks field 'receiptId'"),
        (_response(amount="12 wei"), "PAYMENT-RESPONSE amount must be a decimal string"),
        (_response(amount=KeyError), "PAYMENT-RESPONSE amount must be an integer"),
        (_response(payer="0x1234"), "PAYMENT-RESPONSE payer must be a 0x-prefixed"),
        (_response(success=False, errorReason="x"), "PAYMENT-RESPONSE reports a failed payment"),
    ],
)
def test_payment_response_names_what_is_malformed(headers: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError) as refused:
        PaymentReceipt.from_headers(headers)
    assert problem in str(refused.value)


# ---------------------------------------------------------------- the gate


@pytest.fixture
def gate(verifier: VoucherVerifier) -> PaymentGate:
    return PaymentGate(verifier)


def world_domain(world: World) -> Domain:
    return Domain(world.w3.eth.chain_id, world.payments.address)


def node_voucher(world: World, cumulative: int, *, key: bytes | None = None) -> SignedVoucher:
    voucher = Voucher(
        world.roles.payer, world.roles.node, MODEL_ID, cumulative, world.now() + 86_400
    )
    return sign_voucher(key or world.payer_key, world_domain(world), voucher)


def paying(gate: PaymentGate, signed: SignedVoucher, **headers: str) -> dict[str, str]:
    """The headers of a request paying with ``signed``, accepting the node's own requirement."""
    accepted = gate.verifier.quote(signed.voucher.payer, MODEL_ID, PRICE).requirements()
    return {PAYMENT_SIGNATURE_HEADER: encode_payment(accepted, signed), **headers}


def refusal(
    gate: PaymentGate, headers: Mapping[str, str], price: int = PRICE, resource: str | None = None
) -> PaymentHTTPError:
    with pytest.raises(PaymentHTTPError) as refused:
        gate.admit(headers, MODEL_ID, price, resource)
    error = refused.value
    assert set(error.body) == {"error"}  # OpenAI-shaped, nothing else
    assert set(error.body["error"]) == {"message", "type", "code", "param"}
    assert list(error.headers) == [PAYMENT_REQUIRED_HEADER]
    assert error.code == error.body["error"]["code"]
    return error


def required_of(refused: PaymentHTTPError) -> PaymentRequired:
    """The refusal's ``PAYMENT-REQUIRED``, read by x402's own decoder and by ours."""
    text = refused.headers[PAYMENT_REQUIRED_HEADER]
    standard = decode_payment_required_header(text)
    assert isinstance(standard, PaymentRequired) and standard == decode_payment_required(text)
    assert standard.x402_version == 2 and len(standard.accepts) == 1
    assert standard.error == f"{refused.code}: {refused.body['error']['message']}"
    return standard


def quote_of(refused: PaymentHTTPError) -> PaymentQuote | None:
    answer = parse_payment_answer(refused.status, refused.headers, refused.body)
    assert answer is not None and answer.code == refused.code
    return answer.quote


def test_gate_without_payer_asks_for_it_and_states_the_requirement(
    world: World, gate: PaymentGate
) -> None:
    refused = refusal(gate, {})
    assert (refused.status, refused.code) == (402, "payer_required")
    error = refused.body["error"]
    assert (error["type"], error["param"]) == (PAYMENT_REQUIRED, None)
    assert PAYER_HEADER in error["message"] and PAYMENT_SIGNATURE_HEADER in error["message"]
    required = required_of(refused)
    assert required.resource is None
    (ours,) = required.accepts
    assert (ours.scheme, ours.network, ours.amount, ours.max_timeout_seconds) == (
        SCHEME, caip2(world.w3.eth.chain_id), str(PRICE), QUOTE_TIMEOUT,
    )  # fmt: skip
    assert ours.pay_to == world.roles.node
    assert ours.asset == world.protocol["OpenToken"].address
    assert ours.extra == {
        "channel": None, "payerHeader": PAYER_HEADER, "domain": world_domain(world).as_dict(),
    }  # fmt: skip
    assert quote_of(refused) is None


def test_gate_with_payer_only_answers_402_with_a_fresh_quote(
    world: World, gate: PaymentGate
) -> None:
    now = world.now()
    refused = refusal(gate, {PAYER_HEADER.lower(): world.roles.payer.lower()})
    assert (refused.status, refused.code) == (402, "voucher_required")
    assert refused.body["error"]["type"] == PAYMENT_REQUIRED
    assert str(PRICE) in refused.body["error"]["message"]
    (ours,) = required_of(refused).accepts
    parsed = quote_of(refused)
    assert parsed is not None and PaymentQuote.from_requirements(ours) == parsed
    assert parsed.channel == (world.roles.payer, world.roles.node, MODEL_ID)
    assert (parsed.price, parsed.cumulative_amount, parsed.last_accepted, parsed.credit) == (
        PRICE, PRICE, 0, 0,
    )  # fmt: skip
    assert parsed.latest is None
    assert parsed.domain == world_domain(world)
    assert parsed.asset == world.protocol["OpenToken"].address
    assert now <= parsed.min_deadline < parsed.suggested_deadline <= parsed.max_deadline


def test_gate_puts_the_resource_in_payment_required(world: World, gate: PaymentGate) -> None:
    url = "http://127.0.0.1:8000/v1/chat/completions"
    for headers in ({}, {PAYER_HEADER: world.roles.payer}):
        refused = refusal(gate, headers, resource=url)
        assert required_of(refused).resource == ResourceInfo(url=url)
        assert unb64(refused.headers[PAYMENT_REQUIRED_HEADER])["resource"] == {"url": url}


def test_gate_answers_400_for_headers_it_cannot_read(world: World, gate: PaymentGate) -> None:
    refused = refusal(gate, {PAYER_HEADER: "0xnot-an-address"})
    assert (refused.status, refused.code) == (400, "malformed_payer")
    assert refused.body["error"]["type"] == INVALID_REQUEST
    assert refused.body["error"]["param"] == PAYER_HEADER
    assert quote_of(refused) is None  # the payer is unknown: no quote

    refused = refusal(gate, {PAYER_HEADER: world.roles.payer, PAYMENT_SIGNATURE_HEADER: "%%%"})
    assert (refused.status, refused.code) == (400, "malformed_payment")
    assert refused.body["error"]["type"] == INVALID_VOUCHER
    assert refused.body["error"]["param"] == PAYMENT_SIGNATURE_HEADER
    assert "PAYMENT-SIGNATURE is not base64" in refused.body["error"]["message"]
    parsed = quote_of(refused)
    assert parsed is not None and parsed.payer == world.roles.payer

    refused = refusal(gate, {PAYMENT_SIGNATURE_HEADER: paid(x402Version=1)})
    assert (refused.status, refused.code) == (400, "malformed_payment")
    assert "x402 version 1" in refused.body["error"]["message"]
    assert quote_of(refused) is None  # neither header named a payer


def test_gate_refuses_a_voucher_of_another_payer_than_the_header(
    world: World, gate: PaymentGate
) -> None:
    headers = paying(gate, node_voucher(world, PRICE), **{PAYER_HEADER: world.roles.bob})
    refused = refusal(gate, headers)
    assert (refused.status, refused.code) == (400, "payer_mismatch")
    assert refused.body["error"]["type"] == INVALID_VOUCHER
    assert world.roles.bob in refused.body["error"]["message"]
    parsed = quote_of(refused)
    assert parsed is not None and parsed.payer == world.roles.bob


OTHER_REQUIREMENTS = [
    ({"network": "eip155:1"}, "eip155:1"),
    ({"pay_to": to_checksum_address("0x" + "12" * 20)}, "0x" + "12" * 20),
]


@pytest.mark.parametrize(("change", "named"), OTHER_REQUIREMENTS, ids=["network", "payTo"])
def test_gate_refuses_a_payment_accepting_another_requirement(
    world: World, gate: PaymentGate, change: dict[str, str], named: str
) -> None:
    signed = node_voucher(world, PRICE)
    accepted = gate.verifier.quote(world.roles.payer, MODEL_ID, PRICE).requirements()
    payment = encode_payment(accepted.model_copy(update=change), signed)
    for headers in (
        {PAYMENT_SIGNATURE_HEADER: payment},
        {PAYMENT_SIGNATURE_HEADER: payment, PAYER_HEADER: world.roles.payer},
    ):
        refused = refusal(gate, headers)
        assert (refused.status, refused.code) == (400, "requirement_mismatch")
        assert refused.body["error"]["type"] == INVALID_VOUCHER
        assert named in refused.body["error"]["message"].lower()
        (ours,) = required_of(refused).accepts  # the node's own requirement, to pay instead
        assert (ours.network, ours.pay_to) == (caip2(world.w3.eth.chain_id), world.roles.node)
    parsed = quote_of(refused)  # with the payer header: a fresh quote
    assert parsed is not None and parsed.payer == world.roles.payer
    # The node's address in another case is the same payTo.
    same = accepted.model_copy(update={"pay_to": accepted.pay_to.lower()})
    acceptance = gate.admit(
        {PAYMENT_SIGNATURE_HEADER: encode_payment(same, signed)}, MODEL_ID, PRICE
    )
    gate.release(acceptance)


def test_gate_quotes_the_voucher_payer_on_a_requirement_mismatch(
    world: World, gate: PaymentGate
) -> None:
    accepted = gate.verifier.quote(world.roles.payer, MODEL_ID, PRICE).requirements()
    wrong = accepted.model_copy(update={"network": "eip155:1"})
    payment = encode_payment(wrong, node_voucher(world, PRICE))
    refused = refusal(gate, {PAYMENT_SIGNATURE_HEADER: payment})
    assert refused.code == "requirement_mismatch"
    parsed = quote_of(refused)
    assert parsed is not None and parsed.payer == world.roles.payer


def test_gate_maps_verifier_errors_to_402_and_400_with_a_quote(
    world: World, gate: PaymentGate
) -> None:
    underpaid = refusal(gate, paying(gate, node_voucher(world, PRICE - 1)))
    assert (underpaid.status, underpaid.code) == (402, "underpaid")
    assert underpaid.body["error"]["type"] == PAYMENT_REQUIRED
    parsed = quote_of(underpaid)
    assert parsed is not None and parsed.cumulative_amount == PRICE

    stranger = node_voucher(world, PRICE, key=Account.create().key)
    wrong = refusal(gate, paying(gate, stranger))
    assert (wrong.status, wrong.code) == (400, "wrong_signer")
    assert wrong.body["error"]["type"] == INVALID_VOUCHER
    parsed = quote_of(wrong)
    assert parsed is not None and parsed.payer == world.roles.payer


def test_gate_refuses_a_high_s_signature_that_could_never_be_redeemed(
    world: World, gate: PaymentGate
) -> None:
    refused = refusal(gate, paying(gate, high_s(node_voucher(world, PRICE))))
    assert (refused.status, refused.code) == (400, "malformed_payment")
    assert "lower half" in refused.body["error"]["message"]
    assert refused.body["error"]["param"] == PAYMENT_SIGNATURE_HEADER


def test_gate_refuses_a_signature_that_recovers_no_address(world: World, gate: PaymentGate) -> None:
    signed = node_voucher(world, PRICE)
    r = (5).to_bytes(32, "big")  # no curve point has x = 5: recovery fails
    bogus = SignedVoucher(signed.voucher, Signature(27, r, (5).to_bytes(32, "big")))
    refused = refusal(gate, paying(gate, bogus))
    assert (refused.status, refused.code) == (400, "malformed_payment")
    assert "recovers no address" in refused.body["error"]["message"]
    parsed = quote_of(refused)
    assert parsed is not None and parsed.payer == world.roles.payer


def test_gate_admits_settles_and_reports_the_channel_credit(
    world: World, gate: PaymentGate
) -> None:
    signed = node_voucher(world, 3 * PRICE)
    acceptance = gate.admit(paying(gate, signed), MODEL_ID, PRICE)
    actual = PRICING.price(10, 5)
    v = signed.voucher
    receipt = Receipt(
        keccak(text="gate"), v.payer, v.node, MODEL_ID, 1, 10, 5, actual, keccak(text="out"),
        b"\x00" * 32, v.cumulative_amount, world.now(),
    )  # fmt: skip
    result = gate.settle(acceptance, receipt)
    assert (result.accepted, result.credit, result.price) == (3 * PRICE, 3 * PRICE - actual, actual)
    assert (result.payer, result.network) == (world.roles.payer, caip2(world.w3.eth.chain_id))
    headers = result.headers()
    assert list(headers) == [PAYMENT_RESPONSE_HEADER]
    assert PaymentReceipt.from_headers(httpx.Headers(headers)) == PaymentReceipt(
        result.receipt_id, world.roles.payer, caip2(world.w3.eth.chain_id), actual, 3 * PRICE,
        3 * PRICE - actual,
    )  # fmt: skip
    settled = decode_payment_response_header(headers[PAYMENT_RESPONSE_HEADER])
    assert settled.success and settled.transaction == "" and settled.amount == str(actual)

    # The next quote carries the credit and the payer's latest voucher.
    parsed = quote_of(refusal(gate, {PAYER_HEADER: world.roles.payer}))
    assert parsed is not None and parsed.latest == signed
    assert (parsed.last_accepted, parsed.credit) == (3 * PRICE, 3 * PRICE - actual)
    assert parsed.cumulative_amount == 3 * PRICE  # the credit covers the request

    held = gate.admit(paying(gate, signed), MODEL_ID, 2 * PRICE)
    gate.release(held)  # nothing served: the whole credit is there again
    again = gate.admit(paying(gate, signed), MODEL_ID, 3 * PRICE - actual)
    gate.release(again)


def test_gate_admits_what_a_wallet_signs_from_the_quoted_typed_data(
    world: World, gate: PaymentGate
) -> None:
    """The x402 client flow: payer → 402 with typed data → eth_signTypedData_v4 → pay."""
    refused = refusal(gate, {PAYER_HEADER: world.roles.payer})
    (accepted,) = required_of(refused).accepts
    typed = accepted.extra["typedData"]
    signature = Account.sign_typed_data(world.payer_key, full_message=typed).signature
    payload = PaymentPayload(
        accepted=accepted,
        payload={"voucher": typed["message"], "signature": "0x" + bytes(signature).hex()},
    )
    headers = {PAYMENT_SIGNATURE_HEADER: encode_payment_signature_header(payload)}
    acceptance = gate.admit(headers, MODEL_ID, PRICE)
    assert acceptance.channel == (world.roles.payer, MODEL_ID)
    gate.release(acceptance)


def test_gate_admit_async_refuses_like_admit(gate: PaymentGate) -> None:
    async def admit() -> None:
        await gate.admit_async({}, MODEL_ID, PRICE, "http://node/v1/completions")

    with pytest.raises(PaymentHTTPError) as refused:
        anyio.run(admit)
    assert (refused.value.status, refused.value.code) == (402, "payer_required")


def test_gate_refuses_a_negative_price_or_model(gate: PaymentGate) -> None:
    with pytest.raises(ValueError, match="price and model id must be >= 0"):
        gate.admit({}, MODEL_ID, -1)
    with pytest.raises(ValueError, match="price and model id must be >= 0"):
        gate.admit({}, -1, PRICE)


@pytest.mark.parametrize(
    ("field", "value"),
    [("cumulativeAmount", str(3 * PRICE + PRICE // 2 + 1)), ("modelId", "7"), ("payer", NODE)],
)
def test_a_requirement_whose_typed_data_signs_something_else_is_refused(
    field: str, value: str
) -> None:
    """A generic wallet signs ``typedData`` as given: a quote whose typed data is not the quoted
    voucher (a larger amount, another channel) must not parse."""
    wire = mutated(requirement_json(), ("extra", "typedData", "message", field), value)
    with pytest.raises(ValueError, match=r"extra\.typedData\.message signs"):
        PaymentQuote.from_requirements(PaymentRequirements.model_validate(wire))
