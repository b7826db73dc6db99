"""The nouns of bloomr: streams, tokens, messages and their ids. Plain data, no I/O."""

from __future__ import annotations

import hashlib
import random
import re
import secrets
import string
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import count, repeat
from operator import attrgetter
from typing import Any, Literal, NamedTuple

import orjson

Scope = Literal["subscribe", "publish"]
RestartPolicy = Literal["never", "on-failure", "always"]
SCOPES: tuple[Scope, ...] = ("subscribe", "publish")
RESTART_POLICIES: tuple[RestartPolicy, ...] = ("never", "on-failure", "always")

DEFAULT_CHANNEL = ""
ERRORS_CHANNEL = "errors"
_CHANNEL_RE = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_ALPHABET = string.ascii_letters + string.digits
STREAM_ID_RE = re.compile(r"[A-Za-z0-9]{10}")

DEFAULT_MAX_AGE = "7d"
DEFAULT_MAX_MESSAGES = 1_000_000


def json_bytes(value: Any) -> bytes:
    """orjson.dumps, copied into a right-sized bytes. orjson >= 3.12 returns bytes that
    keep a buffer of at least 4 KiB whatever their length (home-assistant/core PR
    181240): every message held in a queue would cost that much. The join is the
    cheapest copy there is."""
    return b"".join((orjson.dumps(value), b""))


def is_valid_channel(name: str) -> bool:
    """`""` is standard output, `errors` is reserved, anything else must match the pattern."""
    return name == DEFAULT_CHANNEL or _CHANNEL_RE.fullmatch(name) is not None


# a token's `channels` item: a channel name, or a prefix ending in `*` (`build.*`; `*`
# alone is every channel)
_CHANNEL_PATTERN_RE = re.compile(r"[A-Za-z0-9_.:-]{0,64}\*?")


def is_valid_channel_pattern(pattern: str) -> bool:
    return _CHANNEL_PATTERN_RE.fullmatch(pattern) is not None


def channel_allowed(patterns: Sequence[str], channel: str) -> bool:
    """Whether a token's `channels` cover `channel`: a name matches itself, a trailing
    `*` matches any channel that starts with what precedes it."""
    for pattern in patterns:
        if pattern.endswith("*"):
            if channel.startswith(pattern[:-1]):
                return True
        elif pattern == channel:
            return True
    return False


def new_stream_id() -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(10))


def new_token_id() -> str:
    return "tok_" + "".join(secrets.choice(_ALPHABET) for _ in range(16))


def new_token_secret() -> str:
    return "bt_" + secrets.token_urlsafe(32)


def hash_secret(secret: str) -> str:
    """Token secrets are 256 random bits, so a fast hash is enough to make a stolen
    database useless; a slow password hash would only slow every connection."""
    return hashlib.sha256(secret.encode()).hexdigest()


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def iso_from_ms(ms: int) -> str:
    """ISO 8601 UTC with milliseconds and `Z`, as every message timestamp is written."""
    dt = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def iso_now() -> str:
    return iso_from_ms(now_ms())


