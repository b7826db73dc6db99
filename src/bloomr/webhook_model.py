"""A webhook, its delivery state and the batch in flight. Plain data, no I/O: the
stores keep them, the webhooks package delivers them."""

from __future__ import annotations

import secrets
import string
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from .model import DEFAULT_CHANNEL, iso_from_ms, iso_now

MAX_BATCH = 100  # messages per request when backlogged

_ALPHABET = string.ascii_letters + string.digits


def new_webhook_id() -> str:
    return "wh_" + "".join(secrets.choice(_ALPHABET) for _ in range(16))


def new_webhook_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def new_delivery_id() -> str:
    return str(uuid.uuid4())


@dataclass(slots=True)
class Webhook:
    """What an admin created. The secret signs every request, so it is stored as is
    (unlike token secrets); the API shows it only in the create response."""

    id: str
    stream: str
    url: str
    secret: str
    channel: str = DEFAULT_CHANNEL
    created_at: str = field(default_factory=iso_now)

    def to_doc(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "stream": self.stream,
            "url": self.url,
            "channel": self.channel,
            "secret": self.secret,
            "created_at": self.created_at,
        }

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> Webhook:
        return Webhook(
            id=doc["id"],
            stream=doc["stream"],
            url=doc["url"],
            secret=doc["secret"],
            channel=doc.get("channel", DEFAULT_CHANNEL),
            created_at=doc.get("created_at") or iso_now(),
        )


@dataclass(slots=True)
class Batch:
    """The request being delivered: outbox messages `first_seq..last_seq` of the webhook,
    in the outbox's `era` (a batch never spans two). A retry (also after a restart)
    sends the same messages under the same delivery id, so the body is the same bytes."""

    delivery_id: str
    first_seq: int
    last_seq: int
    count: int
    first_attempt_ms: int
    attempts: int = 0  # failed attempts so far
    next_attempt_ms: int | None = None  # None: now
    era: int = 0

    def to_doc(self) -> dict[str, Any]:
        return {
            "delivery_id": self.delivery_id,
            "era": self.era,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "count": self.count,
            "first_attempt_ms": self.first_attempt_ms,
            "attempts": self.attempts,
            "next_attempt_ms": self.next_attempt_ms,
        }

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> Batch:
        return Batch(
            delivery_id=doc["delivery_id"],
            first_seq=int(doc["first_seq"]),
            last_seq=int(doc["last_seq"]),
            count=int(doc["count"]),
            first_attempt_ms=int(doc["first_attempt_ms"]),
            attempts=int(doc.get("attempts", 0)),
            next_attempt_ms=doc.get("next_attempt_ms"),
            era=int(doc.get("era", 0)),  # a batch from before eras is in era 0
        )


@dataclass(slots=True)
class DeliveryState:
    """Counters and the outcome of the last attempt, plus the batch in flight."""

    delivered: int = 0  # messages acknowledged with a 2xx
    dropped: int = 0  # messages given up on after the retry window
    dropped_batches: int = 0
    last_status: int | None = None  # HTTP status of the last attempt (None: no answer)
    last_error: str | None = None  # why the last attempt failed (None: it succeeded)
    last_attempt_ms: int | None = None
    last_delivery_ms: int | None = None  # the last 2xx
    batch: Batch | None = None

    def to_doc(self) -> dict[str, Any]:
        return {
            "delivered": self.delivered,
            "dropped": self.dropped,
            "dropped_batches": self.dropped_batches,
            "last_status": self.last_status,
            "last_error": self.last_error,
            "last_attempt_ms": self.last_attempt_ms,
            "last_delivery_ms": self.last_delivery_ms,
            "batch": None if self.batch is None else self.batch.to_doc(),
        }

    @staticmethod
    def from_doc(doc: dict[str, Any]) -> DeliveryState:
        batch = doc.get("batch")
        return DeliveryState(
            delivered=int(doc.get("delivered", 0)),
            dropped=int(doc.get("dropped", 0)),
            dropped_batches=int(doc.get("dropped_batches", 0)),
            last_status=doc.get("last_status"),
            last_error=doc.get("last_error"),
            last_attempt_ms=doc.get("last_attempt_ms"),
            last_delivery_ms=doc.get("last_delivery_ms"),
            batch=None if batch is None else Batch.from_doc(batch),
        )


@dataclass(slots=True)
class WebhookRecord:
    """A webhook as stored: its definition, its state and how many messages wait."""

    webhook: Webhook
    state: DeliveryState
    pending: int

    def to_json(self, *, with_secret: bool = False) -> dict[str, Any]:
        """The API's shape: the definition and the delivery state, flat; the secret
        only when asked (the create response)."""
        hook, state, batch = self.webhook, self.state, self.state.batch
        doc: dict[str, Any] = {
            "id": hook.id,
            "stream": hook.stream,
            "url": hook.url if with_secret else masked_url(hook.url),  # shown in full once
            "channel": hook.channel,
        }
        if with_secret:
            doc["secret"] = hook.secret
        doc |= {
            "created_at": hook.created_at,
            "pending": self.pending,
            "delivered": state.delivered,
            "dropped": state.dropped,
            "last_status": state.last_status,
            "last_error": state.last_error,
            "last_attempt_at": _iso(state.last_attempt_ms),
            "last_delivery_at": _iso(state.last_delivery_ms),
            "delivery_id": None if batch is None else batch.delivery_id,
            "attempts": 0 if batch is None else batch.attempts,
            "next_attempt_at": None if batch is None else _iso(batch.next_attempt_ms),
        }
        return doc


def _iso(ms: int | None) -> str | None:
    return None if ms is None else iso_from_ms(ms)


def request_body(envelopes: list[bytes]) -> bytes:
    """`{"messages": [envelope, ...]}` from the envelopes' JSON, byte for byte the same
    for the same envelopes (a retry's body equals the first attempt's)."""
    return b'{"messages":[' + b",".join(envelopes) + b"]}"


def masked_url(url: str) -> str:
    """The URL with its password, if it has one, shown as `***` (lists are read by
    people and tools that need not know it)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))
