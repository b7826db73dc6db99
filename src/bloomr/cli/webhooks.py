"""`bloomr webhooks create|list|show|delete`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import click

from .common import (
    admin_api,
    admin_options,
    api_path,
    delete,
    list_items,
    or_dash,
    print_fields,
    print_json,
)

F = TypeVar("F", bound=Callable[..., Any])


@click.group("webhooks")
def webhooks_group() -> None:
    """Manage a stream's webhooks (needs the admin key)."""


def _path(stream_id: str, webhook_id: str | None = None) -> str:
    one = () if webhook_id is None else (webhook_id,)
    return api_path("streams", stream_id, "webhooks", *one)


def _one_webhook(command: F) -> F:
    """STREAM ID and the admin options: for the commands on one webhook."""
    command = admin_options(command)
    command = click.argument("webhook_id", metavar="ID")(command)
    return click.argument("stream_id", metavar="STREAM")(command)


@webhooks_group.command("create")
@click.argument("stream_id", metavar="STREAM")
@click.argument("target", metavar="URL")
@click.option("--channel", default=None, help='The channel to deliver [default: "" (stdout)].')
@click.option("--secret", default=None, help="The signing secret [default: generated].")
@admin_options
def create_command(
    stream_id: str,
    target: str,
    channel: str | None,
    secret: str | None,
    url: str,
    admin_key: str | None,
    as_json: bool,
) -> None:
    """POST every message of a channel of STREAM to URL (http or https; --url is where
    bloomr is). The signing secret is printed once, alone on stdout; keep it now:

    SECRET=$(bloomr webhooks create dwd23RWdwE https://example.com/hook)
    """
    body: dict[str, Any] = {"url": target}
    if channel is not None:
        body["channel"] = channel
    if secret is not None:
        body["secret"] = secret
    hook = admin_api(url, admin_key).call("POST", _path(stream_id), body)
    if as_json:
        print_json(hook)
        return
    click.echo(
        f"created webhook {hook['id']} ({_channel(hook['channel'])} -> {hook['url']}); "
        "its signing secret, shown only this once:",
        err=True,
    )
    click.echo(hook["secret"])


def _channel(channel: str) -> str:
    return "stdout" if channel == "" else channel


def _last(hook: dict[str, Any]) -> str:
    if hook.get("last_error"):
        return str(hook["last_error"])
    return or_dash(hook.get("last_status"))


@webhooks_group.command("list")
@click.argument("stream_id", metavar="STREAM")
@admin_options
def list_command(stream_id: str, url: str, admin_key: str | None, as_json: bool) -> None:
    """List STREAM's webhooks with their delivery state (never their secrets)."""
    headers = ["ID", "CHANNEL", "PENDING", "DELIVERED", "DROPPED", "URL", "LAST"]
    list_items(url, admin_key, _path(stream_id), as_json, "webhooks", headers, _row)


def _row(hook: dict[str, Any]) -> list[str]:
    return [
        hook["id"],
        _channel(hook["channel"]),
        str(hook["pending"]),
        str(hook["delivered"]),
        str(hook["dropped"]),
        hook["url"],
        _last(hook),
    ]


@webhooks_group.command("show")
@_one_webhook
def show_command(
    stream_id: str, webhook_id: str, url: str, admin_key: str | None, as_json: bool
) -> None:
    """One webhook and its delivery state."""
    hook = admin_api(url, admin_key).call("GET", _path(stream_id, webhook_id))
    if as_json:
        print_json(hook)
        return
    names = ["id", "stream", "url", "channel", "created_at", "pending", "delivered", "dropped"]
    names += ["attempts", "last_status", "last_error", "last_attempt_at", "last_delivery_at"]
    names += ["next_attempt_at", "delivery_id"]
    print_fields([(name, or_dash(hook.get(name))) for name in names])


@webhooks_group.command("delete")
@_one_webhook
def delete_command(
    stream_id: str, webhook_id: str, url: str, admin_key: str | None, as_json: bool
) -> None:
    """Delete a webhook: no delivery starts after this, and what waits is dropped."""
    path = _path(stream_id, webhook_id)
    delete(url, admin_key, path, as_json, "webhook", webhook_id, "deleted")
