"""`bloomr serve --demo`: a stream that ticks every second, and a snippet to paste."""

from __future__ import annotations

import asyncio
import os
from datetime import UTC, datetime
from pathlib import Path

from .app import Bloomr
from .model import (
    Draft,
    Retention,
    Stream,
    Token,
    hash_secret,
    json_bytes,
    new_stream_id,
    new_token_id,
    new_token_secret,
)

DEMO_NAME = "demo"
DEMO_TOKEN_FILE = "demo.token"  # in the data dir, mode 0600

SNIPPET = """\
// paste into a file demo.mjs, then: npm install socket.io-client && node demo.mjs
import {{ io }} from 'socket.io-client';

const host = '{url}/';
const socket = io(host, {{
  query: {{
    stream: '{stream}', // the id of your script
    token: '{token}', // the token you generated in your settings
  }},
}});

// event on connect
socket.on('connect', () => {{
  console.log('Connected to', host);
}});

// event on error
socket.on('error', arg => {{
  console.error('ERROR =>', arg);
}});

// event on message
socket.on('message', arg => {{
  console.error('MESSAGE =>', arg);
}});
"""


async def _demo_stream(node: Bloomr) -> Stream:
    for stream in await node.store.list_streams():
        if stream.name == DEMO_NAME:
            return stream
    stream = Stream(id=new_stream_id(), name=DEMO_NAME, retention=Retention())
    await node.store.create_stream(stream)
    return stream


async def _demo_token(node: Bloomr, stream: Stream) -> str:
    """The secret of the demo token: the one of the previous start while it still works
    for the demo stream, so restarts do not pile tokens up (embedded mode keeps it in
    the data dir; a cluster node has none and mints one per start)."""
    path = None if node.settings.cluster else node.settings.data_dir / DEMO_TOKEN_FILE
    if path is not None and (secret := _read_secret(path)):
        token = await node.store.get_token_by_hash(hash_secret(secret))
        if token is not None and token.allows_stream(stream.id) and not token.expired():
            return secret
    secret = await _mint_token(node, stream)
    if path is not None:
        _write_secret(path, secret)
    return secret


async def _mint_token(node: Bloomr, stream: Stream) -> str:
    secret = new_token_secret()
    token = Token(
        id=new_token_id(),
        name=DEMO_NAME,
        secret_hash=hash_secret(secret),
        streams=[stream.id],
        scopes=["subscribe"],
    )
    await node.store.create_token(token)
    return secret


def _read_secret(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def _write_secret(path: Path, secret: str) -> None:
    """Mode 0600 from the start, replaced whole: a reader never sees half a secret."""
    staging = path.with_name(path.name + ".new")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(secret + "\n")
    os.replace(staging, path)


async def _tick(node: Bloomr, stream: Stream) -> None:
    n = 0
    while True:
        n += 1
        line = f"tick {n} at {datetime.now(UTC).isoformat(timespec='seconds')}"
        await node.hub.publish(stream, [Draft("", json_bytes(line))])
        await asyncio.sleep(1)


async def run_demo(node: Bloomr, url: str) -> None:
    stream = await _demo_stream(node)
    secret = await _demo_token(node, stream)
    print(f"\ndemo stream {stream.id} publishes a line every second. Connect with:\n")
    print(SNIPPET.format(url=url, stream=stream.id, token=secret), flush=True)
    asyncio.get_running_loop().create_task(_tick(node, stream), name="bloomr-demo")
