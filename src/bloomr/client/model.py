"""What `bloomr.client` hands out: messages, warnings and errors. Plain data, no I/O."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

CHANNEL_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# An `error` with one of these codes may go away by itself, so the subscription
# reconnects; any other code (unauthorized, invalid_argument, stream_deleted,
# token_revoked, ...) ends it with BloomrError.
TRANSIENT_ERRORS = frozenset({"internal", "unavailable", "rate_limited"})


@dataclass(frozen=True, slots=True)
class Message:
    """One message of a stream's channel, as the server's envelope describes it.

    `replayed` is true for messages of a replay phase (and of a backfill), false for
    messages that arrived live."""

    id: str
    stream: str
    channel: str
    timestamp: str
    data: Any
    replayed: bool = False

    @classmethod
    def from_envelope(cls, envelope: dict[str, Any], replayed: bool | None = None) -> Message:
        """From `{id, stream, channel, timestamp, data, replayed}` (the HTTP API's
        envelopes have no `replayed`: pass it)."""
        return cls(
            id=str(envelope.get("id", "")),
            stream=str(envelope.get("stream", "")),
            channel=str(envelope.get("channel", "")),
            timestamp=str(envelope.get("timestamp", "")),
            data=envelope.get("data"),
            replayed=bool(envelope.get("replayed")) if replayed is None else replayed,
        )

    def to_json(self) -> dict[str, Any]:
        """The envelope again, keys in the server's order."""
        return {
            "id": self.id,
            "stream": self.stream,
            "channel": self.channel,
            "timestamp": self.timestamp,
            "data": self.data,
            "replayed": self.replayed,
        }


@dataclass(frozen=True, slots=True)
class BloomrWarning:
    """A `warning` from the server (`replay_truncated`, `unknown_message_id`,
    `history_disabled`, `slow_consumer`, ...) or from the client itself:
    `connection_lost` and `reconnected` around a drop, `backfill_failed`, and the
    transient errors (`unavailable`, `internal`, `rate_limited`) it retries through.
    `details` holds the payload's other fields."""

    code: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_payload(cls, payload: Any) -> BloomrWarning:
        code, message, details = split_payload(payload)
        return cls(code, message, details)


class BloomrError(Exception):
    """The server refused or ended the subscription or a publish for good.

    `code` is the server's error code (`unauthorized`, `invalid_argument`,
    `stream_deleted`, `token_revoked`, `forbidden`, `not_found`, ...) or the client's
    own `unreachable` when the first connection cannot be made at all."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}

    @classmethod
    def from_payload(cls, payload: Any) -> BloomrError:
        return cls(*split_payload(payload))


def split_payload(payload: Any) -> tuple[str, str, dict[str, Any]]:
    """`{code, message, ...details}` -> (code, message, details), whatever came."""
    if not isinstance(payload, dict):
        return "unknown", str(payload), {}
    details = {k: v for k, v in payload.items() if k not in ("code", "message")}
    return str(payload.get("code", "unknown")), str(payload.get("message", "")), details


def check_channel(channel: str) -> str:
    """`""` or a name matching `[A-Za-z0-9_.:-]{1,64}`; ValueError otherwise."""
    if channel != "" and CHANNEL_RE.fullmatch(channel) is None:
        raise ValueError(f"invalid channel {channel!r}: use [A-Za-z0-9_.:-]{{1,64}} or ''")
    return channel


def http_error(status: int, body: bytes) -> BloomrError:
    """The API's `{"error": {"code", "message", ...}}` as a BloomrError whose details
    hold the other fields and the HTTP `status`."""
    try:
        error = json.loads(body)["error"]
        code, message, details = split_payload(error)
    except (ValueError, KeyError, TypeError):
        code, message, details = "http_error", f"HTTP {status}", {}
    return BloomrError(code, message, {**details, "status": status})
