"""`bloomr streams create|list|show|update|delete|start|stop|restart`."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .common import (
    add_delete_command,
    admin_api,
    admin_options,
    api_path,
    list_items,
    or_dash,
    parse_env,
    print_fields,
    print_json,
)

F = TypeVar("F", bound=Callable[..., Any])

RESTART_CHOICE = click.Choice(["never", "on-failure", "always"])


@click.group("streams")
def streams_group() -> None:
    """Manage streams (needs the admin key)."""


def _stream_options(f: F) -> F:
    """The fields `create` and `update` share; the script's command comes after `--`."""
    options = [
        click.option("--name", help="A name for people."),
        click.option(
            "--history/--no-history",
            default=None,
            help="Store messages for replay (on by default).",
        ),
        click.option("--max-age", help="How long history keeps messages, e.g. 7d, 12h, 30min."),
        click.option(
            "--max-messages",
            type=click.IntRange(min=1),
            help="How many messages history keeps.",
        ),
        click.option("--restart", type=RESTART_CHOICE, help="When bloomr restarts the script."),
        click.option("--cwd", help="The script's working directory."),
        click.option(
            "--env",
            "env_pairs",
            multiple=True,
            metavar="NAME=VALUE",
            help="An environment variable for the script (repeatable).",
        ),
        click.argument("command", nargs=-1, type=click.UNPROCESSED),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _body(
    name: str | None,
    history: bool | None,
    max_age: str | None,
    max_messages: int | None,
    restart: str | None,
    cwd: str | None,
    env_pairs: tuple[str, ...],
    command: tuple[str, ...],
) -> dict[str, Any]:
    """Only what was given, so `update` changes nothing else."""
    body: dict[str, Any] = {}
    if name is not None:
        body["name"] = name
    if history is not None:
        body["store_history"] = history
    retention = {"max_age": max_age, "max_messages": max_messages}
    if any(v is not None for v in retention.values()):
        body["retention"] = {k: v for k, v in retention.items() if v is not None}
    if restart is not None:
        body["restart"] = restart
    if cwd is not None:
        body["cwd"] = cwd
    if env_pairs:
        body["env"] = parse_env(env_pairs)
    if command:
        body["command"] = list(command)
    return body


# -- text output -------------------------------------------------------------------------


def script_summary(script: dict[str, Any] | None) -> str:
    """`running (pid 42, started ..., restarts 0)`; `-` for a stream without a script."""
    if not script:
        return "-"
    details = []
    if script.get("pid") is not None:
        details.append(f"pid {script['pid']}")
    if script.get("exit_code") is not None:
        details.append(f"exit code {script['exit_code']}")
    if script.get("signal"):
        details.append(f"signal {script['signal']}")
    if script.get("restarts"):
        details.append(f"restarts {script['restarts']}")
    if script.get("started_at"):
        details.append(f"started {script['started_at']}")
    if script.get("backoff_until"):
        details.append(f"next start {script['backoff_until']}")
    state = str(script.get("state", "unknown"))
    return f"{state} ({', '.join(details)})" if details else state


def _command_text(command: list[str] | None) -> str:
    return shlex.join(command) if command else "-"


def _history_text(stream: dict[str, Any]) -> str:
    retention = stream.get("retention") or {}
    keep = f"max age {retention.get('max_age')}, max {retention.get('max_messages')} messages"
    return f"on ({keep})" if stream.get("store_history") else f"off ({keep} when on)"


def _print_stream(stream: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print_json(stream)
    else:
        show_stream(stream)


def show_stream(stream: dict[str, Any]) -> None:
    env = stream.get("env") or {}
    print_fields(
        [
            ("id", stream["id"]),
            ("name", or_dash(stream.get("name"))),
            ("history", _history_text(stream)),
            ("command", _command_text(stream.get("command"))),
            ("cwd", or_dash(stream.get("cwd"))),
            ("env", " ".join(shlex.quote(f"{k}={v}") for k, v in env.items()) or "-"),
            ("restart", or_dash(stream.get("restart"))),
            ("script", script_summary(stream.get("script"))),
            ("created", or_dash(stream.get("created_at"))),
            ("updated", or_dash(stream.get("updated_at"))),
        ]
    )


def _row(stream: dict[str, Any]) -> list[str]:
    retention = stream.get("retention") or {}
    script = stream.get("script")
    return [
        stream["id"],
        or_dash(stream.get("name")),
        "on" if stream.get("store_history") else "off",
        f"{retention.get('max_age')}/{retention.get('max_messages')}",
        str(script.get("state", "-")) if script else "-",
        _command_text(stream.get("command")),
    ]


# -- commands ----------------------------------------------------------------------------


@streams_group.command("create")
@_stream_options
@admin_options
def create_command(
    url: str, admin_key: str | None, as_json: bool, env_pairs: tuple[str, ...], **fields: Any
) -> None:
    """Create a stream; prints its id. A command after `--` becomes the stream's script:

    bloomr streams create --name job -- python -u job.py --fast
    """
    body = _body(env_pairs=env_pairs, **fields)
    stream = admin_api(url, admin_key).call("POST", "/api/streams", body)
    if as_json:
        print_json(stream)
        return
    click.echo(stream["id"])
    click.echo(f"created stream {stream['id']}", err=True)


@streams_group.command("list")
@admin_options
def list_command(url: str, admin_key: str | None, as_json: bool) -> None:
    """List every stream."""
    headers = ["ID", "NAME", "HISTORY", "RETENTION", "SCRIPT", "COMMAND"]
    list_items(url, admin_key, "/api/streams", as_json, "streams", headers, _row)


@streams_group.command("show")
@click.argument("stream_id", metavar="ID")
@admin_options
def show_command(stream_id: str, url: str, admin_key: str | None, as_json: bool) -> None:
    """Show a stream, with its script's status."""
    stream = admin_api(url, admin_key).call("GET", api_path("streams", stream_id))
    _print_stream(stream, as_json)


@streams_group.command("update")
@click.argument("stream_id", metavar="ID")
@_stream_options
@click.option("--no-command", is_flag=True, help="Remove the stream's script.")
@click.option("--clear-env", is_flag=True, help="Remove the script's environment variables.")
@click.option("--clear-cwd", is_flag=True, help="Run the script in bloomr's directory.")
@admin_options
def update_command(
    stream_id: str,
    url: str,
    admin_key: str | None,
    as_json: bool,
    env_pairs: tuple[str, ...],
    no_command: bool,
    clear_env: bool,
    clear_cwd: bool,
    **fields: Any,
) -> None:
    """Change a stream's fields; only the options given change. `--env` replaces all
    the script's variables; a command after `--` replaces its command."""
    body = _body(env_pairs=env_pairs, **fields)
    _clear(body, "command", no_command, "--no-command")
    _clear(body, "env", clear_env, "--clear-env")
    _clear(body, "cwd", clear_cwd, "--clear-cwd")
    if not body:
        raise click.UsageError("nothing to change: give at least one option")
    stream = admin_api(url, admin_key).call("PATCH", api_path("streams", stream_id), body)
    _print_stream(stream, as_json)


def _clear(body: dict[str, Any], field: str, flag: bool, option: str) -> None:
    if not flag:
        return
    if field in body:
        raise click.UsageError(f"{option} contradicts a new {field}")
    body[field] = None


add_delete_command(
    streams_group, "delete", "streams", "stream", "deleted",
    "Delete a stream, its history and its script; its clients are disconnected.",
)  # fmt: skip


def _control_command(action: str, done: str, doc: str) -> click.Command:
    @click.argument("stream_id", metavar="ID")
    @admin_options
    def command(stream_id: str, url: str, admin_key: str | None, as_json: bool) -> None:
        path = api_path("streams", stream_id, action)
        stream = admin_api(url, admin_key).call("POST", path)
        if as_json:
            print_json(stream)
            return
        status = script_summary(stream.get("script")) if isinstance(stream, dict) else "-"
        click.echo(f"{done} the script of stream {stream_id}: {status}")

    command.__doc__ = doc
    return streams_group.command(action)(command)


_control_command("start", "started", "Start the stream's script.")
_control_command(
    "stop", "stopped", "Stop the stream's script (SIGTERM, then SIGKILL after a grace period)."
)
_control_command("restart", "restarted", "Stop the stream's script if it runs, then start it.")
