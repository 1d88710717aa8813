"""The paying client against a real node gate: a small FastAPI app (uvicorn, real HTTP) whose
routes price a request, admit it through the PaymentGate, do fake work, write a receipt and
settle — on a real anvil with the protocol deployed."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any
from uuid import uuid4

import anyio
import httpx
import pytest
import uvicorn
from eth_account import Account
from eth_utils import keccak
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse

from backend.devnet.anvil import free_port
from backend.protocol.eip712 import Domain, Voucher, recover_voucher_signer, sign_voucher
from backend.protocol.inference_client import (
    BudgetExceededError,
    DomainMismatchError,
    InflatedQuoteError,
    NodeMismatchError,
    PayerMismatchError,
    PayingAuth,
    PaymentRefusedError,
    PriceAboveMaximumError,
    VoucherWallet,
    async_openai_client,
    model_id_from_json,
    openai_client,
)
from backend.protocol.payment_http import (
    PAYER_HEADER,
    PAYMENT_REQUIRED,
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    PaymentQuote,
    PaymentReceipt,
    encode_payment,
    parse_payment_answer,
    payment_error_body,
    payment_required,
)
from inference_node.payments import Acceptance, Receipt, VoucherVerifier
from inference_node.server.payment_gate import PaymentGate, PaymentHTTPError
from tests.node.conftest import MODEL_ID, PRICING, World
from tests.protocol_history import private_key

APP = FastAPI()
APP.state.gate = None
APP.state.hits = []  # (path, status) of every answer, in order
APP.state.release = threading.Event()  # lets the streaming route send its second chunk

PROMPT_TOKENS = 10
MAX_TOKENS = 20
PRICE = PRICING.price(PROMPT_TOKENS, MAX_TOKENS)  # OPEN wei, quoted up front


def _gate() -> PaymentGate:
    gate = APP.state.gate
    assert gate is not None, "the node fixture sets the gate"
    return gate


def _answer(path: str, response: Any) -> Any:
    APP.state.hits.append((path, response.status_code))
    return response


def _receipt(acceptance: Acceptance, tokens_in: int, tokens_out: int) -> Receipt:
    v = acceptance.voucher.voucher
    return Receipt(
        request_hash=keccak(text=uuid4().hex),
        payer=v.payer,
        node=v.node,
        model_id=v.model_id,
        adapter_version=1,
        tokens_in=tokens_in,
        tokens_out=tokens_out,
        price=PRICING.price(tokens_in, tokens_out),
        output_hash=keccak(text="tide " * tokens_out),
        attribution_digest=b"\x00" * 32,
        voucher_cumulative=v.cumulative_amount,
        created_at=int(time.time()),
    )


async def _admit(
    request: Request, path: str, model: object, tokens_in: int, max_tokens: int
) -> tuple[Acceptance | None, Any]:
    """Admits a request of ``tokens_in`` + ``max_tokens``: (acceptance, None) or (None, the
    payment answer)."""
    try:
        acceptance = await _gate().admit_async(
            request.headers, int(str(model)), PRICING.price(tokens_in, max_tokens)
        )
    except PaymentHTTPError as refused:
        response = JSONResponse(refused.body, refused.status, headers=refused.headers)
        return None, _answer(path, response)
    return acceptance, None


@APP.post("/v1/infer")
async def infer(request: Request) -> Any:
    """Prices the request by its token counts, does ``work`` seconds of fake work, settles."""
    body = await request.json()
    tokens_in, max_tokens = body["prompt_tokens"], body["max_tokens"]
    out = body.get("completion_tokens", max_tokens)
    path = "/v1/infer"
    acceptance, refused = await _admit(request, path, body["model"], tokens_in, max_tokens)
    if acceptance is None:
        return refused
    try:
        await asyncio.sleep(body.get("work", 0))
        result = await _gate().settle_async(acceptance, _receipt(acceptance, tokens_in, out))
    except BaseException:
        _gate().release(acceptance)
        raise
    return _answer(path, JSONResponse({"text": "tide " * out}, headers=result.headers()))


@APP.post("/v1/completions")
async def completions(request: Request) -> Any:
    """An OpenAI-shaped completion: prompt tokens are words, the answer is 3 tokens."""
    body = await request.json()
    tokens_in, max_tokens = len(body["prompt"].split()), body.get("max_tokens") or 16
    out = min(3, max_tokens)
    path = "/v1/completions"
    acceptance, refused = await _admit(request, path, body["model"], tokens_in, max_tokens)
    if acceptance is None:
        return refused
    try:
        result = await _gate().settle_async(acceptance, _receipt(acceptance, tokens_in, out))
    except BaseException:
        _gate().release(acceptance)
        raise
    completion = {
        "id": f"cmpl-{result.receipt_id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {"text": " high" * out, "index": 0, "logprobs": None, "finish_reason": "length"}
        ],
        "usage": {
            "prompt_tokens": tokens_in,
            "completion_tokens": out,
            "total_tokens": tokens_in + out,
        },
    }
    return _answer(path, JSONResponse(completion, headers=result.headers()))


@APP.post("/v1/stream")
async def stream(request: Request) -> Any:
    """Streams "first", then waits for the test to read it before sending the rest."""
    body = await request.json()
    acceptance, refused = await _admit(request, "/v1/stream", body["model"], 1, 2)
    if acceptance is None:
        return refused
    paid: Acceptance = acceptance

    async def chunks() -> AsyncIterator[bytes]:
        try:
            yield b"first\n"
            released = await anyio.to_thread.run_sync(APP.state.release.wait, 10)
            yield b"released\n" if released else b"timeout\n"
            await _gate().settle_async(paid, _receipt(paid, 1, 2))
        except BaseException:
            _gate().release(paid)
            raise

    return _answer("/v1/stream", StreamingResponse(chunks(), media_type="text/plain"))


@APP.post("/v1/lying")
async def lying(request: Request) -> Any:
    """A node that asks for twice the price of the request (a node inflating its quote)."""
    body = await request.json()
    quote = await anyio.to_thread.run_sync(
        _gate().verifier.quote, request.headers[PAYER_HEADER], int(body["model"]), PRICE
    )
    inflated = replace(quote, cumulative_amount=quote.cumulative_amount + PRICE)
    answer = payment_error_body(error_type=PAYMENT_REQUIRED, code="underpaid", message="pay more")
    required = payment_required(inflated.requirements(), error="underpaid")
    response = JSONResponse(answer, 402, headers={PAYMENT_REQUIRED_HEADER: required})
    return _answer("/v1/lying", response)


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base_url() -> Iterator[str]:
    """The app on a real HTTP server (uvicorn in a thread), for the whole module."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(APP, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


