"""`bloomr tokens create|list|revoke`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import click

from .common import add_delete_command, admin_api, admin_options, list_items, or_dash, print_json


@click.group("tokens")
def tokens_group() -> None:
    """Manage client tokens (needs the admin key)."""


def _expires_in(value: str) -> str:
    """`--expires-in 1h` -> the ISO 8601 UTC moment that is."""
    from ..replay import parse_age_ms

    ms = parse_age_ms(value)
    if ms is None:
        raise click.BadParameter(
            f"{value!r} is not an age such as 30s, 15min, 1h or 7d", param_hint="'--expires-in'"
        )
    moment = datetime.now(UTC) + timedelta(milliseconds=ms)
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _streams(streams: tuple[str, ...], all_streams: bool) -> list[str]:
    if all_streams and streams:
        raise click.UsageError("give --stream or --all, not both")
    if all_streams:
        return ["*"]
    if not streams:
        raise click.UsageError("say which streams the token is for: --stream ID or --all")
    return list(streams)


@tokens_group.command("create")
@click.option(
    "--stream",
    "streams",
    multiple=True,
    metavar="ID",
    help="A stream it is valid for (repeatable).",
)
@click.option(
    "--all", "all_streams", is_flag=True, help="Valid for every stream, present and future."
)
@click.option(
    "--scope",
    "scopes",
    multiple=True,
    type=click.Choice(["subscribe", "publish"]),
    help="What it allows (repeatable) [default: subscribe].",
)
@click.option("--name", help="A name for people.")
@click.option("--expires-in", metavar="AGE", help="Expire after this long, e.g. 1h or 30d.")
@click.option("--expires-at", metavar="ISO", help="Expire at this moment, e.g. 2030-01-01T00:00Z.")
@admin_options
def create_command(
    streams: tuple[str, ...],
    all_streams: bool,
    scopes: tuple[str, ...],
    name: str | None,
    expires_in: str | None,
    expires_at: str | None,
    url: str,
    admin_key: str | None,
    as_json: bool,
) -> None:
    """Create a token. Its secret is printed once, alone on stdout; keep it now:

    TOKEN=$(bloomr tokens create --stream dwd23RWdwE --scope subscribe)
    """
    if expires_in and expires_at:
        raise click.UsageError("give --expires-in or --expires-at, not both")
    body: dict[str, Any] = {"streams": _streams(streams, all_streams)}
    if scopes:
        body["scopes"] = list(dict.fromkeys(scopes))
    if name is not None:
        body["name"] = name
    if expires_in or expires_at:
        body["expires_at"] = _expires_in(expires_in) if expires_in else expires_at
    token = admin_api(url, admin_key).call("POST", "/api/tokens", body)
    if as_json:
        print_json(token)
        return
    expiry = f", expires {token['expires_at']}" if token.get("expires_at") else ""
    click.echo(
        f"created token {token['id']} ({','.join(token['scopes'])} on "
        f"{_streams_text(token['streams'])}{expiry}); its secret, shown only this once:",
        err=True,
    )
    click.echo(token["token"])


def _streams_text(streams: list[str]) -> str:
    return "all streams" if streams == ["*"] else ",".join(streams)


@tokens_group.command("list")
@admin_options
def list_command(url: str, admin_key: str | None, as_json: bool) -> None:
    """List tokens (never their secrets)."""
    headers = ["ID", "NAME", "STREAMS", "SCOPES", "EXPIRES", "CREATED"]
    list_items(url, admin_key, "/api/tokens", as_json, "tokens", headers, _row)


def _row(token: dict[str, Any]) -> list[str]:
    return [
        token["id"],
        or_dash(token.get("name")),
        _streams_text(token["streams"]),
        ",".join(token["scopes"]),
        token.get("expires_at") or "never",
        or_dash(token.get("created_at")),
    ]


add_delete_command(
    tokens_group, "revoke", "tokens", "token", "revoked",
    "Revoke a token; its live connections end within a second.",
)  # fmt: skip
