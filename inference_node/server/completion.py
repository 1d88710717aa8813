"""Serving one completion request: admit, generate, settle, answer (whole or streamed).

Per request: resolve ``model`` to a served model version → price it from the prompt and
``max_tokens`` → the gate admits the voucher (402 with a quote otherwise) → generate → score
the answer's attribution by spans and write the receipt (its ``attributionDigest`` the answer
record's digest), the record and the voucher durably (``settle``, in a worker thread) → only
then answer; gradients follow in the background (inference_node/attribution.py). Streamed
answers send text as it is generated and settle before the final chunk; a client that leaves
mid-stream is charged for the tokens it was sent, and one whose request fails is charged
nothing (its reservation is released).
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
from fastapi import Request
from fastapi.responses import JSONResponse, StreamingResponse

from backend.protocol.receipts import Receipt
from inference_node.engine.adapters import AdapterError
from inference_node.engine.sampling import SamplingParams
from inference_node.engine.scheduler import Completion, GenerationError, RequestHandle, TextDelta
from inference_node.payments.verify import Acceptance
from inference_node.server.catalog import ServedModel, UnknownModelError
from inference_node.server.errors import APIError, api_error_response, generation_error, or_400
from inference_node.server.openai_schemas import (
    ChatCompletionRequest,
    CompletionRequest,
    error_body,
    usage,
)
from inference_node.server.payment_gate import SettleResult
from inference_node.server.runtime import NodeRuntime

log = logging.getLogger(__name__)
ZERO32 = b"\x00" * 32


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


async def serve(
    node: NodeRuntime,
    request: Request,
    body: CompletionRequest | ChatCompletionRequest,
    kind: str,
    prompt: list[int],
    default_max: int,
) -> JSONResponse | StreamingResponse:
    """Answers ``body`` (already tokenized to ``prompt``) once its payment is admitted."""
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
    params = or_400(
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
    job = Job(
        request_id,
        kind,
        served,
        request_hash,
        acceptance,
        handle,
        int(time.time()),
        time.monotonic(),
    )
    if body.stream:
        return await stream(node, job, body.include_usage)
    try:
        done = await handle.aresult()
    except GenerationError as exc:
        node.gate.release(acceptance)
        raise generation_error(exc) from exc
    except BaseException:  # the client left or the server is stopping: nothing is charged
        handle.cancel()
        node.gate.release(acceptance)
        raise
    settled = await settle(node, job, done)
    return JSONResponse(final_body(job, done, settled), headers=settled.headers())


async def settle(node: NodeRuntime, job: Job, done: Completion) -> SettleResult:
    """Scores the answer's attribution and writes its receipt durably; the gate's result."""
    price = job.served.pricing.price(done.prompt_tokens, done.completion_tokens)
    v = job.acceptance.voucher.voucher
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

    def write() -> SettleResult:  # in a worker thread: spans and an fsync'ed write
        attribution = None
        if node.attribution is not None:
            attribution = node.attribution.answer(
                job.served.model_id, job.served.version, job.handle.prompt_ids, done.token_ids
            )
        digest = ZERO32 if attribution is None else keccak(attribution.answer_record)
        scored = replace(receipt, attribution_digest=digest)
        return node.gate.settle(job.acceptance, scored, attribution)

    settled = await to_thread.run_sync(write)
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


def final_body(job: Job, done: Completion, settled: SettleResult) -> dict[str, Any]:
    """The whole answer: OpenAI's completion object plus the ``openledger`` receipt."""
    choice: dict[str, Any] = {"index": 0, "finish_reason": done.finish_reason}
    if job.kind == "chat":
        choice["message"] = {"role": "assistant", "content": done.text}
        obj = "chat.completion"
    else:
        choice |= {"text": done.text, "logprobs": None}
        obj = "text_completion"
    return _envelope(job, obj, choice) | {
        "usage": usage(done.prompt_tokens, done.completion_tokens),
        "openledger": _extension(job, settled),
    }


def chunk(job: Job, text: str | None, finish: str | None, first: bool) -> dict[str, Any]:
    """One streamed chunk: ``text`` (None for none), ``finish`` on the last."""
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
    return _envelope(job, obj, choice)


async def stream(
    node: NodeRuntime, job: Job, include_usage: bool
) -> StreamingResponse | JSONResponse:
    """Server-sent events of the answer as it is generated; an error if it fails at once."""
    events = job.handle.events()
    try:
        first = await anext(events)
    except BaseException:
        job.handle.cancel()
        node.gate.release(job.acceptance)
        raise
    if isinstance(first, GenerationError):
        node.gate.release(job.acceptance)
        return api_error_response(generation_error(first))

    async def sse() -> AsyncIterator[str]:
        settled = False
        sent = ""
        try:
            event = first
            opening = True
            while True:
                if isinstance(event, TextDelta):
                    sent += event.text
                    yield _sse(chunk(job, event.text, None, opening))
                    opening = False
                elif isinstance(event, GenerationError):
                    node.gate.release(job.acceptance)
                    settled = True
                    yield _sse(error_body(str(event), "server_error", event.reason))
                    return
                else:
                    result = await settle(node, job, event)
                    settled = True
                    final = chunk(job, None, event.finish_reason, opening)
                    final["openledger"] = _extension(job, result)
                    yield _sse(final)
                    if include_usage:
                        tail = chunk(job, None, None, False) | {"choices": []}
                        tail["usage"] = usage(event.prompt_tokens, event.completion_tokens)
                        yield _sse(tail)
                    yield "data: [DONE]\n\n"
                    return
                event = await anext(events)
        finally:
            if not settled:  # the client left mid-stream: charge what it was sent
                job.handle.cancel()
                await charge_partial(node, job, sent)

    return StreamingResponse(sse(), media_type="text/event-stream")


async def charge_partial(node: NodeRuntime, job: Job, sent: str) -> None:
    """Settles a stream the client left for the ``sent`` text (nothing sent: nothing charged)."""
    try:
        done = await job.handle.aresult()
    except GenerationError:
        node.gate.release(job.acceptance)
        return
    if not sent:
        node.gate.release(job.acceptance)
        return
    partial = Completion(
        done.request_id,
        sent,
        done.token_ids,
        done.finish_reason,
        done.prompt_tokens,
        done.completion_tokens,
    )
    await settle(node, job, partial)


def _envelope(job: Job, obj: str, choice: dict[str, Any]) -> dict[str, Any]:
    """What a whole answer and a chunk share: id, object, time, model and the one choice."""
    return {
        "id": ("chatcmpl-" if job.kind == "chat" else "cmpl-") + job.request_id,
        "object": obj,
        "created": job.created,
        "model": job.served.name,
        "choices": [choice],
    }


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
