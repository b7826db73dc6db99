"""The one parser for subscription arguments: replay / replayLimit / channel /
includeMetadata, used by Socket.IO, SSE and HTTP polling alike. Pure: no I/O.

Every function either returns a value or raises `BloomrError("invalid_argument")` with
the offending `field`; no input makes them raise anything else."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .errors import BloomrError, invalid_argument
from .model import DEFAULT_CHANNEL, is_valid_channel

MAX_REPLAY = 10_000

_UNIT_MS = {
    "s": 1_000, "sec": 1_000, "secs": 1_000, "second": 1_000, "seconds": 1_000,
    "m": 60_000, "min": 60_000, "mins": 60_000, "minute": 60_000, "minutes": 60_000,
    "h": 3_600_000, "hour": 3_600_000, "hours": 3_600_000,
    "d": 86_400_000, "day": 86_400_000, "days": 86_400_000,
}  # fmt: skip
_AGE_RE = re.compile(r"([0-9]+) ?([A-Za-z]+)")
_UUID_RE = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)
_ISO_START_RE = re.compile(r"[0-9]{4}-?[0-9]{2}-?[0-9]{2}")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
# Longer numbers are absurd as ages or limits, and int() refuses past 4300 digits.
_MAX_DIGITS = 30
# Any larger number is read as this one: it is past every cap, and every backend
# (64-bit integers, Lua's doubles) and every JSON client can hold it exactly.
MAX_NUMBER = 2**53 - 1
_OLDEST_MS = -(2**62)  # an age older than time itself means "all history" (fits int64)
_TRUE = frozenset({"true", "1"})
_FALSE = frozenset({"false", "0"})


@dataclass(frozen=True, slots=True)
class Since:
    """Messages at or after this instant (from an ISO date or an age)."""

    ts_ms: int


@dataclass(frozen=True, slots=True)
class AfterId:
    """Messages strictly after this message id."""

    id: str


@dataclass(frozen=True, slots=True)
class AfterSeq:
    """Messages after this place in the stream's order, in the history epoch it was
    read in (a resume from where a connection went live; never parsed from a client)."""

    seq: int
    epoch: str


ReplayStart = Since | AfterId | AfterSeq


@dataclass(frozen=True, slots=True)
class ReplayRequest:
    """What a client asked to be replayed. `limit` is already capped at MAX_REPLAY;
    `requested` is the limit the client gave, if any, before the cap."""

    start: ReplayStart | None
    limit: int
    requested: int | None

    @property
    def capped(self) -> bool:
        return self.requested is not None and self.requested > MAX_REPLAY


def parse_age_ms(value: str) -> int | None:
    """`"2h"`, `"2 hours"`, `"15MIN"` -> milliseconds; None when not an age."""
    m = _AGE_RE.fullmatch(value.strip())
    if m is None or len(m.group(1)) > _MAX_DIGITS:
        return None
    unit = _UNIT_MS.get(m.group(2).lower())
    return None if unit is None else int(m.group(1)) * unit


def parse_datetime_ms(value: str) -> int | None:
    """An ISO 8601 date-time (no zone means UTC) -> epoch milliseconds; None otherwise."""
    text = value.strip()
    if _ISO_START_RE.match(text) is None or not text.isascii():
        return None
    try:
        dt = datetime.fromisoformat(text)
    except (ValueError, OverflowError):
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    try:
        # integer arithmetic: float timestamps lose the millisecond for some dates
        return (dt - _EPOCH) // _MS
    except (OverflowError, ValueError):
        return None


def parse_message_id(value: str) -> str | None:
    text = value.strip()
    return text.lower() if _UUID_RE.fullmatch(text) else None


def parse_replay(value: str, now_ms: int) -> ReplayStart | None:
    """Parse `replay`: an ISO date-time, an age, or a message id. Empty means absent."""
    if value.strip() == "":
        return None
    message_id = parse_message_id(value)
    if message_id is not None:
        return AfterId(message_id)
    age = parse_age_ms(value)
    if age is not None:
        return Since(max(now_ms - age, _OLDEST_MS))
    ts = parse_datetime_ms(value)
    if ts is not None:
        return Since(ts)
    raise invalid_argument(
        "replay",
        "replay must be an ISO 8601 date-time, an age such as '2h' or '30 min', or a message id",
    )


def parse_positive_int(value: Any, field: str) -> int | None:
    """A positive integer from a query string or a JSON value; empty/None means absent."""
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        raise invalid_argument(field, f"{field} must be a positive integer")
    if isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        digits = value.strip().lstrip("0") or "0"
        number = int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS
    else:
        raise invalid_argument(field, f"{field} must be a positive integer")
    if number <= 0:
        raise invalid_argument(field, f"{field} must be a positive integer")
    return min(number, MAX_NUMBER)


def parse_bool(value: Any, field: str) -> bool:
    if value is None:
        return False
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return value == 1
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE:
            return True
        if text in _FALSE or text == "":
            return False
    raise invalid_argument(field, f"{field} must be true, false, 1 or 0")


def parse_channel(value: Any) -> str:
    if value is None:
        return DEFAULT_CHANNEL
    if not isinstance(value, str) or not is_valid_channel(value):
        raise invalid_argument(
            "channel", "channel must be '', 'errors' or a name matching [A-Za-z0-9_.:-]{1,64}"
        )
    return value


def parse_replay_request(replay: Any, replay_limit: Any, now_ms: int) -> ReplayRequest | None:
    """Combine `replay` and `replayLimit`: None when neither asks for a replay."""
    if replay is not None and not isinstance(replay, str):
        raise invalid_argument("replay", "replay must be a string")
    start = parse_replay(replay, now_ms) if replay is not None else None
    requested = parse_positive_int(replay_limit, "replayLimit")
    if start is None and requested is None:
        return None
    limit = MAX_REPLAY if requested is None else min(requested, MAX_REPLAY)
    return ReplayRequest(start=start, limit=limit, requested=requested)


def _required_str(args: Mapping[str, Any], key: str) -> str:
    value = args.get(key)
    if not isinstance(value, str) or value == "":
        raise BloomrError("unauthorized", f"missing or invalid {key}")
    return value


def merge_handshake(query: Mapping[str, Any], auth: Any) -> dict[str, Any]:
    """The handshake keys, from the query string with the `auth` object winning."""
    merged = dict(query)
    if isinstance(auth, Mapping):
        merged.update({k: v for k, v in auth.items() if isinstance(k, str)})
    return merged


def parse_credentials(args: Mapping[str, Any]) -> tuple[str, str]:
    """`(stream, token)`; a missing one is `unauthorized`, like a wrong one, so the
    answer never tells which streams exist."""
    return _required_str(args, "stream"), _required_str(args, "token")


SubscribeOptions = tuple[str, ReplayRequest | None, bool]


def parse_subscribe_options(args: Mapping[str, Any], now_ms: int) -> SubscribeOptions:
    """`(channel, replay request or None for live only, includeMetadata)`."""
    return (
        parse_channel(args.get("channel")),
        parse_replay_request(args.get("replay"), args.get("replayLimit"), now_ms),
        parse_bool(args.get("includeMetadata"), "includeMetadata"),
    )
