"""`bloomr tail STREAM`: a stream's messages, live in the terminal.

A dropped connection is resumed with `replay=<id of the last message seen>`, so no
message is missed or printed twice. Every connection asks for `includeMetadata` (the
ids are the resume points) and prints only the data unless `--metadata` is given."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import click

from .common import CliError, client_options, client_secret, stdout_closed, warn

MAX_REPLAY = 10_000  # the server's cap on one replay
RECENT_IDS = 1024  # ids remembered to drop a message seen twice
RETRY_INITIAL = 0.5
RETRY_MAX = 5.0
CONNECT_TIMEOUT = 10.0
# An `error` with one of these codes may go away by itself: reconnect. Any other code
# (unauthorized, stream_deleted, token_revoked, invalid_argument) ends the tail.
TRANSIENT_ERRORS = frozenset({"internal", "unavailable", "rate_limited"})
# Warnings about the replay a live-only tail makes to learn where the stream ends
QUIET_WARNINGS = frozenset({"replay_truncated", "history_disabled", "replay_limit_capped"})


@dataclass
class Follow:
    """Where a tail stands in the stream, and what to ask on the next connection. Pure.

    A tail without --replay/--replay-limit still replays the newest message once, without
    printing it: its id is where a reconnection resumes, even if nothing is published
    before the connection drops."""

    replay: str | None = None
    replay_limit: int | None = None
    cursor: str | None = None  # id of the newest message printed (or skipped as old)
    joined: bool = False  # a replay_end came: the stream's end at joining time is known
    quiet: bool = field(default=False, init=False)  # this connection's replay is not shown
    _recent: deque[str] = field(default_factory=lambda: deque(maxlen=RECENT_IDS), init=False)
    _recent_set: set[str] = field(default_factory=set, init=False)

    def handshake(self) -> dict[str, str]:
        """The replay arguments of the next connection."""
        asked = self.replay is not None or self.replay_limit is not None
        self.quiet = not self.joined and not asked and self.cursor is None
        if self.cursor is not None:
            return {"replay": self.cursor}
        if self.quiet:
            return {"replayLimit": "1"}
        if not self.joined or self.replay is not None:
            # before joining: what was asked; after joining with nothing seen: the same
            # window again holds exactly what was published since
            return _replay_args(self.replay, self.replay_limit)
        return {"replayLimit": str(MAX_REPLAY)}  # the stream was empty when we joined

    def accept(self, message_id: str | None, replayed: bool) -> bool:
        """Whether to print a message. The server never repeats one across a resume;
        the ids of the last messages are kept anyway, so a straggler of the previous
        connection cannot be printed twice."""
        if message_id is None:
            return True
        if message_id in self._recent_set:
            return False
        if len(self._recent) == self._recent.maxlen:
            self._recent_set.discard(self._recent[0])
        self._recent.append(message_id)
        self._recent_set.add(message_id)
        self.cursor = message_id
        return not (replayed and self.quiet)

    def replay_ended(self) -> None:
        self.joined = True
        self.quiet = False


def _replay_args(replay: str | None, limit: int | None) -> dict[str, str]:
    args = {"replay": replay, "replayLimit": None if limit is None else str(limit)}
    return {k: v for k, v in args.items() if v is not None}


def format_message(payload: Any, metadata: bool) -> str:
    """The line printed for one message: strings as they are, other JSON compact."""
    value = payload.get("data") if isinstance(payload, dict) and not metadata else payload
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _connect_failure(exc: BaseException) -> str:
    """`connection refused` from `Cannot connect to host ... [Connect call failed ...]`."""
    text = str(exc)
    inner = re.search(r"\[([^\[\]]*)\]\s*$", text)
    if inner is None:
        return text or type(exc).__name__
    reason = inner.group(1)
    return "connection refused" if reason.startswith("Connect call failed") else reason.lower()


class Tail:
    """Connects, prints, and reconnects until stopped or refused for good."""

    def __init__(
        self, url: str, stream: str, secret: str, channel: str, follow: Follow, metadata: bool
    ) -> None:
        self.url = url.rstrip("/")
        self.auth = {"stream": stream, "token": secret, "channel": channel}
        self.follow = follow
        self.metadata = metadata
        self.stop = asyncio.Event()
        self.fatal: str | None = None
        self.stdout_gone = False
        self._flush_pending = False

    async def run(self) -> None:
        import socketio

        delay, connected_before = RETRY_INITIAL, False
        while not self.stop.is_set():
            client, ended = self._client(socketio.AsyncClient)
            auth = {**self.auth, "includeMetadata": "true", **self.follow.handshake()}
            try:
                await client.connect(self.url, auth=auth, wait_timeout=CONNECT_TIMEOUT)
            except socketio.exceptions.ConnectionError as exc:
                if not connected_before:
                    reason = _connect_failure(exc)
                    raise CliError(f"cannot reach bloomr at {self.url}: {reason}") from None
                await self._pause(delay)
                delay = min(delay * 2, RETRY_MAX)
                continue
            if connected_before:
                warn("reconnected")
            connected_before = True
            await self._until(ended)
            await client.disconnect()
            if self.fatal is not None:
                raise CliError(self.fatal)
            if self.stop.is_set():
                return
            if self.follow.joined:
                delay = RETRY_INITIAL
            warn(f"connection to {self.url} lost; reconnecting")
            await self._pause(delay)
            delay = min(delay * 2, RETRY_MAX)

    def _client(self, factory: Any) -> tuple[Any, asyncio.Event]:
        """A fresh client per connection. Its handlers do no I/O that awaits, so they
        run in the order the server sent the events."""
        client = factory(reconnection=False, handle_sigint=False)
        ended = asyncio.Event()

        def on_error(payload: Any = None) -> None:
            code, message = _code_message(payload)
            if code in TRANSIENT_ERRORS:
                warn(f"{code}: {message}")
                return
            self.fatal = f"{code}: {message}"
            ended.set()

        def on_warning(payload: Any = None) -> None:
            code, message = _code_message(payload)
            if not (self.follow.quiet and code in QUIET_WARNINGS):
                warn(f"{code}: {message}")

        client.on("message", self._on_message)
        client.on("replay_end", lambda *_: self.follow.replay_ended())
        client.on("warning", on_warning)
        client.on("error", on_error)
        client.on("disconnect", lambda *_: ended.set())
        return client, ended

    def _on_message(self, payload: Any = None) -> None:
        envelope = payload if isinstance(payload, dict) else {}
        message_id = envelope.get("id")
        replayed = bool(envelope.get("replayed"))
        if self.follow.accept(message_id if isinstance(message_id, str) else None, replayed):
            self._write(format_message(payload, self.metadata))

    def _write(self, line: str) -> None:
        if self.stdout_gone:
            return
        try:
            sys.stdout.write(line + "\n")
        except BrokenPipeError:
            self._stdout_closed()
            return
        if not self._flush_pending:  # one flush per burst of messages
            self._flush_pending = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_pending = False
        try:
            sys.stdout.flush()
        except BrokenPipeError:
            self._stdout_closed()

    def _stdout_closed(self) -> None:
        self.stdout_gone = True
        self.stop.set()

    async def _until(self, ended: asyncio.Event) -> None:
        stop = asyncio.create_task(self.stop.wait())
        end = asyncio.create_task(ended.wait())
        try:
            await asyncio.wait({stop, end}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            end.cancel()

    async def _pause(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop.wait(), seconds)


def _code_message(payload: Any) -> tuple[str, str]:
    if isinstance(payload, dict):
        return str(payload.get("code", "unknown")), str(payload.get("message", ""))
    return "unknown", str(payload)


async def _main(tail: Tail) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, tail.stop.set)
    try:
        await tail.run()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        with contextlib.suppress(BrokenPipeError):
            sys.stdout.flush()


@click.command("tail")
@click.argument("stream_id", metavar="STREAM")
@click.option("--channel", default="", help="The channel [default: standard output, '']")
@click.option("--replay", metavar="FROM", help="First replay from a date, an age (10m) or an id.")
@click.option(
    "--replay-limit", type=click.IntRange(min=1), metavar="N", help="Replay at most N messages."
)
@click.option("--metadata", is_flag=True, help="Print each message's envelope JSON.")
@client_options
def tail_command(
    stream_id: str,
    channel: str,
    replay: str | None,
    replay_limit: int | None,
    metadata: bool,
    url: str,
    token: str | None,
    admin_key: str | None,
) -> None:
    """Print STREAM's messages as they come (Ctrl-C to stop): strings as they are,
    other JSON compact. Needs a token with the subscribe scope, or the admin key."""
    import importlib.util

    if importlib.util.find_spec("aiohttp") is None:
        raise CliError("bloomr tail needs aiohttp: pip install 'python-socketio[asyncio_client]'")
    follow = Follow(replay=replay or None, replay_limit=replay_limit)
    tail = Tail(url, stream_id, client_secret(token, admin_key), channel, follow, metadata)
    asyncio.run(_main(tail))
    if tail.stdout_gone:
        stdout_closed()
