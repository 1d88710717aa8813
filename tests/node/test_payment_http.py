"""The HTTP payment protocol: voucher and payer headers, the 402/400 answer with its quote, the
success headers — and the node's payment gate that speaks it, against a real anvil."""

from __future__ import annotations

import base64
import json
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_utils import keccak, to_checksum_address

from backend.protocol.eip712 import Domain, Signature, SignedVoucher, Voucher, sign_voucher
from backend.protocol.payment_http import (
    ACCEPTED_HEADER,
    CREDIT_HEADER,
    INVALID_REQUEST,
    INVALID_VOUCHER,
    PAYER_HEADER,
    PAYMENT_REQUIRED,
    PRICE_HEADER,
    RECEIPT_HEADER,
    SECP256K1_N,
    VOUCHER_HEADER,
    PaymentQuote,
    PaymentReceipt,
    decode_voucher,
    encode_voucher,
    parse_payer,
    parse_payment_answer,
    payment_error_body,
)
from inference_node.payments import Quote, Receipt, VoucherVerifier, make_quote
from inference_node.server.payment_gate import PaymentGate, PaymentHTTPError
from tests.node.conftest import MODEL_ID, OPEN, PRICING, World

DOMAIN = Domain(chain_id=31337, verifying_contract=to_checksum_address("0x" + "c0" * 20))
PAYER = Account.from_key(b"\x01" * 32).address
NODE = to_checksum_address("0x" + "ab" * 20)
PRICE = PRICING.price(10, 20)  # OPEN wei


def signed_voucher(cumulative: int = PRICE, **fields: Any) -> SignedVoucher:
    values = {
        "payer": PAYER,
        "node": NODE,
        "model_id": MODEL_ID,
        "cumulative_amount": cumulative,
        "deadline": 1_900_000_000,
        **fields,
    }
    return sign_voucher(b"\x01" * 32, DOMAIN, Voucher(**values))


def encoded(data: object) -> str:
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    return base64.urlsafe_b64encode(raw).decode()


def voucher_json(**changes: Any) -> dict[str, Any]:
    return {**signed_voucher().to_json(), **changes}


def high_s(signed: SignedVoucher) -> SignedVoucher:
    """The same signature with s' = n - s (valid off-chain, refused by OZ ECDSA on-chain)."""
    sig = signed.signature
    s = SECP256K1_N - int.from_bytes(sig.s, "big")
    return SignedVoucher(signed.voucher, Signature(55 - sig.v, sig.r, s.to_bytes(32, "big")))


def quote() -> Quote:
    return make_quote(
        DOMAIN, (PAYER, NODE, MODEL_ID), price=PRICE, accepted=3 * PRICE, consumed=2 * PRICE,
        reserved=PRICE // 2, min_deadline=1_800_000_000, max_deadline=1_800_600_000,
        latest=signed_voucher(cumulative=3 * PRICE),
    )  # fmt: skip


# ---------------------------------------------------------------- voucher header


def test_voucher_header_round_trips() -> None:
    signed = signed_voucher(cumulative=12 * OPEN)
    text = encode_voucher(signed)
    assert text.isascii() and "=" not in text and "+" not in text and "/" not in text
    assert decode_voucher(text) == signed
    assert decode_voucher(text + "=" * (-len(text) % 4)) == signed  # padded is accepted too
    compact = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    assert json.loads(compact) == signed.to_json() and b" " not in compact


def test_voucher_header_accepts_amounts_as_decimal_strings() -> None:
    signed = signed_voucher(cumulative=2**70)
    data = {**signed.to_json(), "cumulative_amount": str(2**70), "model_id": "1"}
    assert decode_voucher(encoded(data)) == signed


