"""The node API's errors as OpenAI-shaped JSON (``{"error": {...}}``), and their handlers."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from inference_node.engine.scheduler import GenerationError
from inference_node.server.openai_schemas import error_body
from inference_node.server.payment_gate import PaymentHTTPError

T = TypeVar("T")


class APIError(Exception):
    """An error answered with ``status`` and an OpenAI error body of ``kind`` and ``code``."""

    def __init__(self, status: int, message: str, kind: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind, self.code = status, kind, code


def generation_error(exc: GenerationError) -> APIError:
    """A refused adapter is permanent: 422 with the reason (OpenAI clients do not retry it);
    503 stays for what may pass (the engine failed or is shutting down)."""
    if exc.reason == "adapter":
        return APIError(422, str(exc), "invalid_request_error", "adapter_refused")
    return APIError(503, str(exc), "server_error", exc.reason)


def api_error_response(exc: APIError) -> JSONResponse:
    return JSONResponse(error_body(str(exc), exc.kind, exc.code), exc.status)


def or_400(make: Callable[[], T]) -> T:
    """``make()``, its ValueError answered as a 400 invalid request."""
    try:
        return make()
    except ValueError as exc:
        raise APIError(400, str(exc), "invalid_request_error") from exc


async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
    """A body that fails validation: 400 (OpenAI's status, not FastAPI's 422) naming the field."""
    first = exc.errors()[0] if exc.errors() else {}
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
    message = f"{where}: {first.get('msg', 'invalid request')}".strip(": ")
    return JSONResponse(error_body(message, "invalid_request_error", param=where), 400)


async def api_error(_: Request, exc: APIError) -> JSONResponse:
    return api_error_response(exc)


async def payment_error(_: Request, exc: PaymentHTTPError) -> JSONResponse:
    """402 or 400 with the x402 ``PAYMENT-REQUIRED`` header the gate built."""
    return JSONResponse(exc.body, exc.status, headers=exc.headers)
