"""The messages the runner itself writes on the `errors` channel. Pure: no I/O."""

from __future__ import annotations

from typing import Any

from bloomr.model import ERRORS_CHANNEL, Draft, json_bytes

from .policy import ExitInfo

LINE_PREVIEW = 1024  # bytes of an offending emit line quoted back in emit_error


def _event(payload: dict[str, Any]) -> Draft:
    return Draft(ERRORS_CHANNEL, json_bytes(payload))


def exit_event(ended: ExitInfo) -> Draft:
    return _event({"event": "exit", "code": ended.code, "signal": ended.signal})


def spawn_error_event(message: str) -> Draft:
    return _event({"event": "spawn_error", "message": message})


def emit_error_event(message: str, line: bytes) -> Draft:
    preview = line[: utf8_cut(line, LINE_PREVIEW)].decode("utf-8", "replace")
    return _event({"event": "emit_error", "message": message, "line": preview})


def utf8_cut(data: bytes, limit: int) -> int:
    """Where to cut `data` to keep at most `limit` bytes without splitting a UTF-8
    character. It looks back at most 3 bytes (the longest run of continuation bytes),
    so bytes that are not UTF-8 anyway are simply cut at `limit`."""
    if len(data) <= limit:
        return len(data)
    cut = limit
    while cut > limit - 3 and cut > 1 and data[cut] & 0xC0 == 0x80:
        cut -= 1
    return limit if data[cut] & 0xC0 == 0x80 else cut