def test_voucher_header_normalizes_v_0_or_1() -> None:
    signed = signed_voucher()
    raw = signed.signature.to_bytes()
    low_v = "0x" + (raw[:64] + bytes([raw[64] - 27])).hex()
    assert decode_voucher(encoded(voucher_json(signature=low_v))) == signed


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "is empty"),
        ("a" * 2_049, "at most 2048"),
        ("not base64!", "not base64url"),
        ("abcde", "truncated"),
        (encoded(b"\xff\xfe"), "not base64url of JSON"),
        (encoded(b"{oops"), "not base64url of JSON"),
        (encoded([1, 2]), "must be a JSON object"),
        (encoded({k: v for k, v in voucher_json().items() if k != "signature"}), "signature"),
        (encoded(voucher_json(extra=1)), "unknown field"),
        (encoded(voucher_json(payer="0x1234")), "payer must be a 0x-prefixed"),
        (encoded(voucher_json(node="ab" * 20)), "node must be a 0x-prefixed"),
        (encoded(voucher_json(cumulative_amount=-1)), "cumulative_amount must be in"),
        (encoded(voucher_json(cumulative_amount=2**256)), "cumulative_amount must be in"),
        (encoded(voucher_json(cumulative_amount=1.5)), "cumulative_amount must be an integer"),
        (encoded(voucher_json(cumulative_amount="1e18")), "decimal string of digits"),
        (encoded(voucher_json(model_id=True)), "model_id must be an integer"),
        (encoded(voucher_json(signature="0x1234")), "65 bytes"),
        (encoded(voucher_json(signature="0x" + "zz" * 65)), "not hex"),
        (encoded(voucher_json(signature="ab" * 65)), "0x-prefixed hex"),
        (encoded(voucher_json(signature="0x" + "11" * 64 + "1e")), "v must be 27 or 28"),
        (encoded(voucher_json(signature="0x" + "00" * 64 + "1b")), "r is out of range"),
    ],
)
def test_voucher_header_names_what_is_malformed(text: str, problem: str) -> None:
    with pytest.raises(ValueError, match="X-OpenLedger-Voucher") as refused:
        decode_voucher(text)
    assert problem in str(refused.value)


def test_voucher_header_refuses_a_high_s_signature() -> None:
    flipped = high_s(signed_voucher())
    with pytest.raises(ValueError, match="lower half"):
        decode_voucher(encode_voucher(flipped))


def test_payer_header_is_a_checksummed_address() -> None:
    assert parse_payer(f" {PAYER.lower()} ") == PAYER
    for bad in ("", "0x1234", "ab" * 20, "0x" + "zz" * 20):
        with pytest.raises(ValueError, match="X-OpenLedger-Payer must be"):
            parse_payer(bad)


# ---------------------------------------------------------------- the quote


def test_quote_round_trips_between_node_and_client() -> None:
    node_quote = quote()
    wire = json.loads(json.dumps(node_quote.to_json()))
    parsed = PaymentQuote.from_json(wire)
    assert parsed == PaymentQuote(
        domain=DOMAIN, payer=PAYER, node=NODE, model_id=MODEL_ID, price=PRICE,
        last_accepted=3 * PRICE, credit=PRICE // 2, cumulative_amount=3 * PRICE + PRICE // 2,
        min_deadline=1_800_000_000, max_deadline=1_800_600_000,
        latest=signed_voucher(cumulative=3 * PRICE),
    )  # fmt: skip
    assert parsed.to_json() == node_quote.to_json()
    assert wire["latestVoucher"]["cumulative_amount"] == str(3 * PRICE)  # strings for JavaScript
    voucher = parsed.voucher(parsed.cumulative_amount, 1_900_000_000)
    assert voucher.channel == (PAYER, parsed.node, MODEL_ID)


def _mutated(path: tuple[str, ...], value: object) -> dict[str, Any]:
    wire = json.loads(json.dumps(quote().to_json()))
    target = wire
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return wire


@pytest.mark.parametrize(
    ("path", "value", "problem"),
    [
        (("price",), KeyError, "quote lacks field 'price'"),
        (("price",), "-1", "quote price must be a decimal string"),
        (("price",), 1.0, "quote price must be an integer"),
        (("channel", "node"), "0xnope", "quote channel node must be"),
        (("channel", "modelId"), -2, "quote channel modelId must be in"),
        (("eip712", "primaryType"), "Permit", "asks to sign 'Permit'"),
        (("eip712", "types", "Voucher"), [], "Voucher type"),
        (("eip712", "domain", "chainId"), "x", "quote domain chainId"),
        (("eip712", "domain", "name"), 7, "name and version must be strings"),
        (("cumulativeAmount",), str(3 * PRICE - 1), "below its lastAccepted"),
        (("credit",), str(4 * PRICE), "exceeds its lastAccepted"),
        (("channel",), [], "quote channel must be a JSON object"),
    ],
)
def test_quote_from_json_names_the_bad_field(
    path: tuple[str, ...], value: object, problem: str
) -> None:
    with pytest.raises(ValueError, match="quote") as refused:
        PaymentQuote.from_json(_mutated(path, value))
    assert problem in str(refused.value)


