"""Idempotent publishing: the `Idempotency-Key` a publisher sends with a request, and
the fingerprint of what it asked for. Plain functions, no I/O: the stores record the
key atomically with the append (`store/base.py` `AppendBatch`), the hub keeps one
request per key in progress on a node.

The fingerprint is of the parsed drafts (each message's channel and data JSON as
re-encoded), not of the raw body: `{"data": 1}`, `[{"data": 1}]` and `{"channel": "",
"data": 1}` ask for the same thing and are one request, whatever the whitespace."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from .errors import BloomrError, invalid_argument
from .model import Draft, Message

HEADER = "Idempotency-Key"
_HEADER_NAME = HEADER.lower().encode()
MAX_KEY_LENGTH = 255
_KEY = re.compile(rb"[\x21-\x7e]{1,%d}" % MAX_KEY_LENGTH)
FINGERPRINT_LENGTH = 32  # hex characters: 128 bits of SHA-256
_ID_LENGTH = 36

# How long a key is remembered, and at most how many each stream remembers (the
# oldest go first): together they bound what keys cost (README, "Idempotent publish").
KEY_TTL_MS = 24 * 3600 * 1000
KEYS_PER_STREAM = 10_000


@dataclass(frozen=True, slots=True)
class Repeat:
    """The outcome of a publish whose key was recorded already with the same
    fingerprint: the ids the first request got. Nothing was stored or fanned out.

    `messages`: the first request's messages, rebuilt, from a history that stores
    apart from the webhook outboxes (Redis). The first request may have died between
    its append and its outbox write, unanswered; its repeat is answered only once the
    outboxes hold them (written again where they are already: nothing doubles)."""

    ids: list[str]
    messages: list[Message] = field(default_factory=list, compare=False)


@dataclass(frozen=True, slots=True)
class KeyPolicy:
    """How long a store keeps idempotency keys, and how many per stream at most."""

    ttl_ms: int = KEY_TTL_MS
    per_stream: int = KEYS_PER_STREAM


def header_value(headers: Iterable[tuple[bytes, bytes]]) -> bytes | None:
    """The `Idempotency-Key` of raw (lower-case) request headers; several are joined as
    HTTP joins repeated headers, with ", ", which no valid key contains."""
    values = [value for name, value in headers if name == _HEADER_NAME]
    if not values:
        return None
    return values[0] if len(values) == 1 else b", ".join(values)


def parse_key(value: bytes | None) -> str | None:
    """The key, or None when there is none; 400 `invalid_argument` unless it is 1-255
    visible ASCII characters (0x21-0x7E)."""
    if value is None:
        return None
    if _KEY.fullmatch(value) is None:
        raise invalid_argument(HEADER, f"{HEADER} must be 1-255 visible ASCII characters")
    return value.decode("ascii")


def fingerprint(drafts: Sequence[Draft]) -> str:
    """What a request asked to publish, as 32 hex characters: the same for the same
    messages in the same order (lengths framed, so no two lists collide by shifting)."""
    digest = hashlib.sha256()
    for channel, data_json in drafts:
        name = channel.encode()
        digest.update(len(name).to_bytes(2, "big") + name)
        digest.update(len(data_json).to_bytes(8, "big") + data_json)
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def split_ids(blob: bytes) -> list[str]:
    """Ids recorded with a key, joined (each is 36 characters)."""
    text = blob.decode()
    return [text[i : i + _ID_LENGTH] for i in range(0, len(text), _ID_LENGTH)]


def answer_for(asked: str, recorded: str, ids: list[str]) -> Repeat | BloomrError:
    """What a request with fingerprint `asked` gets when its key is recorded with the
    fingerprint `recorded` and `ids`."""
    if asked == recorded:
        return Repeat(ids)
    return BloomrError(
        "idempotency_key_reused",
        f"this {HEADER} was used with another request body on this stream",
    )
