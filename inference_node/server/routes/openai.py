"""The OpenAI-compatible API: ``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``.

The two completion routes tokenize (the chat template for chat) and hand over to
:func:`inference_node.server.completion.serve`, which runs the payment gate.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, StreamingResponse

from backend.protocol.payment_http import (
    PAYER_HEADER,
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
)
from inference_node.server.completion import serve
from inference_node.server.deps import NodeDep
from inference_node.server.errors import or_400
from inference_node.server.openai_schemas import ChatCompletionRequest, CompletionRequest

router = APIRouter()

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


@router.get("/v1/models")
async def list_models(node: NodeDep) -> dict[str, Any]:
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


@router.post("/v1/completions", response_model=None, responses=PAYMENT_RESPONSES)
async def completions(
    body: CompletionRequest, request: Request, node: NodeDep
) -> JSONResponse | StreamingResponse:
    prompt = or_400(lambda: node.tokenizer.encode(body.prompt_text))
    return await serve(node, request, body, "completion", prompt, default_max=16)


@router.post("/v1/chat/completions", response_model=None, responses=PAYMENT_RESPONSES)
async def chat_completions(
    body: ChatCompletionRequest, request: Request, node: NodeDep
) -> JSONResponse | StreamingResponse:
    prompt = or_400(
        lambda: list(
            node.tokenizer.apply_chat_template(
                body.chat(), add_generation_prompt=True, tokenize=True
            )
        )
    )
    body.max_tokens = body.requested_max_tokens
    return await serve(node, request, body, "chat", prompt, default_max=node.settings.max_tokens)
