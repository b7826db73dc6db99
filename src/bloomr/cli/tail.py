"""`bloomr tail STREAM`: a stream's messages, live in the terminal, on `bloomr.client`.

The client resumes a dropped connection right after the last message it received,
so nothing is missed or printed twice. Beside the messages, the script's fate goes to
standard error: a second, live-only subscription to the `errors` channel prints the
script's stderr lines and its crashes (`script crashed (exit code 3)`), which any token
holder may read; with an admin key at hand, the stream's `script.state` is also
polled and each change printed (`script state: crashed (exit code 3)`)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from typing import TYPE_CHECKING, Any

import click

from .common import (
    CliError,
    client_options,
    client_secret,
    data_dir_default,
    read_admin_key,
    stdout_closed,
    tls_verify,
    warn,
)

if TYPE_CHECKING:
    from ..client import BloomrWarning, Message, Subscription

STATE_POLL = 1.0  # seconds between two looks at the script's state
# the client's own notices are sentences already; the server's get their code
CLIENT_NOTICES = frozenset({"connection_lost", "reconnected"})
QUIET_STATES = frozenset({"starting", "stopping"})  # on their way to another state


def format_message(message: Message, metadata: bool) -> str:
    """The line printed for one message: strings as they are, other JSON compact."""
    value = message.to_json() if metadata else message.data
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def format_error_line(data: Any) -> str:
    """A message of the `errors` channel, for standard error: the runner's events
    in words, the script's stderr lines as they are."""
    if isinstance(data, dict) and data.get("event") == "exit":  # sent when it failed
        if data.get("signal"):
            return f"script crashed (killed by {data['signal']})"
        return f"script crashed (exit code {data.get('code')})"
    if isinstance(data, dict) and data.get("event") == "spawn_error":
        return f"script could not start: {data.get('message')}"
    if isinstance(data, str):
        return data
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def describe_state(script: dict[str, Any]) -> str | None:
    """`crashed (exit code 3)`; None for the passing states."""
    state = str(script.get("state"))
    if state in QUIET_STATES:
        return None
    details = []
    if state == "running" and script.get("pid") is not None:
        details.append(f"pid {script['pid']}")
    if state in ("crashed", "exited", "backoff"):
        if script.get("signal"):
            details.append(f"signal {script['signal']}")
        elif script.get("exit_code") is not None:
            details.append(f"exit code {script['exit_code']}")
    if script.get("restarts"):
        details.append(f"restarts {script['restarts']}")
    return f"{state} ({', '.join(details)})" if details else state