@pytest.fixture
def node(verifier: VoucherVerifier, base_url: str) -> Iterator[VoucherVerifier]:
    """The app's gate for this test (over the test's snapshot of the world); the verifier."""
    APP.state.gate = PaymentGate(verifier)
    APP.state.hits.clear()
    APP.state.release.clear()
    yield verifier
    APP.state.gate = None


@pytest.fixture
def domain(world: World) -> Domain:
    return Domain(world.w3.eth.chain_id, world.payments.address)


def wallet(world: World, domain: Domain, **kw: Any) -> VoucherWallet:
    settings: dict[str, Any] = {"domain": domain, "node": world.roles.node, **kw}
    key = settings.pop("key", world.payer_key)
    return VoucherWallet(world.roles.payer, key, **settings)


def client(base_url: str, paying: VoucherWallet) -> httpx.Client:
    return httpx.Client(base_url=base_url, auth=PayingAuth(paying), timeout=30)


def infer_body(max_tokens: int = MAX_TOKENS, out: int | None = None, work: float = 0) -> dict:
    out = max_tokens if out is None else out
    return {
        "model": str(MODEL_ID), "prompt_tokens": PROMPT_TOKENS, "max_tokens": max_tokens,
        "completion_tokens": out, "work": work,
    }  # fmt: skip


def statuses() -> list[int]:
    return [status for _, status in APP.state.hits]


# ---------------------------------------------------------------- paying


