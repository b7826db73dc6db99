"""Request signatures: `X-Bloomr-Signature: sha256=<hex HMAC-SHA256 of
"<timestamp>.<raw body>">`, keyed by the webhook's secret. Pure functions.

Signing the timestamp with the body lets a receiver refuse old requests replayed by
someone who captured one (compare `X-Bloomr-Timestamp` with its clock)."""

from __future__ import annotations

import hashlib
import hmac

SIGNATURE_HEADER = "X-Bloomr-Signature"
TIMESTAMP_HEADER = "X-Bloomr-Timestamp"
DELIVERY_HEADER = "X-Bloomr-Delivery"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`sha256=<hex>` for this timestamp (Unix seconds) and raw body."""
    signed = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def verify(secret: str, timestamp: str | int, body: bytes, header: str) -> bool:
    """What a receiver does: recompute and compare in constant time."""
    try:
        moment = int(timestamp)
    except ValueError:
        return False
    return hmac.compare_digest(signature(secret, moment, body), header)


def headers(secret: str, delivery_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """Every header of one attempt."""
    return {
        "Content-Type": "application/json",
        DELIVERY_HEADER: delivery_id,
        TIMESTAMP_HEADER: str(timestamp),
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }
