"""How the SQLite store keeps messages: one row of `messages` holds a run of them.

A run is n >= 1 messages of one batch and one channel with consecutive seqs (seq ..
seq + n - 1), one millisecond, and ids that follow the row's id in its last 48 bits
(`model.ids_following`). The row keeps the first id and seq, the data JSONs end to end,
and where each ends. A script's batch of a thousand lines is then one row: storing a
message costs SQLite a row of six columns and two index entries, which was most of
the time it took to capture a flood of output. A message alone is a row of its own as
before (n = 1, no ends), which is also how rows written by earlier versions read.

Pure functions: rows in, messages out, and back."""

from __future__ import annotations

import sys
from array import array
from collections.abc import Sequence
from itertools import accumulate, count, repeat
from typing import Any

from ..model import (
    Message,
    channel_of,
    data_of,
    id_at,
    ids_following,
    messages_from_rows,
    same_id_segment,
)

# A run's data is read whole to get any one message of it: this bounds what is read
# beside a message, and how much of a batch of big messages one row holds.
RUN_BYTES = 256 * 1024
# Message's fields in order (a run of one is its message and 1, None), then the run's
RUN_COLUMNS = "id, stream_id, channel, ts_ms, seq, data, n, ends"

Run = tuple[Any, ...]  # the RUN_COLUMNS of a row
_SWAP = sys.byteorder != "little"  # ends are stored little-endian, whatever the machine


def runs_of(messages: Sequence[Message]) -> list[Run]:
    """The rows that keep `messages`, one batch's messages in seq order."""
    if not messages:
        return []
    first, last = messages[0], messages[-1]
    if (
        len(set(map(channel_of, messages))) == 1
        and same_id_segment(first.id, last.id)
        and sum(map(len, map(data_of, messages))) <= RUN_BYTES
    ):
        return [_run(messages)]  # the common case: a single run, no walk through the batch
    runs: list[Run] = []
    start, size = 0, 0
    for i, message in enumerate(messages):
        head = messages[start]
        if i > start and (
            message.channel != head.channel
            or not same_id_segment(head.id, message.id)
            or size + len(message.data_json) > RUN_BYTES
        ):
            runs.append(_run(messages[start:i]))
            start, size = i, 0
        size += len(message.data_json)
    runs.append(_run(messages[start:]))
    return runs


def _run(messages: Sequence[Message]) -> Run:
    first = messages[0]
    if len(messages) == 1:
        return (*first, 1, None)
    datas = list(map(data_of, messages))
    return (*first[:5], b"".join(datas), len(messages), _pack(accumulate(map(len, datas))))


def run_messages(run: Run, start: int = 0, stop: int | None = None) -> list[Message]:
    """The messages at places start .. stop - 1 of a run (all of them by default)."""
    message_id, stream, channel, ts_ms, seq, data, n, ends = run
    start, stop = max(start, 0), n if stop is None else min(stop, n)
    if start >= stop:
        return []
    if n == 1:
        return [Message(message_id, stream, channel, ts_ms, seq, data)]
    bounds = _unpack(ends)
    starts = bounds[start - 1 : stop - 1] if start else [0, *bounds[: stop - 1]]
    pieces = map(data.__getitem__, map(slice, starts, bounds[start:stop]))
    rows = zip(
        ids_following(message_id, start, stop),
        repeat(stream),
        repeat(channel),
        repeat(ts_ms),
        count(seq + start),
        pieces,
    )
    return messages_from_rows(rows)


def without_first(run: Run, drop: int) -> Run:
    """The run less its first `drop` messages (0 < drop < n): what trimming by count
    leaves of the run it cuts through."""
    message_id, stream, channel, ts_ms, seq, data, n, ends = run
    bounds = _unpack(ends)
    cut = bounds[drop - 1]
    first_id = id_at(message_id, drop)
    rest = data[cut:]
    if n - drop == 1:
        return (first_id, stream, channel, ts_ms, seq + drop, rest, 1, None)
    return (
        first_id,
        stream,
        channel,
        ts_ms,
        seq + drop,
        rest,
        n - drop,
        _pack(end - cut for end in bounds[drop:]),
    )


def _pack(ends: Any) -> bytes:
    packed = array("I", ends)
    if _SWAP:
        packed.byteswap()
    return packed.tobytes()


def _unpack(ends: bytes) -> list[int]:
    unpacked = array("I")
    unpacked.frombytes(ends)
    if _SWAP:
        unpacked.byteswap()
    return unpacked.tolist()
