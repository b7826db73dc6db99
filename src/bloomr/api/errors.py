"""Every HTTP error as `{"error": {"code", "message", ...}}`, from the one error table."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from ..errors import BloomrError
from ..faults import RETRY_AFTER_SECONDS, as_error
from .jsonbody import NOT_JSON
from .responses import JSON

_STATUS_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


def error_response(error: BloomrError) -> JSON:
    headers = retry_after(error)
    return JSON({"error": error.payload()}, status_code=error.status, headers=headers)


def retry_after(error: BloomrError) -> dict[str, str] | None:
    """`Retry-After` for a 503 (the backend is expected back by itself), or the one an
    error names (a 429: when the address may try again)."""
    seconds = error.details.get("retry_after")
    if seconds is not None:
        return {"Retry-After": str(seconds)}
    return {"Retry-After": str(RETRY_AFTER_SECONDS)} if error.status == 503 else None


def _field(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path")]
    return ".".join(parts)


async def _on_bloomr(_: Request, exc: Exception) -> JSON:
    assert isinstance(exc, BloomrError)
    return error_response(exc)


async def _on_validation(_: Request, exc: Exception) -> JSON:
    assert isinstance(exc, RequestValidationError)
    first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
    if first.get("type") == "json_invalid":
        return error_response(BloomrError("invalid_json", NOT_JSON))
    field = _field(tuple(first.get("loc", ())))
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return error_response(BloomrError("validation_failed", message, field=field))


async def _on_http(_: Request, exc: Exception) -> JSON:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 400:  # FastAPI's only 400: a body it could not parse
        return error_response(BloomrError("invalid_json", NOT_JSON))
    code = _STATUS_CODES.get(exc.status_code, "invalid_argument")
    if exc.status_code >= 500:
        code = "internal"
    return error_response(BloomrError(code, str(exc.detail)))


async def _on_unexpected(request: Request, exc: Exception) -> JSON:
    # stores translate their failures; this catches one that escaped them
    return error_response(as_error(exc, f"{request.method} {request.url.path}"))


def install(app: FastAPI) -> None:
    app.add_exception_handler(BloomrError, _on_bloomr)
    app.add_exception_handler(RequestValidationError, _on_validation)
    app.add_exception_handler(HTTPException, _on_http)
    app.add_exception_handler(Exception, _on_unexpected)
