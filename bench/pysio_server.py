"""The python-socketio peer: a plain python-socketio 5.x ASGI server on uvicorn that only
broadcasts (no history, no auth), tuned the way bloomr's own server is (uvloop,
httptools, websockets without permessage-deflate, orjson).

    .venv/bin/python bench/pysio_server.py [--port 0] [--host 127.0.0.1]

Clients join the room named by their `stream` query parameter ("bench" when absent).
POST /publish?room=R takes bloomr's publish body (a JSON array of {data}, or one {data})
and emits `message` with each `data` to the room, in order; answers 201 {count}.
Prints "listening on http://HOST:PORT" once it is ready."""

from __future__ import annotations

import argparse
import asyncio
import socket
from typing import Any
from urllib.parse import parse_qs

import orjson
import socketio
import uvicorn
import uvloop


class OrjsonJSON:
    """The `json` module python-socketio uses, backed by orjson."""

    @staticmethod
    def dumps(obj: Any, **_: Any) -> str:
        return orjson.dumps(obj).decode()

    @staticmethod
    def loads(s: str | bytes, **_: Any) -> Any:
        return orjson.loads(s)


sio = socketio.AsyncServer(
    async_mode="asgi",
    json=OrjsonJSON,
    cors_allowed_origins="*",
    logger=False,
    engineio_logger=False,
    max_http_buffer_size=10 * 1024 * 1024,
)


@sio.on("connect")
async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> None:
    query = parse_qs(environ.get("QUERY_STRING", ""))
    room = (query.get("stream") or ["bench"])[0]
    await sio.enter_room(sid, room)


async def _reply(send: Any, status: int, body: Any) -> None:
    payload = orjson.dumps(body)
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(payload))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


async def publish_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != "/publish":
        await _reply(send, 404, {"error": {"code": "not_found", "message": "POST /publish only"}})
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    try:
        body = orjson.loads(b"".join(chunks))
    except orjson.JSONDecodeError:
        await _reply(send, 400, {"error": {"code": "invalid_json", "message": "body is not JSON"}})
        return
    items = body if isinstance(body, list) else [body]
    room = (parse_qs(scope.get("query_string", b"").decode()).get("room") or ["bench"])[0]
    for item in items:
        await sio.emit("message", item["data"], to=room)
    await _reply(send, 201, {"count": len(items)})


app = socketio.ASGIApp(sio, other_asgi_app=publish_app, socketio_path="socket.io")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((args.host, args.port))
    config = uvicorn.Config(
        app,
        loop="uvloop",
        http="httptools",
        ws="websockets-sansio",
        ws_per_message_deflate=False,
        lifespan="off",
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)

    async def serve() -> None:
        task = asyncio.create_task(server.serve(sockets=[sock]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started:
            print(f"listening on http://{args.host}:{sock.getsockname()[1]}", flush=True)
        await task

    uvloop.run(serve())


if __name__ == "__main__":
    main()