# ---------------------------------------------------------------- answers and receipts


def test_payment_answer_round_trips() -> None:
    body = payment_error_body(
        error_type=PAYMENT_REQUIRED, code="underpaid", message="pay more", quote=quote().to_json()
    )
    assert body["error"] == {
        "message": "pay more", "type": "payment_required", "code": "underpaid", "param": None,
    }  # fmt: skip
    answer = parse_payment_answer(402, json.loads(json.dumps(body)))
    assert answer is not None and answer.quote == PaymentQuote.from_json(quote().to_json())
    assert (answer.status, answer.type, answer.code, answer.message) == (
        402, "payment_required", "underpaid", "pay more",
    )  # fmt: skip
    no_quote = payment_error_body(
        error_type=INVALID_VOUCHER, code="malformed_voucher", message="bad", quote=None,
        param=VOUCHER_HEADER,
    )  # fmt: skip
    answer = parse_payment_answer(400, no_quote)
    assert answer is not None and answer.quote is None and answer.param == VOUCHER_HEADER


def test_only_payment_shaped_402_and_400_are_payment_answers() -> None:
    body = payment_error_body(error_type=PAYMENT_REQUIRED, code="x", message="m", quote=None)
    assert parse_payment_answer(200, body) is None
    assert parse_payment_answer(500, body) is None
    assert parse_payment_answer(400, {"error": {"message": "bad field"}}) is None  # no quote key
    assert parse_payment_answer(402, "text") is None
    with pytest.raises(ValueError, match="quote lacks field"):
        parse_payment_answer(402, {**body, "quote": {"price": "1"}})


