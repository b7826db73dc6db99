"""`bloomr run --stream ID -- CMD ...`: run a local command the way bloomr runs scripts
(the runner's own capture: stdout lines on `""`, stderr lines on `errors`, JSON lines
on the fd in `BLOOMR_EMIT_FD` on their channel) and publish its output to a remote
bloomr over the HTTP API; exit with the command's exit code.

Delivery: one sender posts the output in order, in batches of up to 1,000 lines, each
with an `Idempotency-Key` of its own. A batch leaves the buffer only when the server
answered 201, and nothing is dropped while the server is away: failures (5xx, 408,
409, 425, 429, timeouts, broken connections) are retried with the same key and body,
with exponential backoff (0.2 s doubling to 2 s, or longer when the answer's
`Retry-After` says so, as `Publisher` does), so a batch whose outcome was unknown (the
server stored it but its answer was lost) is stored once: the server answers a repeat
with the first answer. The output waits in a bounded buffer meanwhile, and when that
is full the command blocks in write() until the server is back. Errors the server
will repeat (401, 403, 404, 422) stop the command and exit 1."""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import subprocess
import sys
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypeVar

import click
import orjson

from ..client.publisher import RETRY_STATUSES, retry_after, take_batch
from .common import (
    TIMEOUT,
    CliError,
    api_path,
    client_options,
    client_secret,
    error_line,
    failure_reason,
    parse_env,
    tls_verify,
    warn,
)

if TYPE_CHECKING:
    import httpx

    from ..model import Draft
    from ..runner.process import Run
    from ..runner.spec import ScriptSpec

BATCH_MESSAGES = 1000
BATCH_BYTES = 1024 * 1024  # per request, well under the server's 10 MiB default
BUFFER_MESSAGES = 100_000  # held while the server is away, then the command waits
BUFFER_BYTES = 64 * 1024 * 1024
RETRY_INITIAL = 0.2
RETRY_MAX = 2.0
SPAWN_FAILED = 127  # as a shell exits for a command it cannot run

Outcome = Literal["sent", "retry", "too_large", "fatal"]


class Answer(NamedTuple):
    """What one POST came to: what to do next, why, the HTTP status (None: no answer),
    and how long the server asked to be left alone (`Retry-After`, seconds)."""

    outcome: Outcome
    reason: str
    status: int | None = None
    wait: float = 0.0


F = TypeVar("F", bound=Callable[..., Any])


def encode_batch(drafts: list[Draft]) -> bytes:
    """A publish request body: `[{"channel": ..., "data": ...}, ...]`, data as given."""
    items = b",".join(
        b'{"channel":' + orjson.dumps(d.channel) + b',"data":' + d.data_json + b"}" for d in drafts
    )
    return b"[" + items + b"]"


def exit_status(code: int | None, signal_name: str | None) -> int:
    """The command's exit code; 128 + N when signal N killed it, as shells report it."""
    if code is not None:
        return code
    name = signal_name or ""
    with contextlib.suppress(KeyError):
        return 128 + signal.Signals[name].value
    number = name.removeprefix("SIG")
    return 128 + int(number) if number.isdigit() else 1


