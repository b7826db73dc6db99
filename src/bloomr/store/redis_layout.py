"""Names and encodings of the cluster history in Redis, shared by the history
(`redis_history.py`, whose docstring lays the keys out) and the bus (`broker/redis.py`):
key and channel names, the ids' seqs, and the rows the append script stores and
publishes."""

from __future__ import annotations

import os
import struct

from ..model import Message, uuid7_ms

ID_LEN = 36


def key_base(prefix: str, stream_id: str) -> str:
    return f"{prefix}:{{{stream_id}}}:"


def bus_channel(prefix: str, stream_id: str) -> str:
    return key_base(prefix, stream_id) + "bus"


def bus_pattern(prefix: str) -> str:
    """The glob matching every stream's bus channel (the prefix's own glob characters
    escaped)."""
    escaped = "".join("\\" + c if c in "*?[]\\" else c for c in prefix)
    return f"{escaped}:{{*}}:bus"


def stream_of_channel(prefix: str, channel: bytes) -> str:
    """The stream id in a bus channel name made by `bus_channel`."""
    return channel[len(prefix) + 2 : -len("}:bus")].decode()


def seq_of_id(message_id: str) -> int | None:
    """The seq a bloomr Redis id carries (see redis_history.py); None for a string
    that cannot be one: no id index is needed to find a message by its id."""
    if uuid7_ms(message_id) is None:
        return None
    try:
        counter = int(message_id[15:18] + message_id[19:23] + message_id[24:28], 16)
    except ValueError:
        return None
    # the 12 bits after the version, then the 30 bits after the variant
    return (counter >> 32) << 30 | (counter & 0x3FFFFFFF)


# A row (a channel-set member) is this header, the id, then the data JSON: the numbers
# in fixed width are the cheapest for the client to read back.
HEADER = struct.Struct(">IQQ")  # data length, seq, ts_ms
ROW_START = HEADER.size + ID_LEN


def read_rows(
    stream_id: str, channel: str, blob: bytes, at: int = 0, end: int = -1
) -> list[Message]:
    """The messages of consecutive rows of one channel, from `at` to `end`."""
    messages: list[Message] = []
    header, i, end = HEADER, at, len(blob) if end < 0 else end
    while i < end:
        size, seq, ts_ms = header.unpack_from(blob, i)
        i += ROW_START
        message_id = blob[i - ID_LEN : i].decode()
        messages.append(Message(message_id, stream_id, channel, ts_ms, seq, blob[i : i + size]))
        i += size
    return messages


EPOCH_LEN = 16


def new_epoch() -> str:
    return os.urandom(EPOCH_LEN // 2).hex()


def published_epoch(payload: bytes) -> str:
    """The epoch of the history one PUBLISH of the append script was stored in."""
    return payload[:EPOCH_LEN].decode()


def decode_published(stream_id: str, payload: bytes) -> list[Message]:
    """The messages of one PUBLISH of the append script: the epoch, then per message a
    length byte, the channel, then its row."""
    messages: list[Message] = []
    i, end = EPOCH_LEN, len(payload)
    while i < end:
        size = payload[i]
        channel = payload[i + 1 : i + 1 + size].decode()
        i += 1 + size
        row_end = i + ROW_START + HEADER.unpack_from(payload, i)[0]
        messages += read_rows(stream_id, channel, payload, i, row_end)
        i = row_end
    return messages