class _UUIDv7:
    """UUIDv7 ids that increase strictly within this process, even within one millisecond.

    The 12-bit `rand_a` field and the 62-bit `rand_b` field together hold a 74-bit
    counter, seeded randomly each millisecond and counted up by one per id (RFC 9562
    §6.2, method 2), so ids sort in creation order. The embedded millisecond is the
    message's timestamp, which lets the store find an id through its time index."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def next(self) -> tuple[str, int]:
        ids, ms = self.many(1)
        return ids[0], ms

    def many(self, n: int) -> tuple[list[str], int]:
        """`n` consecutive ids sharing one millisecond, and that millisecond."""
        with self._lock:
            ms = now_ms()
            if ms > self._last_ms:
                self._last_ms = ms
                self._counter = random.getrandbits(72)  # leaves room to count up
            elif self._counter + n >= 1 << 74:
                self._last_ms += 1
                self._counter = 0
            ms, first = self._last_ms, self._counter + 1
            self._counter += n
        return _format_ids(ms, first, n), ms


_LOW_48 = (1 << 48) - 1
_PREFIX = 24  # the id up to its last group: the last 48 bits of the counter


def _format_ids(ms: int, first: int, n: int) -> list[str]:
    """The ids of counters first .. first+n-1. Consecutive counters differ only in their
    low 48 bits (the last group) but once in 2**48, so the rest is formatted once per
    batch and each id costs one `%` of an int: ids are made for every line a script
    prints, and a per-field format took most of the time of storing a line."""
    ids: list[str] = []
    stop = first + n
    time_part = f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7"
    while first < stop:
        high = first >> 48  # rand_a, then the top 14 bits of rand_b
        end = min(stop, (high + 1) << 48)
        prefix = f"{time_part}{high >> 14:03x}-{0x8000 | high & 0x3FFF:04x}-"
        ids += _segment_ids(prefix, first & _LOW_48, end - first)
        first = end
    return ids


def _segment_ids(prefix: str, low: int, n: int) -> list[str]:
    return list(map((prefix + "%012x").__mod__, range(low, low + n)))


def same_id_segment(a: str, b: str) -> bool:
    """Whether two ids differ only in their last 48 bits: then the ids between them are
    known from either, which lets the store keep one id for a whole run of messages."""
    return a[:_PREFIX] == b[:_PREFIX]


def ids_following(first_id: str, start: int, stop: int) -> list[str]:
    """The ids `start` .. `stop - 1` places after `first_id` in its segment."""
    low = int(first_id[_PREFIX:], 16)
    return _segment_ids(first_id[:_PREFIX], low + start, stop - start)


def id_at(first_id: str, place: int) -> str:
    """The id `place` places after `first_id` in its segment."""
    return ids_following(first_id, place, place + 1)[0]


def id_place(first_id: str, message_id: str) -> int | None:
    """How many places after `first_id` `message_id` comes in its segment (None: it is
    not in that segment, or is not written as bloomr writes ids)."""
    if not same_id_segment(first_id, message_id):
        return None
    try:
        place = int(message_id[_PREFIX:], 16) - int(first_id[_PREFIX:], 16)
    except ValueError:
        return None
    if place < 0 or id_at(first_id, place) != message_id:
        return None
    return place


def uuid7_ms(message_id: str) -> int | None:
    """The millisecond a UUIDv7 id carries (None for an id of another version)."""
    if len(message_id) != 36 or message_id[14] != "7":
        return None
    try:
        return int(message_id[:8] + message_id[9:13], 16)
    except ValueError:
        return None


_ids = _UUIDv7()
new_message_id = _ids.next
new_message_ids = _ids.many


@dataclass(slots=True)
class Retention:
    max_age: str = DEFAULT_MAX_AGE
    max_messages: int = DEFAULT_MAX_MESSAGES

    def to_json(self) -> dict[str, Any]:
        return {"max_age": self.max_age, "max_messages": self.max_messages}


@dataclass(slots=True)
class Stream:
    id: str
    name: str
    store_history: bool = True
    retention: Retention = field(default_factory=Retention)
    command: list[str] | None = None
    cwd: str | None = None
    env: dict[str, str] | None = None
    restart: RestartPolicy = "never"
    enabled: bool = False  # its script should run (and is started again with bloomr)
    created_at: str = field(default_factory=iso_now)
    updated_at: str = field(default_factory=iso_now)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "store_history": self.store_history,
            "retention": self.retention.to_json(),
            "command": self.command,
            "cwd": self.cwd,
            "env": self.env,
            "restart": self.restart,
            "enabled": self.enabled,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


@dataclass(slots=True)
class Token:
    id: str
    name: str
    secret_hash: str
    streams: list[str]
    scopes: list[Scope]
    expires_at: str | None = None
    created_at: str = field(default_factory=iso_now)
    channels: list[str] | None = None  # None: every channel (see `channel_allowed`)

    def allows_stream(self, stream_id: str) -> bool:
        return "*" in self.streams or stream_id in self.streams

    def allows_channel(self, channel: str) -> bool:
        return self.channels is None or channel_allowed(self.channels, channel)

    def expired(self, at: datetime | None = None) -> bool:
        if self.expires_at is None:
            return False
        moment = at or datetime.now(UTC)
        return datetime.fromisoformat(self.expires_at) <= moment

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "streams": self.streams,
            "scopes": self.scopes,
            "expires_at": self.expires_at,
            "created_at": self.created_at,
            "channels": self.channels,
        }


class Draft(NamedTuple):
    """A message on its way in: what a publisher gave, before the store orders it. A
    tuple, so a script's lines become drafts without a Python call each."""

    channel: str
    data_json: bytes  # the JSON of `data`, encoded once at the edge


