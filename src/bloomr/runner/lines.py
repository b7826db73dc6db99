"""Bytes read from a script's pipes -> Drafts. Pure: no I/O.

Each decoder holds at most one unfinished line, of bounded size, so a script that
prints without newlines cannot make bloomr's memory grow."""

from __future__ import annotations

import re
from typing import Protocol

import orjson

from bloomr.model import Draft, drafts_of, is_valid_channel, json_bytes

from .events import emit_error_event, utf8_cut

MAX_LINE = 64 * 1024  # longer stdout/stderr lines become several messages
MAX_EMIT_LINE = 1024 * 1024  # a JSON message cannot be split: longer ones are refused
# What JSON escapes inside a string (control characters, `"`, `\`) and `\r`
_NOT_PLAIN = re.compile(rb'[\x00-\x09\x0b-\x1f"\\]')


class Decoder(Protocol):
    def feed(self, chunk: bytes) -> list[Draft]:
        """The messages completed by `chunk`, in order."""
        ...

    def close(self) -> list[Draft]:
        """At end of file: the messages of an unfinished last line."""
        ...


def _is_utf8(raw: bytes) -> bool:
    if raw.isascii():
        return True
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _text(channel: str, raw: bytes) -> Draft:
    return Draft(channel, json_bytes(raw.decode("utf-8", "replace")))


class OutputLines:
    """stdout or stderr: one message per line on `channel`, each line's text without its
    `\\n` or `\\r\\n`. Lines over `max_line` bytes are split, at a UTF-8 character
    boundary when the bytes are UTF-8."""

    def __init__(self, channel: str, max_line: int = MAX_LINE) -> None:
        self._channel = channel
        self._max = max_line
        self._partial = b""
        # The partial line is the rest of a line already sent in pieces: if the newline
        # comes right after a piece, there is no further piece to send.
        self._continued = False

    def feed(self, chunk: bytes) -> list[Draft]:
        data = self._partial + chunk
        end = data.rfind(b"\n")
        body, self._partial = data[: max(end, 0)], data[end + 1 :]
        out = [] if end < 0 else self._plain_lines(body)
        if out is None:
            out = self._lines(body.split(b"\n"))
        if len(self._partial) > self._max:
            self._partial = self._split(self._partial, out, keep_rest=True)
            self._continued = True
        return out

    def _plain_lines(self, body: bytes) -> list[Draft] | None:
        """The lines of `body` when none needs escaping, splitting or a `\r` removed
        (None otherwise): then each line's JSON is the line in quotes, and a flood of
        them is turned into messages by a few calls over the whole read."""
        if self._continued or _NOT_PLAIN.search(body) is not None or not _is_utf8(body):
            return None
        quoted = (b'"' + body.replace(b"\n", b'"\n"') + b'"').split(b"\n")
        if max(map(len, quoted)) > self._max + 2:
            return None
        return drafts_of(self._channel, quoted)

    def _lines(self, lines: list[bytes]) -> list[Draft]:
        out: list[Draft] = []
        if self._continued:
            self._continued = False
            if lines[0] in (b"", b"\r"):
                del lines[0]
        for line in lines:
            if line[-1:] == b"\r":
                line = line[:-1]
            if len(line) <= self._max:
                out.append(_text(self._channel, line))
            else:
                self._split(line, out)
        return out

    def close(self) -> list[Draft]:
        rest, self._partial = self._partial, b""
        return [_text(self._channel, rest)] if rest else []

    def _split(self, line: bytes, out: list[Draft], keep_rest: bool = False) -> bytes:
        """Append `line` in pieces of at most max_line bytes; with keep_rest, hold back
        the last piece (it may still grow) and return it."""
        while len(line) > self._max:
            cut = utf8_cut(line, self._max)
            out.append(_text(self._channel, line[:cut]))
            line = line[cut:]
        if keep_rest:
            return line
        out.append(_text(self._channel, line))
        return b""


class EmitLines:
    """The emit fd: one JSON line `{"channel": ..., "data": ...}` per message. A bad line
    becomes an `emit_error` on `errors` and the script goes on; blank lines are ignored."""

    def __init__(self, max_line: int = MAX_EMIT_LINE) -> None:
        self._max = max_line
        self._buffer = bytearray()
        self._skipping = False  # inside a line already refused as too long

    def feed(self, chunk: bytes) -> list[Draft]:
        self._buffer += chunk
        end = self._buffer.rfind(b"\n")
        out: list[Draft] = []
        if end >= 0:
            lines = bytes(self._buffer[:end]).split(b"\n")
            del self._buffer[: end + 1]
            if self._skipping:
                self._skipping = False
                del lines[0]  # the tail of the refused line
            out.extend(self._parse(line) for line in lines if line.strip())
        if len(self._buffer) > self._max and not self._skipping:
            out.append(self._too_long(bytes(self._buffer)))
            self._skipping = True
        if self._skipping:
            self._buffer.clear()
        return out

    def close(self) -> list[Draft]:
        rest = bytes(self._buffer)
        self._buffer.clear()
        return [self._parse(rest)] if rest.strip() and not self._skipping else []

    def _parse(self, line: bytes) -> Draft:
        if len(line) > self._max:
            return self._too_long(line)
        return parse_emit_line(line)

    def _too_long(self, line: bytes) -> Draft:
        return emit_error_event(f"line longer than {self._max} bytes, ignored", line)


def parse_emit_line(line: bytes) -> Draft:
    """One emit line -> the message it asks for, or an emit_error saying what is wrong."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return emit_error_event(f"not valid JSON: {exc}", line)
    if not isinstance(obj, dict):
        shape = '{"channel": ..., "data": ...}'
        return emit_error_event(f"expected a JSON object {shape}, got {_kind(obj)}", line)
    if "channel" not in obj:
        return emit_error_event('missing "channel"', line)
    channel = obj["channel"]
    if not isinstance(channel, str) or not is_valid_channel(channel):
        why = 'must be "" or match [A-Za-z0-9_.:-]{1,64}'
        return emit_error_event(f"invalid channel {orjson.dumps(channel).decode()}: {why}", line)
    if "data" not in obj:
        return emit_error_event('missing "data"', line)
    return Draft(channel, json_bytes(obj["data"]))


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "a number", float: "a number", str: "a string"}.get(
        type(value), "an array"
    )