class Uploader:
    """The command's output on its way to the server: a bounded buffer in order, and
    one sender task (`run`) that posts it batch by batch."""

    def __init__(
        self, client: httpx.AsyncClient, url: str, path: str, max_outage: float, echo: bool
    ) -> None:
        self._client = client
        self._url = url
        self._path = path
        self._max_outage = max_outage  # 0: retry for ever
        self._echo = echo
        self._pending: deque[Draft] = deque()
        self._pending_bytes = 0
        self._in_flight = 0
        self._has_data = asyncio.Event()
        self._room = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._outage_since: float | None = None
        self.failed = asyncio.Event()
        self.failure: str | None = None
        self.sent = 0

    @property
    def backlog(self) -> int:
        """Lines not (known to be) stored yet."""
        return len(self._pending) + self._in_flight

    # -- the runner's side -------------------------------------------------------------

    async def put(self, drafts: list[Draft]) -> None:
        """The runner's `publish`: queue drafts in order; waits while the buffer is full.
        After a failure for good nothing can be sent, so drafts are dropped."""
        while self._full() and self.failure is None:
            self._room.clear()
            await self._room.wait()
        if self.failure is not None:
            return
        if self._echo:
            echo(drafts)
        self._pending.extend(drafts)
        self._pending_bytes += sum(len(d.data_json) for d in drafts)
        self._idle.clear()
        self._has_data.set()

    def _full(self) -> bool:
        return len(self._pending) >= BUFFER_MESSAGES or self._pending_bytes >= BUFFER_BYTES

    async def drain(self, interrupted: asyncio.Event) -> None:
        """Until all is sent, sending failed for good, or `interrupted` is set."""
        await _first(self._idle.wait(), self.failed.wait(), interrupted.wait())

    # -- the sender --------------------------------------------------------------------

    async def check(self) -> None:
        """Before the command starts: an empty batch checks the URL, the credential and
        the stream (201 with no ids), so a typo does not run a job for nothing."""
        outcome, reason, status, _ = await self._attempt(b"[]")
        if outcome == "sent":
            return
        if status is None:
            raise CliError(f"cannot reach bloomr at {self._url}: {reason}")
        raise CliError(reason)

    async def run(self) -> None:
        while True:
            await self._has_data.wait()
            batch = self._take()
            if not await self._deliver(batch):
                self._room.set()  # wake put(): it drops from now on
                self.failed.set()
                return
            self.sent += len(batch)
            self._in_flight = 0
            if not self._pending:
                self._has_data.clear()
                self._idle.set()

    def _take(self) -> list[Draft]:
        batch = take_batch(self._pending, BATCH_MESSAGES, BATCH_BYTES, _draft_cost)
        self._pending_bytes -= sum(len(draft.data_json) for draft in batch)
        self._in_flight = len(batch)
        self._room.set()
        return batch

    async def _deliver(self, batch: list[Draft]) -> bool:
        """Post one batch until the server stored it; False when that cannot happen.
        Every attempt sends the same body under the same key: stored once, whatever
        answers were lost."""
        delay = RETRY_INITIAL
        body, key = encode_batch(batch), uuid.uuid4().hex
        while True:
            outcome, reason, _, wait = await self._attempt(body, key)
            if outcome == "sent":
                self._recovered()
                return True
            if outcome == "too_large":
                return await self._split(batch, reason)
            if outcome == "fatal":
                self.failure = reason
                return False
            if not self._still_trying(reason):
                return False
            await asyncio.sleep(max(delay * random.uniform(0.8, 1.2), wait))
            delay = min(delay * 2, RETRY_MAX)

    async def _split(self, batch: list[Draft], reason: str) -> bool:
        """413: send the halves; a single line the server refuses is skipped, loudly."""
        if len(batch) == 1:
            warn(f"skipped a message of {len(batch[0].data_json)} bytes: {reason}")
            return True
        half = len(batch) // 2
        return await self._deliver(batch[:half]) and await self._deliver(batch[half:])

    async def _attempt(self, body: bytes, key: str | None = None) -> Answer:
        """One POST, and what it came to."""
        import httpx

        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        try:
            response = await self._client.post(self._path, content=body, headers=headers)
        except httpx.UnsupportedProtocol:
            raise
        except httpx.TransportError as exc:  # refused, reset, timed out: try again
            return Answer("retry", failure_reason(exc))
        status = response.status_code
        if status == 201:
            return Answer("sent", "", status)
        reason = error_line(status, response.content)
        if status == 413:
            return Answer("too_large", reason, status)
        if status in RETRY_STATUSES or status >= 500:
            return Answer("retry", reason, status, retry_after(response.headers.get("Retry-After")))
        return Answer("fatal", reason, status)

    def _still_trying(self, reason: str) -> bool:
        now = time.monotonic()
        if self._outage_since is None:
            self._outage_since = now
            warn(f"cannot publish to {self._url}: {reason}; retrying ({self.backlog} lines held)")
        elif self._max_outage and now - self._outage_since > self._max_outage:
            self.failure = f"cannot publish to {self._url} for {self._max_outage:g}s: {reason}"
            return False
        return True

    def _recovered(self) -> None:
        if self._outage_since is not None:
            away = time.monotonic() - self._outage_since
            warn(f"publishing again after {away:.1f}s ({self.backlog} lines to catch up)")
            self._outage_since = None


def _draft_cost(draft: Draft) -> int:
    return len(draft.data_json) + len(draft.channel) + 24  # with {"channel":"","data":},


def echo(drafts: list[Draft]) -> None:
    """--echo: stdout lines to stdout, the `errors` channel to stderr (custom channels
    stay remote)."""
    for draft in drafts:
        if draft.channel not in ("", "errors"):
            continue
        value = orjson.loads(draft.data_json)
        text = value if isinstance(value, str) else orjson.dumps(value).decode()
        with contextlib.suppress(BrokenPipeError):
            print(text, file=sys.stdout if draft.channel == "" else sys.stderr, flush=True)


async def _first(*waits: Awaitable[Any]) -> None:
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()


class Signals:
    """SIGINT/SIGTERM/SIGHUP while the command runs: the first is passed on to its
    process group, the second stops it (SIGTERM, SIGKILL after the grace period).
    After it ended, a signal gives up waiting for the output to be sent."""

    NAMES = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self) -> None:
        self.run: Run | None = None
        self.received = 0
        self.interrupted = asyncio.Event()

    def __enter__(self) -> Signals:
        loop = asyncio.get_running_loop()
        for sig in self.NAMES:
            loop.add_signal_handler(sig, self._on_signal, sig)
        return self

    def __exit__(self, *_: object) -> None:
        loop = asyncio.get_running_loop()
        for sig in self.NAMES:
            loop.remove_signal_handler(sig)

    def _on_signal(self, sig: signal.Signals) -> None:
        from ..runner.process import signal_group

        self.received += 1
        if self.run is None:  # the command ended: stop waiting for its output to go
            self.interrupted.set()
        elif self.received == 1:
            signal_group(self.run.pid, sig)
        else:
            self.run.terminate()