def test_first_request_pays_after_one_402_and_the_quote_honours_credit(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    payer = wallet(world, domain)
    with client(base_url, payer) as http:
        first = http.post("/v1/infer", json=infer_body(out=5))
        assert first.status_code == 200 and first.json()["text"] == "tide " * 5
        assert statuses() == [402, 200]
        unused = PRICE - PRICING.price(PROMPT_TOKENS, 5)
        assert PaymentReceipt.from_headers(first.headers) == PaymentReceipt(
            receipt_id=1, payer=world.roles.payer, network=f"eip155:{domain.chain_id}",
            price=PRICE - unused, accepted=PRICE, credit=unused,
        )  # fmt: skip
        second = http.post("/v1/infer", json=infer_body())  # credit too small: pays the rest
        assert second.status_code == 200 and statuses() == [402, 200, 402, 200]
    latest = payer.latest(world.roles.node, MODEL_ID)
    assert latest is not None and latest.voucher.cumulative_amount == 2 * PRICE - unused
    state = node.ledger.channel(world.roles.payer, MODEL_ID)
    assert (state.accepted, state.consumed) == (2 * PRICE - unused, 2 * PRICE - unused)
    assert payer.spent == 2 * PRICE - unused


def test_prepaid_requests_ride_the_credit_in_one_round_trip(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    payer = wallet(world, domain, prepay=3 * PRICE)
    with client(base_url, payer) as http:
        for _ in range(4):
            assert http.post("/v1/infer", json=infer_body()).status_code == 200
        assert statuses() == [402, 200, 200, 200, 200]
        fifth = http.post("/v1/infer", json=infer_body())  # credit spent: a new 402
        assert fifth.status_code == 200 and statuses()[5:] == [402, 200]
    state = node.ledger.channel(world.roles.payer, MODEL_ID)
    assert (state.accepted, state.consumed) == (8 * PRICE, 5 * PRICE)
    assert PaymentReceipt.from_headers(fifth.headers).credit == 3 * PRICE  # type: ignore[union-attr]


def test_a_session_key_pays_for_its_payer(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    payer = wallet(world, domain, key=world.session_key)
    assert payer.signer != world.roles.payer
    with client(base_url, payer) as http:
        assert http.post("/v1/infer", json=infer_body()).status_code == 200
    state = node.ledger.channel(world.roles.payer, MODEL_ID)
    assert state.voucher is not None and state.accepted == PRICE
    assert recover_voucher_signer(domain, state.voucher) == payer.signer


def test_a_session_key_past_its_revocation_grace_is_refused_with_the_node_message(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    payer = wallet(world, domain, key=world.session_key)
    session = Account.from_key(world.session_key).address
    revoke = world.payments.functions.revokeSessionKey(world.roles.node, session)
    world.transact(world.roles.payer, revoke)
    world.w3.provider.make_request("evm_increaseTime", [86_400 - 1_800])  # inside the margin
    world.w3.provider.make_request("evm_mine", [])
    with client(base_url, payer) as http, pytest.raises(PaymentRefusedError) as refused:
        http.post("/v1/infer", json=infer_body())
    assert (refused.value.status, refused.value.code) == (402, "session_key_expired")
    assert session in str(refused.value) and "valid until" in str(refused.value)
    assert statuses() == [402, 402]
    assert node.ledger.channel(world.roles.payer, MODEL_ID).accepted == 0


def test_a_key_the_payer_never_authorized_is_refused_with_the_node_message(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    stranger = Account.create()
    payer = wallet(world, domain, key=bytes(stranger.key))
    with client(base_url, payer) as http, pytest.raises(PaymentRefusedError) as refused:
        http.post("/v1/infer", json=infer_body())
    assert (refused.value.status, refused.value.code) == (400, "wrong_signer")
    assert stranger.address in str(refused.value) and "neither payer" in str(refused.value)
    assert statuses() == [402, 400]


def test_the_node_refuses_an_underpaying_voucher_and_quotes_the_amount(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    cheap = sign_voucher(
        world.payer_key,
        domain,
        Voucher(world.roles.payer, world.roles.node, MODEL_ID, PRICE - 1, world.now() + 86_400),
    )
    quote = node.quote(world.roles.payer, MODEL_ID, PRICE)
    headers = {PAYMENT_SIGNATURE_HEADER: encode_payment(quote.requirements(), cheap)}
    answer = httpx.post(f"{base_url}/v1/infer", json=infer_body(), headers=headers)
    assert answer.status_code == 402
    assert answer.json()["error"]["code"] == "underpaid"
    parsed = parse_payment_answer(answer.status_code, answer.headers, answer.json())
    assert parsed is not None and parsed.quote is not None
    assert parsed.quote.cumulative_amount == PRICE


def test_the_wallet_refuses_an_inflated_quote_and_signs_nothing(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    payer = wallet(world, domain)
    with client(base_url, payer) as http, pytest.raises(InflatedQuoteError, match="more than"):
        http.post("/v1/lying", json=infer_body())
    assert statuses() == [402]
    assert payer.latest(world.roles.node, MODEL_ID) is None and payer.spent == 0


@pytest.mark.parametrize("other", ["node", "domain"])
def test_the_wallet_refuses_a_quote_of_another_node_or_domain(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier, other: str
) -> None:
    if other == "node":
        payer, error = wallet(world, domain, node=world.roles.bob), NodeMismatchError
    else:
        payer, error = wallet(world, replace(domain, chain_id=1)), DomainMismatchError
    with client(base_url, payer) as http, pytest.raises(error, match="quote is for"):
        http.post("/v1/infer", json=infer_body())
    assert statuses() == [402] and payer.spent == 0


def test_the_wallet_enforces_max_price(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    cheap = wallet(world, domain, max_price=PRICE - 1)
    with client(base_url, cheap) as http, pytest.raises(PriceAboveMaximumError, match="above"):
        http.post("/v1/infer", json=infer_body())
    with client(base_url, wallet(world, domain, max_price=PRICE)) as http:
        assert http.post("/v1/infer", json=infer_body()).status_code == 200


def test_the_wallet_enforces_its_budget_prepay_included(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    payer = wallet(world, domain, budget=2 * PRICE + PRICE // 2, prepay=10 * PRICE)
    with client(base_url, payer) as http:
        assert http.post("/v1/infer", json=infer_body()).status_code == 200
        assert payer.spent == 2 * PRICE + PRICE // 2  # prepay capped by the budget
        assert http.post("/v1/infer", json=infer_body()).status_code == 200  # rides credit
        with pytest.raises(BudgetExceededError, match="left of its budget"):
            http.post("/v1/infer", json=infer_body())
    assert statuses() == [402, 200, 200, 402]
    assert payer.spent == 2 * PRICE + PRICE // 2


def test_an_expiring_voucher_is_signed_again_for_the_same_amount(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    payer = wallet(world, domain, prepay=PRICE, validity=2 * 3_600)
    with client(base_url, payer) as http:
        assert http.post("/v1/infer", json=infer_body()).status_code == 200
        before = payer.latest(world.roles.node, MODEL_ID)
        world.w3.provider.make_request("evm_increaseTime", [3_600 + 1_800])
        world.w3.provider.make_request("evm_mine", [])
        assert http.post("/v1/infer", json=infer_body()).status_code == 200
    after = payer.latest(world.roles.node, MODEL_ID)
    assert before is not None and after is not None
    assert after.voucher.cumulative_amount == before.voucher.cumulative_amount == 2 * PRICE
    assert after.voucher.deadline > before.voucher.deadline
    assert statuses() == [402, 200, 402, 200]
    assert payer.spent == 2 * PRICE


def test_a_fresh_wallet_continues_from_the_voucher_the_node_hands_back(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    """Finding 9: a second run of the SDK snippet (a new wallet, nothing remembered) used to
    fail with InflatedQuoteError; the quote now carries the payer's own latest voucher, whose
    signature the wallet checks before it builds on it."""
    first = wallet(world, domain)
    unused = PRICE - PRICING.price(PROMPT_TOKENS, 5)
    with client(base_url, first) as http:
        assert http.post("/v1/infer", json=infer_body(out=5)).status_code == 200
    restarted = wallet(world, domain)
    with client(base_url, restarted) as http:
        assert http.post("/v1/infer", json=infer_body()).status_code == 200
    assert restarted.spent == PRICE - unused  # the resumed voucher is not counted
    assert statuses() == [402, 200, 402, 200]
    state = node.ledger.channel(world.roles.payer, MODEL_ID)
    assert state.accepted == 2 * PRICE - unused


def test_a_wallet_of_a_new_session_key_resumes_from_a_trusted_old_key(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    with client(base_url, wallet(world, domain, key=world.session_key)) as http:
        assert http.post("/v1/infer", json=infer_body()).status_code == 200
    new_key = Account.create()
    far = world.now() + 30 * 86_400
    authorize = world.payments.functions.authorizeSessionKey(
        world.roles.node, new_key.address, far, 10 * PRICE
    )
    world.transact(world.roles.payer, authorize)
    old = Account.from_key(world.session_key).address
    untrusting = wallet(world, domain, key=bytes(new_key.key))
    with client(base_url, untrusting) as http, pytest.raises(InflatedQuoteError):
        http.post("/v1/infer", json=infer_body())  # a voucher of a key it does not know
    trusting = wallet(world, domain, key=bytes(new_key.key), trusted_signers=(old,))
    with client(base_url, trusting) as http:
        assert http.post("/v1/infer", json=infer_body()).status_code == 200
    assert trusting.spent == PRICE


# ---------------------------------------------------------------- concurrency


def test_concurrent_requests_on_one_voucher_never_double_spend_its_credit(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    signed = sign_voucher(
        world.payer_key,
        domain,
        Voucher(world.roles.payer, world.roles.node, MODEL_ID, 3 * PRICE, world.now() + 86_400),
    )
    requirement = node.quote(world.roles.payer, MODEL_ID, PRICE).requirements()
    headers = {PAYMENT_SIGNATURE_HEADER: encode_payment(requirement, signed)}
    codes: list[int] = []

    def request() -> None:
        answer = httpx.post(
            f"{base_url}/v1/infer", json=infer_body(work=0.5), headers=headers, timeout=30
        )
        codes.append(answer.status_code)

    threads = [threading.Thread(target=request) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(codes) == [200, 200, 200, 402, 402, 402]
    state = node.ledger.channel(world.roles.payer, MODEL_ID)
    assert (state.accepted, state.consumed) == (3 * PRICE, 3 * PRICE)


def test_concurrent_requests_of_one_wallet_are_all_paid_without_overspending(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    payer = wallet(world, domain)

    async def run() -> list[Any]:
        auth = PayingAuth(payer)
        async with httpx.AsyncClient(base_url=base_url, auth=auth, timeout=30) as http:
            calls = [http.post("/v1/infer", json=infer_body(work=0.2)) for _ in range(4)]
            return await asyncio.gather(*calls, return_exceptions=True)

    outcomes = asyncio.run(run())
    assert [getattr(o, "status_code", o) for o in outcomes] == [200] * 4
    state = node.ledger.channel(world.roles.payer, MODEL_ID)
    assert state.consumed == state.accepted == payer.spent == 4 * PRICE  # nothing paid twice
    assert statuses().count(200) == 4


# ---------------------------------------------------------------- streaming and OpenAI


def test_a_paid_streaming_response_is_not_buffered(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    body = {"model": str(MODEL_ID)}
    with (
        client(base_url, wallet(world, domain)) as http,
        http.stream("POST", "/v1/stream", json=body) as answer,
    ):
        lines = answer.iter_lines()
        assert next(lines) == "first"  # read before the server sends the rest
        APP.state.release.set()
        assert list(lines) == ["released"]
    assert statuses() == [402, 200]
    assert node.ledger.channel(world.roles.payer, MODEL_ID).consumed == PRICING.price(1, 2)


def test_the_openai_client_pays_and_reads_the_receipt(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    ai = openai_client(f"{base_url}/v1", wallet(world, domain, prepay=PRICE))
    completion = ai.completions.create(model="1", prompt="how high is the tide", max_tokens=8)
    assert completion.choices[0].text == " high" * 3 and completion.usage is not None
    raw = ai.completions.with_raw_response.create(model="1", prompt="and now", max_tokens=8)
    receipt = PaymentReceipt.from_headers(raw.headers)
    assert receipt is not None and receipt.price == PRICING.price(2, 3)
    assert statuses() == [402, 200, 200]
    assert receipt.accepted == PRICING.price(5, 8) + PRICE


def test_the_openai_client_raises_the_payment_refusal_without_retrying(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    stranger = Account.create()  # never authorized
    ai = openai_client(f"{base_url}/v1", wallet(world, domain, key=bytes(stranger.key)))
    with pytest.raises(PaymentRefusedError, match="wrong_signer"):
        ai.completions.create(model="1", prompt="tide", max_tokens=4)
    assert statuses() == [402, 400]


def test_the_async_openai_client_pays(
    world: World, domain: Domain, base_url: str, node: VoucherVerifier
) -> None:
    async def run() -> str:
        ai = async_openai_client(f"{base_url}/v1", wallet(world, domain))
        completion = await ai.completions.create(model="1", prompt="tide table", max_tokens=4)
        await ai.close()
        return completion.choices[0].text

    assert asyncio.run(run()) == " high" * 3
    assert statuses() == [402, 200]


# ---------------------------------------------------------------- the wallet alone


def _quote(node: VoucherVerifier, world: World, **changes: Any) -> PaymentQuote:
    requirement = node.quote(world.roles.payer, MODEL_ID, PRICE).requirements()
    return replace(PaymentQuote.from_requirements(requirement), **changes)


def test_the_wallet_pins_the_first_domain_and_its_payer(
    world: World, domain: Domain, node: VoucherVerifier
) -> None:
    payer = wallet(world, None)
    signed = payer.pay(_quote(node, world))
    assert payer.domain == domain and signed.voucher.cumulative_amount == PRICE
    with pytest.raises(DomainMismatchError):
        payer.pay(_quote(node, world, domain=replace(domain, chain_id=10)))
    with pytest.raises(PayerMismatchError):
        payer.pay(_quote(node, world, payer=world.roles.bob))
    assert payer.latest(world.roles.node, MODEL_ID) == signed


def test_the_wallet_bounds_what_a_node_may_ask_by_what_it_signed(
    world: World, domain: Domain, node: VoucherVerifier
) -> None:
    payer = wallet(world, domain)
    with pytest.raises(InflatedQuoteError):
        payer.pay(_quote(node, world, cumulative_amount=PRICE + 1))
    payer.pay(_quote(node, world))
    with pytest.raises(InflatedQuoteError):  # the node claims to hold a larger voucher
        payer.pay(_quote(node, world, last_accepted=5 * PRICE, cumulative_amount=6 * PRICE))
    again = payer.pay(_quote(node, world, last_accepted=PRICE, cumulative_amount=2 * PRICE))
    assert again.voucher.cumulative_amount == 2 * PRICE


def test_the_wallet_resumes_only_from_a_voucher_its_payer_signed(
    world: World, domain: Domain, node: VoucherVerifier
) -> None:
    """A node cannot inflate a fresh wallet's baseline with a voucher it signed itself, nor with
    one of another channel; the payer's own signature is taken."""
    forged = sign_voucher(
        private_key(3),
        domain,
        Voucher(world.roles.payer, world.roles.node, MODEL_ID, 5 * PRICE, 2**40),
    )
    liar = _quote(node, world, last_accepted=5 * PRICE, cumulative_amount=6 * PRICE, latest=forged)
    with pytest.raises(InflatedQuoteError):
        wallet(world, domain).pay(liar)
    other_model = sign_voucher(
        world.payer_key, domain, Voucher(world.roles.payer, world.roles.node, 7, 5 * PRICE, 2**40)
    )
    with pytest.raises(InflatedQuoteError):
        wallet(world, domain).pay(replace(liar, latest=other_model))
    own = sign_voucher(
        world.payer_key,
        domain,
        Voucher(world.roles.payer, world.roles.node, MODEL_ID, 5 * PRICE, 2**40),
    )
    payer = wallet(world, domain)
    assert payer.pay(replace(liar, latest=own)).voucher.cumulative_amount == 6 * PRICE
    assert payer.spent == PRICE


def test_the_wallet_adds_its_vouchers_a_stale_quote_missed(
    world: World, domain: Domain, node: VoucherVerifier
) -> None:
    payer = wallet(world, domain)
    stale = _quote(node, world)  # computed before either request's voucher reached the node
    assert payer.pay(stale).voucher.cumulative_amount == PRICE
    assert payer.pay(stale).voucher.cumulative_amount == 2 * PRICE
    seen = replace(stale, last_accepted=2 * PRICE, cumulative_amount=3 * PRICE)
    assert payer.pay(seen, attached=2 * PRICE).voucher.cumulative_amount == 3 * PRICE


@pytest.mark.parametrize(
    ("model", "expected"),
    [(b'{"model": "12"}', 12), (b'{"model": 3}', 3), (b'{"model": "gpt-4"}', None),
     (b'{"model": true}', None), (b"[1]", None), (b"not json", None), (b"", None)],
)  # fmt: skip
def test_model_id_is_read_from_the_json_model_field(model: bytes, expected: int | None) -> None:
    request = httpx.Request("POST", "http://node/v1/completions", content=model)
    assert model_id_from_json(request) == expected


def test_wallet_settings_are_checked() -> None:
    key = b"\x02" * 32
    payer = Account.from_key(key).address
    with pytest.raises(ValueError, match="payer must be an address"):
        VoucherWallet("0x12", key)
    with pytest.raises(ValueError, match="budget must be >= 0"):
        VoucherWallet(payer, key, budget=-1)
    with pytest.raises(ValueError, match="validity must be > 0"):
        VoucherWallet(payer, key, validity=0)
    assert VoucherWallet(payer.lower(), key).payer == payer
