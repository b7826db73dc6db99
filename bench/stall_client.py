"""A Socket.IO client that stalls: it opens a websocket to /socket.io/, completes the
Engine.IO and Socket.IO handshakes, then stops reading (and never answers a ping).

Its receive buffer is made small before it connects, so the server's writes back up
within seconds instead of filling megabytes of kernel buffers first.

    python bench/stall_client.py URL --query stream=ID --query token=T --seconds 20

After `--seconds` it reads what is waiting (2 s at most) and prints one JSON line: how
many bytes it had left unread, and whether the server had closed the connection."""

from __future__ import annotations

import argparse
import base64
import json
import os
import socket
import struct
import sys
import time
from urllib.parse import urlencode, urlsplit

RCVBUF = 4096


def _frame(text: str) -> bytes:
    """One masked text frame (clients must mask)."""
    payload = text.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    assert len(payload) < 126
    return struct.pack("!BB", 0x81, 0x80 | len(payload)) + mask + masked


def connect(url: str, query: dict[str, str]) -> socket.socket:
    parts = urlsplit(url)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
    sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
    qs = urlencode({**query, "EIO": "4", "transport": "websocket"})
    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /socket.io/?{qs} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    sock.sendall(request.encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError("closed during the websocket handshake")
        head += chunk
    if b" 101 " not in head.split(b"\r\n", 1)[0]:
        raise ConnectionError(head.decode(errors="replace"))
    # The Engine.IO open packet ("0{...}") comes first; then join the default namespace.
    sock.settimeout(5)
    opening = sock.recv(2)
    length = opening[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", sock.recv(2))[0]
    body = b""
    while len(body) < length:
        body += sock.recv(length - len(body))
    if not body.startswith(b"0"):
        raise ConnectionError(f"unexpected first packet {body[:80]!r}")
    sock.sendall(_frame("40"))
    return sock


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--query", action="append", default=[], help="key=value")
    parser.add_argument("--seconds", type=float, default=20)
    args = parser.parse_args()
    query = dict(item.split("=", 1) for item in args.query)
    sock = connect(args.url, query)
    print(json.dumps({"event": "stalled"}), flush=True)
    time.sleep(args.seconds)  # not reading: the server's writes back up
    unread = 0
    closed = False
    sock.settimeout(0.2)
    deadline = time.monotonic() + 2
    try:
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 20)
            except TimeoutError:
                break
            if not chunk:
                closed = True
                break
            unread += len(chunk)
    except ConnectionResetError:
        closed = True
    result = {"event": "result", "unread_bytes": unread, "server_closed": closed}
    print(json.dumps(result), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
