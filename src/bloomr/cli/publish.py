"""`bloomr publish STREAM [DATA]`: one message, or one per stdin line, in batches."""

from __future__ import annotations

import json
import queue
import sys
import threading
import time
from collections.abc import Iterator
from typing import IO, Any, Literal

import click

from .common import (
    Api,
    CliError,
    api_path,
    client_options,
    client_secret,
    json_option,
    print_json,
)

BATCH_MESSAGES = 500
BATCH_BYTES = 4 * 1024 * 1024  # well under the server's default 10 MiB body limit
LINGER = 0.1  # seconds a stdin line waits for company before it is sent

Parse = Literal["auto", "json", "text"]


class NotJSON(ValueError):
    pass


def _reject_constant(name: str) -> Any:
    raise NotJSON(f"{name} is not JSON")  # Python's json accepts NaN and Infinity; JSON does not


def parse_data(text: str, parse: Parse) -> Any:
    """`auto`: JSON if it parses, else the text as a string; `json`: JSON or NotJSON."""
    if parse == "text":
        return text
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except ValueError as exc:
        if parse == "json":
            raise NotJSON(str(exc)) from None
        return text


def stdin_batches(source: IO[bytes], size: int, linger: float) -> Iterator[list[str]]:
    """Lines of `source` in batches of at most `size` lines / BATCH_BYTES: a batch goes
    as soon as it is full or no new line came for `linger` seconds, so a slow pipe
    (`tail -f log | bloomr publish S`) is published as it goes."""
    lines: queue.Queue[str | None] = queue.Queue(maxsize=4 * size)
    threading.Thread(target=_read_lines, args=(source, lines), daemon=True).start()
    while (line := lines.get()) is not None:
        batch, total = [line], len(line)
        deadline = time.monotonic() + linger
        while len(batch) < size and total < BATCH_BYTES:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                yield batch
                return
            batch.append(line)
            total += len(line)
        yield batch


def _read_lines(source: IO[bytes], lines: queue.Queue[str | None]) -> None:
    try:
        for raw in source:
            text = raw.decode("utf-8", "replace").removesuffix("\n").removesuffix("\r")
            lines.put(text)
    finally:
        lines.put(None)


@click.command("publish")
@click.argument("stream_id", metavar="STREAM")
@click.argument("data", required=False)
@click.option("--channel", default="", help="The channel [default: standard output, '']")
@click.option(
    "--parse",
    type=click.Choice(["auto", "json", "text"]),
    default="auto",
    show_default=True,
    help="auto: JSON if it parses, else a string; json: must be JSON; text: always a string.",
)
@client_options
@json_option
def publish_command(
    stream_id: str,
    data: str | None,
    channel: str,
    parse: Parse,
    url: str,
    token: str | None,
    admin_key: str | None,
    as_json: bool,
) -> None:
    """Publish DATA to STREAM, or with no DATA each line of stdin as one message.
    Needs a token with the publish scope, or the admin key."""
    api = Api(url, client_secret(token, admin_key))
    path = api_path("streams", stream_id, "messages")
    if data is not None:
        try:
            value = parse_data(data, parse)
        except NotJSON as exc:
            raise click.BadParameter(f"not valid JSON: {exc}", param_hint="'DATA'") from None
        ids = _send(api, path, [{"channel": channel, "data": value}], 0)
    else:
        if sys.stdin.isatty():
            click.echo("reading messages from stdin, one per line; Ctrl-D ends", err=True)
        ids = _publish_lines(api, path, channel, parse)
    if as_json:
        print_json({"ids": ids})
    else:
        click.echo(f"published {len(ids)} message{'' if len(ids) == 1 else 's'}")


def _publish_lines(api: Api, path: str, channel: str, parse: Parse) -> list[str]:
    ids: list[str] = []
    line_number = 0
    for batch in stdin_batches(sys.stdin.buffer, BATCH_MESSAGES, LINGER):
        items = []
        for text in batch:
            line_number += 1
            try:
                items.append({"channel": channel, "data": parse_data(text, parse)})
            except NotJSON as exc:
                if items:  # the lines before it go, as if it ended the input
                    ids += _send(api, path, items, len(ids))
                raise CliError(
                    f"stdin line {line_number} is not valid JSON ({exc}); "
                    f"the {len(ids)} lines before it were published"
                ) from None
        ids += _send(api, path, items, len(ids))
    return ids


def _send(api: Api, path: str, items: list[dict[str, Any]], published: int) -> list[str]:
    body = json.dumps(items, ensure_ascii=False).encode()
    try:
        doc = api.call("POST", path, content=body)
    except CliError as exc:
        if published:
            raise CliError(
                f"{exc.message} ({published} messages were published before it)"
            ) from None
        raise
    return list(doc["ids"])
