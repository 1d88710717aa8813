"""The node's OpenAI-compatible HTTP API, behind the payment gate.

The routers are in ``routes/`` (``openai.py``: models and completions; ``node.py``: health,
status, redeem), they reach the :class:`NodeRuntime` through ``deps.NodeDep``, and serving a
completion (admit, generate, settle, answer or stream) is ``completion.py``.

Payment is x402 v2 (scheme ``openledger-voucher``, docs/payment-protocol.md): a 402 carries
``PAYMENT-REQUIRED``, the client pays with ``PAYMENT-SIGNATURE``, an answer carries
``PAYMENT-RESPONSE``. Extension, ignored by OpenAI clients: the ``openledger`` object of a
response (receipt id, price, request hash; a streamed answer's only receipt).
"""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError

from inference_node.server import errors
from inference_node.server.payment_gate import PaymentHTTPError
from inference_node.server.routes import router
from inference_node.server.runtime import NodeRuntime


def create_app(node: NodeRuntime) -> FastAPI:
    """The HTTP API over ``node`` (which the caller starts and stops)."""
    app = FastAPI(title="OpenLedger inference node", version="1")
    app.state.node = node
    app.add_exception_handler(RequestValidationError, errors.invalid_request)  # type: ignore[arg-type]
    app.add_exception_handler(errors.APIError, errors.api_error)  # type: ignore[arg-type]
    app.add_exception_handler(PaymentHTTPError, errors.payment_error)  # type: ignore[arg-type]
    app.include_router(router)
    return app
