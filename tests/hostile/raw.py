"""Raw clients for the hostile suite: a websocket that speaks Engine.IO / Socket.IO
frame by frame and can stop reading, raw HTTP over a socket, and the check every case
ends with (a normal publish and subscribe still work)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

from server import Server
from sioclient import connect_and_wait

# The shared server's bounds (conftest.py): short, so that the cases end quickly.
BACKLOG = 4 * 1024 * 1024
SHORT_ENV = {
    "BLOOMR_REQUEST_TIMEOUT": "1.5",
    "BLOOMR_CONNECT_TIMEOUT": "1.5",
    "BLOOMR_STALL_TIMEOUT": "1.5",
    "BLOOMR_BACKLOG_BYTES": str(BACKLOG),
    "BLOOMR_AUTH_FAILURES": "0",  # the cases send bad secrets by the hundred
    "BLOOMR_WEBHOOK_ALLOW_PRIVATE": "1",
}

STALLED_RCVBUF = 4096  # a client that never reads: the kernel takes this much, then nothing


def host_port(server: Server) -> tuple[str, int]:
    parts = urlsplit(server.url)
    assert parts.hostname is not None and parts.port is not None
    return parts.hostname, parts.port


async def open_socket(
    server: Server, rcvbuf: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = host_port(server)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, (host, port))
    return await asyncio.open_connection(sock=sock, limit=rcvbuf or 2**16)


async def read_response(reader: asyncio.StreamReader, timeout: float = 10) -> tuple[int, bytes]:
    """`(status, body)` of one HTTP response (Content-Length framed)."""
    async with asyncio.timeout(timeout):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        length = 0
        for line in lines[1:]:
            name, _, value = line.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value)
        return status, await reader.readexactly(length)


async def closed_by_server(reader: asyncio.StreamReader, timeout: float) -> bool:
    """True once the server closed the connection (EOF or reset) within `timeout`."""
    try:
        async with asyncio.timeout(timeout):
            while await reader.read(65536):
                pass
    except TimeoutError:  # (an OSError too: first)
        return False
    except (ConnectionError, OSError):
        return True
    return True


# -- websocket frames -----------------------------------------------------------------


def client_frame(text: str | bytes, opcode: int = 1) -> bytes:
    payload = text.encode() if isinstance(text, str) else text
    mask = os.urandom(4)
    n = len(payload)
    if n < 126:
        head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
    elif n < 65536:
        head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, n)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, n)
    return head + mask + _mask(payload, mask)


def _mask(payload: bytes, mask: bytes) -> bytes:
    """XOR with the repeated mask, as one big integer (fast enough for a few MiB)."""
    repeated = (mask * (len(payload) // 4 + 1))[: len(payload)]
    mixed = int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")
    return mixed.to_bytes(len(payload), "big")


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, second = await reader.readexactly(2)
    n = second & 0x7F
    if n == 126:
        (n,) = struct.unpack("!H", await reader.readexactly(2))
    elif n == 127:
        (n,) = struct.unpack("!Q", await reader.readexactly(8))
    return first & 0x0F, await reader.readexactly(n)


class RawSocketIO:
    """A Socket.IO client over one raw websocket: it reads only when told to."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, server: Server, rcvbuf: int | None = None, **query: Any) -> RawSocketIO:
        reader, writer = await open_socket(server, rcvbuf)
        path = "/socket.io/?" + urlencode({"EIO": "4", "transport": "websocket", **query})
        key = "dGhlIHNhbXBsZSBub25jZQ=="
        writer.write(
            f"GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        async with asyncio.timeout(10):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        client = cls(reader, writer)
        opened = await client.recv()
        assert opened.startswith("0{"), opened
        return client

    def send(self, packet: str | bytes) -> None:
        self.writer.write(client_frame(packet))

    async def recv(self, timeout: float = 10) -> str:
        """The next text packet (answering pings, skipping other frames)."""
        async with asyncio.timeout(timeout):
            while True:
                opcode, data = await read_frame(self.reader)
                if opcode == 8:
                    raise ConnectionError("closed by the server")
                if opcode != 1:
                    continue
                text = data.decode()
                if text == "2":
                    self.send("3")
                    continue
                return text

    async def events_until(self, name: str, timeout: float = 10) -> list[tuple[str, Any]]:
        """Socket.IO events up to and including the first `name` one."""
        seen: list[tuple[str, Any]] = []
        async with asyncio.timeout(timeout):
            while True:
                packet = await self.recv(timeout)
                if packet.startswith("42"):
                    event = json.loads(packet[2:])
                    seen.append((event[0], event[1] if len(event) > 1 else None))
                    if event[0] == name:
                        return seen
                elif packet.startswith("41") and name == "disconnect":
                    seen.append(("disconnect", None))
                    return seen

    async def connect(self, auth: dict[str, Any] | None = None) -> None:
        self.send("40" + (json.dumps(auth) if auth is not None else ""))
        reply = await self.recv()
        assert reply.startswith("40"), reply

    def close(self) -> None:
        self.writer.close()


async def assert_serves(server: Server) -> None:
    """A normal publish and subscribe still work (whatever came before)."""
    stream, token = await server.stream_and_token()
    ids = await server.publish(stream, {"data": "before"}, token)
    client = await connect_and_wait(server.socket_url(stream=stream, token=token, replay=ids[0]))
    try:
        assert client.errors == [], client.summary()
        await server.publish(stream, {"data": "after"}, token)
        assert await client.wait_messages(1) == ["after"]
    finally:
        await client.close()


async def slow_consumers(http: httpx.AsyncClient) -> float:
    text = (await http.get("/metrics")).text
    line = next(x for x in text.splitlines() if x.startswith("bloomr_slow_consumers_total "))
    return float(line.split()[1])
