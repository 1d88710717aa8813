"""The node's OpenAI-compatible HTTP API, behind the payment gate.

The routers are in ``routes/`` (``openai.py``: models and completions; ``node.py``: health,
status, redeem), they reach the :class:`NodeRuntime` through ``deps.NodeDep``, and serving a
completion (admit, generate, settle, answer or stream) is ``completion.py``.

Payment is x402 v2 (scheme ``openledger-voucher``, docs/payment-protocol.md): a 402 carries
``PAYMENT-REQUIRED``, the client pays with ``PAYMENT-SIGNATURE``, an answer carries
``PAYMENT-RESPONSE``. Extension, ignored by OpenAI clients: the ``openledger`` object of a
response (receipt id, price, request hash; a streamed answer's only receipt).

With ``cors_origins`` set, browser pages of those origins may call the node: CORS allows the
payment request headers and exposes ``PAYMENT-REQUIRED`` and ``PAYMENT-RESPONSE``.
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware

from backend.protocol.payment_http import (
    PAYER_HEADER,
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
)
from inference_node.server import errors
from inference_node.server.payment_gate import PaymentHTTPError
from inference_node.server.routes import router
from inference_node.server.runtime import NodeRuntime

CORS_REQUEST_HEADERS = ["Content-Type", "Authorization", PAYMENT_SIGNATURE_HEADER, PAYER_HEADER]
CORS_EXPOSED_HEADERS = [PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER]


def create_app(node: NodeRuntime) -> FastAPI:
    """The HTTP API over ``node`` (which the caller starts and stops)."""
    app = FastAPI(title="OpenLedger inference node", version="1")
    app.state.node = node
    app.add_exception_handler(RequestValidationError, errors.invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(errors.APIError, errors.api_error)  # type: ignore[arg-type]
    app.add_exception_handler(PaymentHTTPError, errors.payment_error)  # type: ignore[arg-type]
    app.include_router(router)
    if node.settings.cors_origins:
        # A page on another origin pays in its own requests: it sends the payment headers and
        # must read the x402 answers' headers, which browsers hide unless exposed.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=node.settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
        )
    return app
