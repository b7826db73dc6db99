"""The one error table: every code bloomr reports, with its HTTP status.

Socket.IO `error`/`warning` payloads and HTTP `{"error": {...}}` bodies are both built
from `BloomrError`, so a code means the same thing on every transport."""

from __future__ import annotations

from typing import Any

HTTP_STATUS: dict[str, int] = {
    "invalid_argument": 400,
    "invalid_json": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "unknown_message_id": 404,
    "method_not_allowed": 405,
    "request_timeout": 408,
    "conflict": 409,
    "payload_too_large": 413,
    "validation_failed": 422,
    "idempotency_key_reused": 422,  # an Idempotency-Key sent again with another body
    "header_too_large": 431,
    "rate_limited": 429,
    "internal": 500,
    "unavailable": 503,
    # codes only ever sent on a live connection, never as an HTTP status of their own
    "token_revoked": 401,
    "stream_deleted": 410,
}

WARNING_CODES = frozenset(
    {
        "replay_limit_capped",
        "replay_truncated",
        "unknown_message_id",
        "history_disabled",
        "slow_consumer",
        "recovery_failed",
        "history_reset",
        "shutting_down",
    }
)


class BloomrError(Exception):
    """An error with a code from the table above and optional details (e.g. `field`)."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        assert code in HTTP_STATUS, code
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details

    @property
    def status(self) -> int:
        return HTTP_STATUS[self.code]

    def payload(self) -> dict[str, Any]:
        """`{code, message, ...details}`: the Socket.IO `error` payload and HTTP body core."""
        return {"code": self.code, "message": self.message, **self.details}


def invalid_argument(field: str, message: str) -> BloomrError:
    return BloomrError("invalid_argument", message, field=field)


def warning(code: str, message: str, **details: Any) -> dict[str, Any]:
    """A `warning` payload: `{code, message, ...details}`; the connection stays up."""
    assert code in WARNING_CODES, code
    return {"code": code, "message": message, **details}