class Tail:
    """Prints one subscription's messages until stopped, refused, or live (--until-live)."""

    def __init__(self, url: str, stream: str, secret: str, admin_key: str | None) -> None:
        self.url = url.rstrip("/")
        self.stream = stream
        self.secret = secret
        self.admin_key = admin_key
        self.stop = asyncio.Event()
        self.stdout_gone = False
        self._flush_pending = False

    async def run(self, subscription: Subscription, metadata: bool, watch: bool) -> None:
        """Print until stopped; `watch`: also say what happens to the script."""
        from ..client import BloomrError

        watchers = []
        if watch and subscription.channel != "errors":  # else they are the output itself
            watchers.append(asyncio.create_task(self._script_errors()))
        if watch and self.admin_key:
            watchers.append(asyncio.create_task(self._script_state(self.admin_key)))
        printing = asyncio.create_task(self._print(subscription, metadata))
        stop = asyncio.create_task(self.stop.wait())
        try:
            await asyncio.wait({printing, stop}, return_when=asyncio.FIRST_COMPLETED)
            if printing.done():
                printing.result()
        except BloomrError as exc:
            message = exc.message if exc.code == "unreachable" else f"{exc.code}: {exc.message}"
            raise CliError(message) from None
        finally:
            for task in (printing, stop, *watchers):
                task.cancel()
            await asyncio.gather(printing, stop, *watchers, return_exceptions=True)
            await subscription.aclose()

    async def _print(self, subscription: Subscription, metadata: bool) -> None:
        async for message in subscription:
            self._write(format_message(message, metadata))
            if self.stop.is_set():
                return

    def on_warning(self, warning: BloomrWarning) -> None:
        if warning.code in CLIENT_NOTICES:
            warn(warning.message)
        else:
            warn(f"{warning.code}: {warning.message}")

    async def _script_errors(self) -> None:
        """The `errors` channel, live, to standard error. It ends quietly when refused
        (a token limited to other channels): the tail itself goes on."""
        from ..client import BloomrError, subscribe

        # its drops are the main subscription's, so its notices are not repeated
        errors = subscribe(
            self.url, self.stream, self.secret, channel="errors", on_warning=lambda _: None
        )
        with contextlib.suppress(BloomrError):
            async with errors:
                async for message in errors:
                    click.echo(format_error_line(message.data), err=True)

    async def _script_state(self, key: str) -> None:
        """Polls the stream's script state with the admin key, printing each change
        (and the first one seen, unless the script is running)."""
        import httpx

        headers = {"Authorization": f"Bearer {key}"}
        async with httpx.AsyncClient(
            base_url=self.url, headers=headers, timeout=10, verify=tls_verify(self.url)
        ) as http:
            last: str | None = None
            while True:
                try:
                    response = await http.get(f"/api/streams/{self.stream}")
                except httpx.HTTPError:
                    response = None  # the server is away: the subscription says so
                if response is not None:
                    if response.status_code != 200:
                        return  # not an admin key after all, or the stream is gone
                    script = response.json().get("script")
                    if script is None:
                        return  # no command: nothing to watch
                    seen = describe_state(script)
                    if seen is not None and seen != last:
                        if last is not None or script.get("state") != "running":
                            click.echo(f"script state: {seen}", err=True)
                        last = seen
                await asyncio.sleep(STATE_POLL)

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


async def _main(tail: Tail, subscription_args: dict[str, Any], metadata: bool) -> None:
    from ..client import subscribe

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, tail.stop.set)
    subscription = subscribe(
        tail.url, tail.stream, tail.secret, on_warning=tail.on_warning, **subscription_args
    )
    try:
        await tail.run(subscription, metadata, watch=not subscription_args["until_live"])
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
@click.option("--until-live", is_flag=True, help="Exit (0) once the replay is over.")
@click.option("--backfill", is_flag=True, help="When the replay is truncated, fetch the rest too.")
@click.option("--metadata", is_flag=True, help="Print each message's envelope JSON.")
@client_options
def tail_command(
    stream_id: str,
    channel: str,
    replay: str | None,
    replay_limit: int | None,
    until_live: bool,
    backfill: bool,
    metadata: bool,
    url: str,
    token: str | None,
    admin_key: str | None,
) -> None:
    """Print STREAM's messages as they come (Ctrl-C to stop): strings as they are,
    other JSON compact. Needs a token with the subscribe scope, or the admin key.

    A dropped connection is resumed where it stopped, without loss or repeat.
    Standard error tells what happens to the stream's script: its `errors` channel
    (stderr lines, and "script crashed (exit code N)" or "(killed by SIGNAL)"),
    and, when an admin key is at hand (--admin-key, BLOOMR_ADMIN_KEY or the data
    dir's admin.key), each change of its state ("script state: stopped", "crashed
    (exit code 1)", "exited (exit code 0)", "running (pid N)"). None of this with
    --until-live."""
    import importlib.util

    if importlib.util.find_spec("aiohttp") is None:
        raise CliError("bloomr tail needs aiohttp: pip install 'python-socketio[asyncio_client]'")
    key = admin_key or read_admin_key(data_dir_default())
    tail = Tail(url, stream_id, client_secret(token, admin_key), key)
    args = {
        "channel": channel,
        "replay": replay or None,
        "replay_limit": replay_limit,
        "until_live": until_live,
        "backfill": backfill,
    }
    asyncio.run(_main(tail, args, metadata))
    if tail.stdout_gone:
        stdout_closed()
