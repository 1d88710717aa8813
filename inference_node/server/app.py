"""The node's OpenAI-compatible HTTP API, behind the payment gate.

Per request: validate → resolve ``model`` to a served model version → tokenize (the chat
template for chat) → price it from the prompt and ``max_tokens`` → the gate admits the voucher
(402 with a quote otherwise) → generate → score the answer's attribution by spans and write
the receipt (its ``attributionDigest`` the answer record's digest), the record and the voucher
durably (``settle``, in a worker thread) → only then answer; gradients follow in the
background (inference_node/attribution.py). Streamed answers send text as it is generated
and settle before the final chunk; a client that leaves mid-stream is charged for the tokens
it was sent, and one whose request fails is charged nothing (its reservation is released).

Payment is x402 v2 (scheme ``openledger-voucher``, docs/payment-protocol.md): a 402 carries
``PAYMENT-REQUIRED``, the client pays with ``PAYMENT-SIGNATURE``, an answer carries
``PAYMENT-RESPONSE``. Extension, ignored by OpenAI clients: the ``openledger`` object of a
response (receipt id, price, request hash; a streamed answer's only receipt).
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

from anyio import to_thread
from eth_utils import keccak
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse

from backend.protocol.payment_http import (
    PAYER_HEADER,
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
)
from backend.protocol.receipts import Receipt
from inference_node.engine.adapters import AdapterError
from inference_node.engine.sampling import SamplingParams
from inference_node.engine.scheduler import Completion, GenerationError, RequestHandle, TextDelta
from inference_node.payments.verify import Acceptance
from inference_node.server.catalog import ServedModel, UnknownModelError
from inference_node.server.openai_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    error_body,
    usage,
)
from inference_node.server.payment_gate import PaymentHTTPError, SettleResult
from inference_node.server.runtime import NodeRuntime

log = logging.getLogger(__name__)
ZERO32 = b"\x00" * 32
LOOPBACK = {"127.0.0.1", "::1"}


_ERROR_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {
                        "message": {"type": "string"},
                        "type": {"type": "string"},
                        "code": {"type": "string"},
                        "param": {"type": ["string", "null"]},
                    },
                }
            },
        }
    }
}
_REQUIRED = {
    PAYMENT_REQUIRED_HEADER: {
        "description": "base64 of the x402 v2 PaymentRequired JSON: accepts[0] is an "
        "`openledger-voucher` requirement with the quote and the EIP-712 typed data to sign "
        "(docs/payment-protocol.md)",
        "schema": {"type": "string"},
    }
}
PAYMENT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The answer. Not streamed, it carries the receipt in PAYMENT-RESPONSE.",
        "headers": {
            PAYMENT_RESPONSE_HEADER: {
                "description": "base64 of the x402 SettleResponse JSON: the receipt id, the "
                "actual price (amount), the channel's accepted amount and credit (extra)",
                "schema": {"type": "string"},
            }
        },
    },
    402: {
        "description": "Payment required: no voucher, or one that does not pay enough yet. "
        f"Send {PAYER_HEADER} to be quoted, then pay with {PAYMENT_SIGNATURE_HEADER}.",
        "headers": _REQUIRED,
        "content": _ERROR_BODY,
    },
    400: {
        "description": "A bad request, or a payment that can never be valid (wrong signer, "
        "another channel, malformed); payment answers carry PAYMENT-REQUIRED.",
        "headers": _REQUIRED,
        "content": _ERROR_BODY,
    },
}


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code = status, kind, code


def _generation_error(exc: GenerationError) -> APIError:
    """A refused adapter is permanent: 422 with the reason (OpenAI clients do not retry it);
    503 stays for what may pass (the engine failed or is shutting down)."""
    if exc.reason == "adapter":
        return APIError(422, str(exc), "invalid_request_error", "adapter_refused")
    return APIError(503, str(exc), "server_error", exc.reason)


@dataclass
class Job:
    """One admitted request on its way through the engine."""

    request_id: str
    kind: str  # "chat" | "completion"
    served: ServedModel
    request_hash: bytes
    acceptance: Acceptance
    handle: RequestHandle
    created: int
    started: float


def create_app(node: NodeRuntime) -> FastAPI:
    app = FastAPI(title="OpenLedger inference node", version="1")
    app.state.node = node

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"{where}: {first.get('msg', 'invalid request')}".strip(": ")
        return JSONResponse(error_body(message, "invalid_request_error", param=where), 400)

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError) -> JSONResponse:
        return JSONResponse(error_body(str(exc), exc.kind, exc.code), exc.status)

    @app.exception_handler(PaymentHTTPError)
    async def _payment(_: Request, exc: PaymentHTTPError) -> JSONResponse:
        return JSONResponse(exc.body, exc.status, headers=exc.headers)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {
            "object": "list",
            "data": [
                {
                    "id": str(m.model_id),
                    "object": "model",
                    "created": m.published_at,
                    "owned_by": "openledger",
                    "version": m.version,
                    "adapter_cid": m.adapter_cid,
                    "pricing": {
                        "per_request": str(m.pricing.per_request),
                        "per_token": str(m.pricing.per_token),
                    },
                }
                for m in node.catalog.served()
            ],
        }

    @app.post("/v1/completions", response_model=None, responses=PAYMENT_RESPONSES)
    async def completions(body: CompletionRequest, request: Request):
        prompt = _or_400(lambda: node.tokenizer.encode(body.prompt_text))
        return await _serve(request, body, "completion", prompt, default_max=16)

    @app.post("/v1/chat/completions", response_model=None, responses=PAYMENT_RESPONSES)
    async def chat_completions(body: ChatCompletionRequest, request: Request):
        prompt = _or_400(
            lambda: list(
                node.tokenizer.apply_chat_template(
                    body.chat(), add_generation_prompt=True, tokenize=True
                )
            )
        )
        body.max_tokens = body.requested_max_tokens
        return await _serve(request, body, "chat", prompt, default_max=node.settings.max_tokens)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {"status": "ok", "node": node.address}

    @app.get("/node/status")
    async def status() -> dict[str, Any]:
        return await to_thread.run_sync(node.status)

    @app.post("/node/redeem")
    async def redeem(request: Request) -> dict[str, Any]:
        """Redeems now (operators' ``redeem-now``); accepted from loopback clients only."""
        if request.client is None or request.client.host not in LOOPBACK:
            raise APIError(403, "redeem is accepted from the node's own host only", "forbidden")
        done = await to_thread.run_sync(node.redeem_now)
        if not done:
            return {"redeemed": False, "redemptions": []}
        batches = [
            {
                "redemption_id": r.id,
                "status": r.status,
                "tx_hash": r.tx_hash,
                "usage_proof_id": r.proof_id,
                "paid": str(r.paid) if r.paid is not None else None,
                "receipts": r.receipt_count,
                "receipts_cid": r.receipts_cid,
            }
            for r in done
        ]
        # The last batch's fields at the top level too: one batch is the common case.
        return {"redeemed": all(r.status == "confirmed" for r in done), **batches[-1],
                "redemptions": batches}  # fmt: skip

    async def _serve(
        request: Request,
        body: CompletionRequest | ChatCompletionRequest,
        kind: str,
        prompt: list[int],
        default_max: int,
    ):
        try:
            served = node.catalog.resolve(body.model)
        except UnknownModelError as exc:
            raise APIError(404, str(exc), "invalid_request_error", "model_not_found") from exc
        max_tokens = body.max_tokens or min(default_max, node.settings.max_tokens)
        if max_tokens > node.settings.max_tokens_limit:
            raise APIError(
                400,
                f"max_tokens {max_tokens} exceeds this node's limit of "
                f"{node.settings.max_tokens_limit}",
                "invalid_request_error",
            )
        params = _or_400(
            lambda: SamplingParams(
                max_tokens=max_tokens,
                temperature=body.temperature,
                top_p=body.top_p,
                stop=body.stop_sequences,
                seed=body.seed,
            )
        )
        price = served.pricing.price(len(prompt), max_tokens)
        headers = dict(request.headers)
        acceptance = await node.gate.admit_async(headers, served.model_id, price, str(request.url))
        request_id = uuid.uuid4().hex
        try:
            handle = node.engine.submit(prompt, params, adapter=served.name, request_id=request_id)
        except (ValueError, AdapterError) as exc:
            node.gate.release(acceptance)
            raise APIError(400, str(exc), "invalid_request_error") from exc
        payer = acceptance.voucher.voucher.payer
        request_hash = keccak(
            text=json.dumps([request_id, payer, served.name, prompt, params.max_tokens])
        )
        job = Job(request_id, kind, served, request_hash, acceptance, handle,
                  int(time.time()), time.monotonic())  # fmt: skip
        if body.stream:
            return await _stream(job, body.include_usage)
        try:
            done = await handle.aresult()
        except GenerationError as exc:
            node.gate.release(acceptance)
            raise _generation_error(exc) from exc
        except BaseException:  # the client left or the server is stopping: nothing is charged
            handle.cancel()
            node.gate.release(acceptance)
            raise
        settled = await _settle(job, done)
        return JSONResponse(_final_body(job, done, settled), headers=settled.headers())

    async def _settle(job: Job, done: Completion) -> SettleResult:
        price = job.served.pricing.price(done.prompt_tokens, done.completion_tokens)
        v = job.acceptance.voucher.voucher

        def settle() -> SettleResult:  # in a worker thread: spans and an fsync'ed write
            attribution = None
            if node.attribution is not None:
                attribution = node.attribution.answer(
                    job.served.model_id, job.served.version, job.handle.prompt_ids,
                    done.token_ids,
                )  # fmt: skip
            digest = ZERO32 if attribution is None else keccak(attribution.answer_record)
            return node.gate.settle(job.acceptance, replace(receipt, attribution_digest=digest),
                                    attribution)  # fmt: skip

        receipt = Receipt(
            request_hash=job.request_hash,
            payer=v.payer,
            node=node.address,
            model_id=job.served.model_id,
            adapter_version=job.served.version,
            tokens_in=done.prompt_tokens,
            tokens_out=done.completion_tokens,
            price=price,
            output_hash=keccak(text=done.text),
            attribution_digest=ZERO32,
            voucher_cumulative=v.cumulative_amount,
            created_at=job.created,
        )
        settled = await to_thread.run_sync(settle)
        if node.worker is not None:
            node.worker.wake()
        log.info(
            "served",
            extra={
                "request_id": job.request_id,
                "model": job.served.name,
                "payer": v.payer,
                "tokens_in": done.prompt_tokens,
                "tokens_out": done.completion_tokens,
                "finish_reason": done.finish_reason,
                "price_wei": str(price),
                "receipt_id": settled.receipt_id,
                "seconds": round(time.monotonic() - job.started, 3),
            },
        )
        return settled

    def _final_body(job: Job, done: Completion, settled: SettleResult) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": done.finish_reason}
        if job.kind == "chat":
            choice["message"] = {"role": "assistant", "content": done.text}
            obj = "chat.completion"
        else:
            choice |= {"text": done.text, "logprobs": None}
            obj = "text_completion"
        return {
            "id": _response_id(job),
            "object": obj,
            "created": job.created,
            "model": job.served.name,
            "choices": [choice],
            "usage": usage(done.prompt_tokens, done.completion_tokens),
            "openledger": _extension(job, settled),
        }

    def _chunk(job: Job, text: str | None, finish: str | None, first: bool) -> dict[str, Any]:
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
        if job.kind == "chat":
            delta: dict[str, str] = {"role": "assistant"} if first else {}
            if text:
                delta["content"] = text
            choice["delta"] = delta
            obj = "chat.completion.chunk"
        else:
            choice |= {"text": text or "", "logprobs": None}
            obj = "text_completion"
        return {
            "id": _response_id(job),
            "object": obj,
            "created": job.created,
            "model": job.served.name,
            "choices": [choice],
        }

    async def _stream(job: Job, include_usage: bool) -> StreamingResponse | JSONResponse:
        events = job.handle.events()
        try:
            first = await anext(events)
        except BaseException:
            job.handle.cancel()
            node.gate.release(job.acceptance)
            raise
        if isinstance(first, GenerationError):
            node.gate.release(job.acceptance)
            refused = _generation_error(first)
            return JSONResponse(
                error_body(str(refused), refused.kind, refused.code), refused.status
            )

        async def sse() -> AsyncIterator[str]:
            settled = False
            sent = ""
            try:
                event = first
                opening = True
                while True:
                    if isinstance(event, TextDelta):
                        sent += event.text
                        yield _sse(_chunk(job, event.text, None, opening))
                        opening = False
                    elif isinstance(event, GenerationError):
                        node.gate.release(job.acceptance)
                        settled = True
                        yield _sse(error_body(str(event), "server_error", event.reason))
                        return
                    else:
                        result = await _settle(job, event)
                        settled = True
                        final = _chunk(job, None, event.finish_reason, opening)
                        final["openledger"] = _extension(job, result)
                        yield _sse(final)
                        if include_usage:
                            tail = _chunk(job, None, None, False) | {"choices": []}
                            tail["usage"] = usage(event.prompt_tokens, event.completion_tokens)
                            yield _sse(tail)
                        yield "data: [DONE]\n\n"
                        return
                    event = await anext(events)
            finally:
                if not settled:  # the client left mid-stream: charge what it was sent
                    job.handle.cancel()
                    await _charge_partial(job, sent)

        return StreamingResponse(sse(), media_type="text/event-stream")

    async def _charge_partial(job: Job, sent: str) -> None:
        try:
            done = await job.handle.aresult()
        except GenerationError:
            node.gate.release(job.acceptance)
            return
        if not sent:
            node.gate.release(job.acceptance)
            return
        await _settle(job, Completion(done.request_id, sent, done.token_ids,
                                      done.finish_reason, done.prompt_tokens,
                                      done.completion_tokens))  # fmt: skip

    return app


def _or_400(make):  # type: ignore[no-untyped-def]
    try:
        return make()
    except ValueError as exc:
        raise APIError(400, str(exc), "invalid_request_error") from exc


def _response_id(job: Job) -> str:
    return ("chatcmpl-" if job.kind == "chat" else "cmpl-") + job.request_id


def _extension(job: Job, settled: SettleResult) -> dict[str, Any]:
    return {
        "receipt_id": settled.receipt_id,
        "request_hash": "0x" + job.request_hash.hex(),
        "model_id": job.served.model_id,
        "adapter_version": job.served.version,
        "price": str(settled.price),
        "accepted": str(settled.accepted),
        "credit": str(settled.credit),
    }


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'))}\n\n"