async def run_and_publish(
    uploader: Uploader, stream_id: str, spec: ScriptSpec, grace: float
) -> int:
    """Run the command to its end and publish all it printed; its exit status."""
    from ..runner.events import exit_event

    with Signals() as signals:
        signals.run = run = await _spawn(uploader, stream_id, spec, grace, signals)
        ended_task = asyncio.create_task(run.wait())
        await _first(asyncio.shield(ended_task), uploader.failed.wait())
        if not ended_task.done():  # the output cannot be delivered: stop the command
            run.terminate()
            await ended_task
            raise CliError(f"{uploader.failure}; the command was stopped")
        signals.run = None
        ended = ended_task.result()
        if ended.failed:
            await uploader.put([exit_event(ended)])
        await uploader.drain(signals.interrupted)
    status = exit_status(ended.code, ended.signal)
    if uploader.backlog:
        why = uploader.failure or "interrupted"
        raise CliError(f"{why}; {uploader.backlog} lines were not delivered", status or 1)
    return status


async def _spawn(
    uploader: Uploader, stream_id: str, spec: ScriptSpec, grace: float, signals: Signals
) -> Run:
    """Start the command; one it cannot start is reported on `errors` and exits 127."""
    from ..runner.events import spawn_error_event
    from ..runner.process import Run

    try:
        return await Run.spawn(stream_id, spec, uploader.put, grace)
    except (OSError, ValueError, subprocess.SubprocessError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        message = f"cannot start {spec.command[0]!r}: {reason}"
        await uploader.put([spawn_error_event(message)])
        await uploader.drain(signals.interrupted)
        raise CliError(message, exit_code=SPAWN_FAILED) from None


@dataclass(frozen=True)
class RunOptions:
    max_outage: float  # seconds; 0: retry for ever
    grace: float  # seconds between SIGTERM and SIGKILL
    echo: bool


async def _main(url: str, secret: str, stream_id: str, spec: ScriptSpec, opts: RunOptions) -> int:
    import httpx

    base = url.rstrip("/")
    path = api_path("streams", stream_id, "messages")
    headers = {"Authorization": f"Bearer {secret}"}
    try:
        client = httpx.AsyncClient(
            base_url=base, headers=headers, timeout=TIMEOUT, verify=tls_verify(base)
        )
    except httpx.InvalidURL as exc:
        raise CliError(f"invalid URL {url!r}: {exc}") from None
    async with client:
        uploader = Uploader(client, base, path, opts.max_outage, opts.echo)
        try:
            await uploader.check()
        except httpx.UnsupportedProtocol:
            raise CliError(f"invalid URL {url!r}: use http:// or https://") from None
        sender = asyncio.create_task(uploader.run())
        try:
            return await run_and_publish(uploader, stream_id, spec, opts.grace)
        finally:
            sender.cancel()


def _spec(command: tuple[str, ...], cwd: Path | None, env: dict[str, str]) -> ScriptSpec:
    from ..runner.spec import ScriptError, ScriptSpec

    try:
        return ScriptSpec(list(command), str(cwd) if cwd else None, env or None, "never")
    except ScriptError as exc:
        raise click.UsageError(exc.message) from None


def _seconds_option(flag: str, default: float, text: str) -> Callable[[F], F]:
    return click.option(
        flag,
        type=click.FloatRange(min=0),
        default=default,
        show_default=True,
        metavar="SECONDS",
        help=text,
    )


@click.command("run")
@click.option("--stream", "stream_id", required=True, metavar="ID", help="Publish to this stream.")
@click.option("--cwd", type=click.Path(path_type=Path, file_okay=False), help="Run it there.")
@click.option(
    "--env",
    "env_pairs",
    multiple=True,
    metavar="NAME=VALUE",
    help="An extra environment variable for the command (repeatable).",
)
@_seconds_option(
    "--max-outage",
    300,
    "Give up (stop the command, exit 1) when the server is unreachable this long; 0: never.",
)
@_seconds_option("--grace", 5, "After SIGTERM, how long the command has before SIGKILL.")
@click.option("--echo", is_flag=True, help="Also print the command's output here.")
@client_options
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def run_command(
    stream_id: str,
    cwd: Path | None,
    env_pairs: tuple[str, ...],
    max_outage: float,
    grace: float,
    echo: bool,
    url: str,
    token: str | None,
    admin_key: str | None,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND here and publish what it prints to a stream of a remote bloomr:
    stdout lines on the default channel, stderr lines on `errors`, emit-fd lines
    (bloomr.emit) on theirs. Exits with COMMAND's exit code. Needs a token with the
    publish scope (or the admin key):

    \b
    bloomr run --url https://bloomr.example --stream dwd23RWdwE --token bt_... -- ./job.sh

    While the server is unreachable the output waits, in order, and is sent when it is
    back (for up to --max-outage); COMMAND's stdin is not connected, as for the scripts
    `bloomr serve` runs."""
    spec = _spec(command, cwd, parse_env(env_pairs))
    secret = client_secret(token, admin_key)
    opts = RunOptions(max_outage, grace, echo)
    status = asyncio.run(_main(url, secret, stream_id, spec, opts))
    sys.exit(status)
