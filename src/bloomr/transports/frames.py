"""Wire encodings of the Socket.IO transport, pure functions: websocket frames (RFC 6455,
server side: never masked, so one frame's bytes can go to every client) and the
Socket.IO v5 packets bloomr sends inside Engine.IO v4 message packets."""

from __future__ import annotations

from typing import Any

import orjson

from ..model import Message

_TEXT_FIN = 0x81


def ws_frame(payload: bytes) -> bytes:
    """One unfragmented text frame."""
    n = len(payload)
    if n < 126:
        return bytes((_TEXT_FIN, n)) + payload
    if n < 1 << 16:
        return bytes((_TEXT_FIN, 126)) + n.to_bytes(2, "big") + payload
    return bytes((_TEXT_FIN, 127)) + n.to_bytes(8, "big") + payload


def event_packet(event: str, payload: Any) -> bytes:
    """Engine.IO message (4) carrying a Socket.IO EVENT (2) on the default namespace."""
    return b"42" + orjson.dumps([event, payload])


def message_packet(
    message: Message, replayed: bool, include_metadata: bool, offsets: bool = False
) -> bytes:
    """`42["message",<data or envelope>]`, built from the message's stored JSON; with
    `offsets`, the message id as a last argument (`42["message",<...>,"<id>"]`), which
    socket.io-client keeps as the offset it resumes from."""
    body = message.envelope_json(replayed) if include_metadata else message.data_json
    if offsets:
        return b'42["message",' + body + b',"' + message.id.encode() + b'"]'
    return b'42["message",' + body + b"]"


def message_frames(
    messages: list[Message], replayed: bool, include_metadata: bool, offsets: bool = False
) -> bytes:
    """The websocket frames of these messages' packets, in one buffer (live deliveries
    build it once for every subscriber with the same options: see
    `subscription.Delivery`)."""
    if offsets:
        return b"".join(
            [ws_frame(message_packet(m, replayed, include_metadata, True)) for m in messages]
        )
    if include_metadata:
        return b"".join(
            [ws_frame(b'42["message",' + m.envelope_json(replayed) + b"]") for m in messages]
        )
    return b"".join([ws_frame(b'42["message",' + m.data_json + b"]") for m in messages])