class _MessageFields(NamedTuple):
    id: str
    stream: str
    channel: str
    ts_ms: int
    seq: int
    data_json: bytes


class Message(_MessageFields):
    """A stored (or at least ordered) message. `seq` is its place in the stream's total
    order; it never leaves the server, clients see the time-ordered `id`.

    A tuple, so that `new_messages` makes a batch of them without a Python call per
    message, and its fields are the first columns of the SQLite store's rows. Having no
    `__slots__`, each may keep a cache of its encodings, in a `__dict__` made only when
    one is first cached."""

    _cache: dict[object, bytes] | None = None

    @property
    def timestamp(self) -> str:
        return iso_from_ms(self.ts_ms)

    @property
    def data(self) -> Any:
        return orjson.loads(self.data_json)

    @property
    def size(self) -> int:
        return len(self.data_json) + 128

    def envelope_json(self, replayed: bool | None) -> bytes:
        """The one envelope builder, cached per message: `replayed` is None on HTTP."""
        return self.cached(replayed, lambda m: build_envelope(m, replayed))

    def cached(self, key: object, encode: Callable[[Message], bytes]) -> bytes:
        """An encoding of this message, built once however many subscribers send it."""
        cache = self._cache
        if cache is None:
            cache = self._cache = {}
        value = cache.get(key)
        if value is None:
            value = cache[key] = encode(self)
        return value


_new_tuple: Callable[..., Any] = tuple.__new__


def new_messages(stream_id: str, drafts: Sequence[Draft], first_seq: int) -> list[Message]:
    """Order `drafts` as the stream's seqs first_seq, first_seq + 1, ... with fresh ids
    of one millisecond. Built by maps over C callables, with no Python call per message:
    this runs for every line a script prints."""
    ids, ts_ms = new_message_ids(len(drafts))
    rows = zip(
        ids,
        repeat(stream_id),
        map(channel_of, drafts),
        repeat(ts_ms),
        count(first_seq),
        map(data_of, drafts),
    )
    return messages_from_rows(rows)


def drafts_of(channel: str, data_jsons: Iterable[bytes]) -> list[Draft]:
    """Drafts of one channel, without a Python call per draft."""
    return list(map(_new_tuple, repeat(Draft), zip(repeat(channel), data_jsons)))


def messages_from_rows(rows: Iterable[Iterable[Any]]) -> list[Message]:
    """Messages from rows of their fields in order, without a Python call per row."""
    return list(map(_new_tuple, repeat(Message), rows))


# of a Draft or a Message, for maps over many
channel_of = attrgetter("channel")
data_of = attrgetter("data_json")


def build_envelope(message: Message, replayed: bool | None) -> bytes:
    head = orjson.dumps(
        {
            "id": message.id,
            "stream": message.stream,
            "channel": message.channel,
            "timestamp": message.timestamp,
        }
    )
    tail = b"" if replayed is None else (b',"replayed":true' if replayed else b',"replayed":false')
    return head[:-1] + b',"data":' + message.data_json + tail + b"}"


def stream_from_json(doc: dict[str, Any]) -> Stream:
    retention = doc.get("retention") or {}
    return Stream(
        id=doc["id"],
        name=doc.get("name", ""),
        store_history=bool(doc.get("store_history", True)),
        retention=Retention(
            max_age=retention.get("max_age", DEFAULT_MAX_AGE),
            max_messages=int(retention.get("max_messages", DEFAULT_MAX_MESSAGES)),
        ),
        command=doc.get("command"),
        cwd=doc.get("cwd"),
        env=doc.get("env"),
        restart=doc.get("restart", "never"),
        enabled=bool(doc.get("enabled", False)),
        created_at=doc.get("created_at") or iso_now(),
        updated_at=doc.get("updated_at") or iso_now(),
    )


def token_to_doc(token: Token) -> dict[str, Any]:
    """A token as stored: its public fields plus the secret's hash."""
    return {**token.to_json(), "secret_hash": token.secret_hash}


def token_from_doc(doc: dict[str, Any]) -> Token:
    return Token(
        id=doc["id"],
        name=doc.get("name", ""),
        secret_hash=doc["secret_hash"],
        streams=list(doc["streams"]),
        scopes=list(doc["scopes"]),
        expires_at=doc.get("expires_at"),
        created_at=doc.get("created_at") or iso_now(),
        channels=None if doc.get("channels") is None else list(doc["channels"]),
    )