def test_receipt_headers_round_trip_case_insensitively() -> None:
    receipt = PaymentReceipt(receipt_id=7, price=PRICE, accepted=2**80, credit=OPEN // 3)
    headers = receipt.to_headers()
    assert headers == {
        RECEIPT_HEADER: "7", PRICE_HEADER: str(PRICE),
        ACCEPTED_HEADER: str(2**80), CREDIT_HEADER: str(OPEN // 3),
    }  # fmt: skip
    assert PaymentReceipt.from_headers(httpx.Headers(headers)) == receipt
    assert PaymentReceipt.from_headers({k.lower(): v for k, v in headers.items()}) == receipt
    assert PaymentReceipt.from_headers({"content-type": "application/json"}) is None
    with pytest.raises(ValueError, match="lack X-OpenLedger-Credit"):
        PaymentReceipt.from_headers({k: v for k, v in headers.items() if k != CREDIT_HEADER})
    with pytest.raises(ValueError, match="X-OpenLedger-Price must be a decimal"):
        PaymentReceipt.from_headers({**headers, PRICE_HEADER: "12 wei"})


# ---------------------------------------------------------------- the gate


@pytest.fixture
def gate(verifier: VoucherVerifier) -> PaymentGate:
    return PaymentGate(verifier)


def node_voucher(world: World, cumulative: int, *, key: bytes | None = None) -> SignedVoucher:
    domain = Domain(world.w3.eth.chain_id, world.payments.address)
    voucher = Voucher(
        world.roles.payer, world.roles.node, MODEL_ID, cumulative, world.now() + 86_400
    )
    return sign_voucher(key or world.payer_key, domain, voucher)


def refusal(gate: PaymentGate, headers: dict[str, str], price: int = PRICE) -> PaymentHTTPError:
    with pytest.raises(PaymentHTTPError) as refused:
        gate.admit(headers, MODEL_ID, price)
    return refused.value


def test_gate_without_payer_asks_for_it_and_cannot_quote(gate: PaymentGate) -> None:
    refused = refusal(gate, {})
    assert refused.status == 402 and refused.body["quote"] is None
    error = refused.body["error"]
    assert (error["type"], error["code"]) == (PAYMENT_REQUIRED, "payer_required")
    assert PAYER_HEADER in error["message"]


def test_gate_with_payer_only_answers_402_with_a_fresh_quote(
    world: World, gate: PaymentGate
) -> None:
    refused = refusal(gate, {PAYER_HEADER.lower(): world.roles.payer.lower()})
    assert (refused.status, refused.code) == (402, "voucher_required")
    parsed = PaymentQuote.from_json(refused.body["quote"])
    assert parsed.channel == (world.roles.payer, world.roles.node, MODEL_ID)
    assert (parsed.price, parsed.cumulative_amount) == (PRICE, PRICE)
    assert parsed.domain == Domain(world.w3.eth.chain_id, world.payments.address)


def test_gate_answers_400_for_headers_it_cannot_read(world: World, gate: PaymentGate) -> None:
    refused = refusal(gate, {PAYER_HEADER: "0xnot-an-address"})
    assert (refused.status, refused.code, refused.body["quote"]) == (400, "malformed_payer", None)
    assert refused.body["error"]["type"] == INVALID_REQUEST
    assert refused.body["error"]["param"] == PAYER_HEADER

    refused = refusal(gate, {PAYER_HEADER: world.roles.payer, VOUCHER_HEADER: "%%%"})
    assert (refused.status, refused.code) == (400, "malformed_voucher")
    assert refused.body["error"]["type"] == INVALID_VOUCHER
    assert "not base64url" in refused.body["error"]["message"]
    assert PaymentQuote.from_json(refused.body["quote"]).payer == world.roles.payer


def test_gate_refuses_a_voucher_of_another_payer_than_the_header(
    world: World, gate: PaymentGate
) -> None:
    signed = node_voucher(world, PRICE)
    headers = {PAYER_HEADER: world.roles.bob, VOUCHER_HEADER: encode_voucher(signed)}
    refused = refusal(gate, headers)
    assert (refused.status, refused.code) == (400, "payer_mismatch")
    assert world.roles.bob in refused.body["error"]["message"]
    assert PaymentQuote.from_json(refused.body["quote"]).payer == world.roles.bob


def test_gate_maps_verifier_errors_to_402_and_400_with_a_quote(
    world: World, gate: PaymentGate
) -> None:
    underpaid = refusal(gate, {VOUCHER_HEADER: encode_voucher(node_voucher(world, PRICE - 1))})
    assert (underpaid.status, underpaid.code) == (402, "underpaid")
    assert underpaid.body["error"]["type"] == PAYMENT_REQUIRED
    assert PaymentQuote.from_json(underpaid.body["quote"]).cumulative_amount == PRICE

    stranger = node_voucher(world, PRICE, key=Account.create().key)
    wrong = refusal(gate, {VOUCHER_HEADER: encode_voucher(stranger)})
    assert (wrong.status, wrong.code) == (400, "wrong_signer")
    assert wrong.body["error"]["type"] == INVALID_VOUCHER
    assert PaymentQuote.from_json(wrong.body["quote"]).payer == world.roles.payer


def test_gate_refuses_a_high_s_signature_that_could_never_be_redeemed(
    world: World, gate: PaymentGate
) -> None:
    flipped = high_s(node_voucher(world, PRICE))
    compact = json.dumps(flipped.to_json(), separators=(",", ":")).encode()
    refused = refusal(gate, {VOUCHER_HEADER: base64.urlsafe_b64encode(compact).decode()})
    assert (refused.status, refused.code) == (400, "malformed_voucher")
    assert "lower half" in refused.body["error"]["message"]


def test_gate_admits_settles_and_reports_the_channel_credit(
    world: World, gate: PaymentGate
) -> None:
    signed = node_voucher(world, 3 * PRICE)
    acceptance = gate.admit({VOUCHER_HEADER: encode_voucher(signed)}, MODEL_ID, PRICE)
    actual = PRICING.price(10, 5)
    v = signed.voucher
    receipt = Receipt(
        keccak(text="gate"), v.payer, v.node, MODEL_ID, 1, 10, 5, actual, keccak(text="out"),
        b"\x00" * 32, v.cumulative_amount, world.now(),
    )  # fmt: skip
    result = gate.settle(acceptance, receipt)
    assert (result.accepted, result.credit, result.price) == (3 * PRICE, 3 * PRICE - actual, actual)
    assert PaymentReceipt.from_headers(result.headers()) == PaymentReceipt(
        result.receipt_id, actual, 3 * PRICE, 3 * PRICE - actual
    )
    held = gate.admit({VOUCHER_HEADER: encode_voucher(signed)}, MODEL_ID, 2 * PRICE)
    gate.release(held)  # nothing served: the whole credit is there again
    again = gate.admit({VOUCHER_HEADER: encode_voucher(signed)}, MODEL_ID, 3 * PRICE - actual)
    gate.release(again)


def test_gate_refuses_a_negative_price(gate: PaymentGate) -> None:
    with pytest.raises(ValueError, match="price and model id must be >= 0"):
        gate.admit({}, MODEL_ID, -1)
