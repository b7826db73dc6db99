"""`bloomr.emit(channel, data)`: how a script bloomr runs sends a message to any channel.

Standard library only, so it works in any Python script bloomr runs. Scripts in other
languages (or another Python without bloomr installed) do the same by hand: write one
JSON line `{"channel": "...", "data": <any JSON>}` per message to the file descriptor
whose number is in the `BLOOMR_EMIT_FD` environment variable."""

from __future__ import annotations

import json
import os
import threading
from typing import Any

ENV_VAR = "BLOOMR_EMIT_FD"

# One line must reach the pipe in one piece; os.write may write less than asked for
# lines over the pipe's buffer, so threads take turns finishing theirs.
_write_lock = threading.Lock()


def emit(channel: str, data: Any) -> None:
    """Send `data` (any JSON-serialisable value) to `channel` of this script's stream.

    `""` is the standard output channel; any other name must match
    `[A-Za-z0-9_.:-]{1,64}` (bloomr reports a bad one on the `errors` channel).
    Raises RuntimeError outside a script run by bloomr, TypeError/ValueError for data
    that JSON cannot represent (including NaN and infinities)."""
    if not isinstance(channel, str):
        raise TypeError(f"channel must be a str, not {type(channel).__name__}")
    line = json.dumps(
        {"channel": channel, "data": data},
        ensure_ascii=False,
        allow_nan=False,  # NaN is not JSON: fail here, not later on the server
        separators=(",", ":"),
    )
    _write_line(_emit_fd(), (line + "\n").encode("utf-8"))


def _emit_fd() -> int:
    value = os.environ.get(ENV_VAR)
    if not value:
        raise RuntimeError(
            f"bloomr.emit() works only in a script run by bloomr: {ENV_VAR} is not set"
        )
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"{ENV_VAR} is not a file descriptor number: {value!r}") from None


def _write_line(fd: int, payload: bytes) -> None:
    view = memoryview(payload)
    with _write_lock:
        while view:
            view = view[os.write(fd, view) :]
