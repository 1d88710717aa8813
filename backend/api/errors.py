"""Errors as JSON: ``{"reason": ..., "errors": [...]}`` with the status code that fits."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

log = logging.getLogger(__name__)


class ErrorItem(BaseModel):
    reason: str
    line: int | None = None  # 1-based line of an uploaded file (0: the whole file)
    loc: list[str | int] | None = None  # where in the request


class ErrorResponse(BaseModel):
    reason: str
    errors: list[ErrorItem] | None = None


class APIError(HTTPException):
    """An error answered as :class:`ErrorResponse`."""

    def __init__(self, status: int, reason: str, errors: list[ErrorItem] | None = None) -> None:
        super().__init__(status_code=status, detail=reason)
        self.errors = errors


def not_found(what: str) -> APIError:
    return APIError(404, f"{what} not found")


def conflict(reason: str) -> APIError:
    """The index or the content store cannot give a checked answer (missing or wrong data)."""
    return APIError(409, reason)


def responses(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries of the error answers a route can give."""
    text = {
        400: "Malformed request",
        404: "Not found",
        409: "The indexed or stored data cannot give a checked answer",
        413: "Upload too large",
        422: "Invalid input",
        502: "The content store is unreachable or returned bytes that do not match the CID",
    }
    return {code: {"model": ErrorResponse, "description": text[code]} for code in codes}


def _json(status: int, body: ErrorResponse, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers=headers)


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    reason = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
    return _json(
        exc.status_code,
        ErrorResponse(reason=reason, errors=getattr(exc, "errors", None)),
        getattr(exc, "headers", None),
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    items = [
        ErrorItem(reason=str(e.get("msg", "invalid")), loc=[str(p) for p in e.get("loc", ())])
        for e in exc.errors()
    ]
    return _json(422, ErrorResponse(reason="invalid request", errors=items))


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _json(500, ErrorResponse(reason=f"internal error ({type(exc).__name__})"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
