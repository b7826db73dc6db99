"""Resume points for Socket.IO's connection state recovery, kept in the client.

When a connection goes live, bloomr gives the client a `pid`: where the connection
stood (stream, channel, token, history epoch, the stream's head seq at that moment),
signed. The client sends it back with the id of the last message it got (the offset)
when it reconnects, on any node, after any restart: no process keeps anything, the
history has the messages and the pid says where they start. Pure: no I/O."""

from __future__ import annotations

import base64
import hashlib
import hmac
from dataclasses import dataclass

import orjson

from .replay import AfterId, AfterSeq, parse_message_id

_MAC_LEN = 16  # bytes of HMAC-SHA256 kept: forging one takes 2**128 tries


@dataclass(frozen=True, slots=True)
class ResumePoint:
    stream: str
    channel: str
    token: str | None  # the token id of the connection (None: the admin key)
    epoch: str  # the history's epoch when it went live
    seq: int  # the stream's head seq when it went live


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class PidSigner:
    """Signs and checks pids with a key every node of a deployment derives alike."""

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(b"bloomr-pid\0" + secret.encode()).digest()

    def _mac(self, body: bytes) -> bytes:
        return hmac.new(self._key, body, hashlib.sha256).digest()[:_MAC_LEN]

    def sign(self, point: ResumePoint) -> str:
        body = orjson.dumps([point.stream, point.channel, point.token, point.epoch, point.seq])
        return _b64(body) + "." + _b64(self._mac(body))

    def verify(self, pid: object) -> ResumePoint | None:
        """The point a pid names, or None for anything this deployment did not sign."""
        if not isinstance(pid, str) or len(pid) > 1024 or pid.count(".") != 1:
            return None
        body_text, mac_text = pid.split(".")
        try:
            body, mac = _unb64(body_text), _unb64(mac_text)
        except ValueError:
            return None
        if not hmac.compare_digest(mac, self._mac(body)):
            return None
        try:
            stream, channel, token, epoch, seq = orjson.loads(body)
        except (orjson.JSONDecodeError, ValueError, TypeError):
            return None
        return ResumePoint(stream, channel, token, epoch, seq)


def resume_start(
    point: ResumePoint | None, stream: str, channel: str, token: str | None, offset: object
) -> AfterId | AfterSeq | str:
    """Where a reconnecting client resumes: after its offset (the id of the last message
    it got), or after the point its previous connection went live; or why it cannot
    (a `recovery_failed` reason)."""
    if point is None:
        return "invalid_pid"
    if (point.stream, point.channel, point.token) != (stream, channel, token):
        return "another_stream_channel_or_token"
    if offset is None or offset == "":
        return AfterSeq(point.seq, point.epoch)
    message_id = parse_message_id(offset) if isinstance(offset, str) else None
    if message_id is None:
        return "invalid_offset"
    return AfterId(message_id)
