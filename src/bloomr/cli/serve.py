"""`bloomr serve`."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..bounds import Bound, Bounds, bound_fields
from ..config import (
    DEFAULT_CLUSTER_NAME,
    DEFAULT_DATA_DIR,
    DEFAULT_MAX_BODY,
    Settings,
    check_cluster_name,
)
from .common import CliError

# the drivers `pip install 'bloomr[cluster]'` brings (pyproject.toml)
CLUSTER_DRIVERS = ("redis", "asyncpg")


def _require_cluster_extra() -> None:
    """One line naming the extra, rather than a ModuleNotFoundError deep in the start."""
    for module in CLUSTER_DRIVERS:
        try:
            importlib.import_module(module)
        except ImportError:
            raise CliError(
                "cluster mode needs the cluster extra: pip install 'bloomr[cluster]'"
            ) from None


# Settings read only from the environment (config.py), listed under the options. `\b`
# keeps click from rewrapping the table.
ENVIRONMENT = """\b
Also read from the environment:
  BLOOMR_TRIM_INTERVAL      seconds between retention trims [30]
  BLOOMR_SCRIPT_GRACE       seconds from SIGTERM to SIGKILL when a script stops [5]
  BLOOMR_LEASE_TTL          cluster: seconds a dead node keeps its scripts and webhooks [10]
  BLOOMR_GATEWAY            Socket.IO implementation: native or python-socketio [native]
  BLOOMR_DEBUG              1: a traceback instead of the one-line error
"""


def _cluster_name(ctx: click.Context, param: click.Parameter, value: str) -> str:
    try:
        return check_cluster_name(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc).removeprefix("invalid cluster name ")) from None


def _bound_options(command: Callable[..., None]) -> Callable[..., None]:
    """The limits of `bounds.py` and the subscriber backlog, each a flag with its
    environment variable (listed in --help)."""
    sizes = [
        ("max_body", int, DEFAULT_MAX_BODY, Bound("--max-body",
         "Largest request body in bytes (413).")),
        ("backlog_messages", int, 10_000, Bound("--backlog-messages",
         "Most messages queued for one connection before it is a slow consumer.")),
        ("backlog_bytes", int, 16 * 1024 * 1024, Bound("--backlog-bytes",
         "Most bytes queued for one connection (replay and Engine.IO replies included).")),
    ]  # fmt: skip
    options = [
        click.option(bound.flag, name, type=kind, default=default, envvar=bound.env,
                     show_envvar=True, show_default=True, help=bound.help)
        for name, kind, default, bound in sizes + bound_fields()
    ]  # fmt: skip
    for option in reversed(options):
        command = option(command)
    return command


@click.command("serve", epilog=ENVIRONMENT)
@click.option(
    "--host", default="127.0.0.1", envvar="BLOOMR_HOST", show_default=True, show_envvar=True
)
@click.option(
    "--port",
    default=8080,
    type=int,
    envvar="BLOOMR_PORT",
    show_default=True,
    show_envvar=True,
    help="0 picks a free port (printed at start).",
)
@click.option(
    "--data-dir",
    default=DEFAULT_DATA_DIR,
    type=click.Path(path_type=Path),
    envvar="BLOOMR_DATA_DIR",
    show_default=True,
    show_envvar=True,
    help="Embedded mode: the SQLite database, admin.key and the lock of the one process.",
)
@click.option(
    "--admin-key",
    default=None,
    envvar="BLOOMR_ADMIN_KEY",
    show_envvar=True,
    help="Else data-dir/admin.key (embedded) or the one the cluster keeps.",
)
@click.option("--demo", is_flag=True, help="Create a demo stream that ticks every second.")
@click.option(
    "--webhook-allow-private",
    is_flag=True,
    envvar="BLOOMR_WEBHOOK_ALLOW_PRIVATE",
    show_envvar=True,
    help="Let webhooks call loopback, private and link-local addresses.",
)
@click.option(
    "--redis",
    "redis_url",
    envvar="BLOOMR_REDIS_URL",
    show_envvar=True,
    metavar="URL",
    help="Cluster mode: history and fan-out in this Redis (needs --database).",
)
@click.option(
    "--database",
    "database_url",
    envvar="BLOOMR_DATABASE_URL",
    show_envvar=True,
    metavar="URL",
    help="Cluster mode: streams, tokens, webhooks and leases in this PostgreSQL (needs --redis).",
)
@click.option(
    "--cluster-name",
    default=DEFAULT_CLUSTER_NAME,
    envvar="BLOOMR_CLUSTER_NAME",
    show_default=True,
    show_envvar=True,
    callback=_cluster_name,
    help="Cluster mode: the Redis key prefix and PostgreSQL schema ([a-z_][a-z0-9_]*), "
    "so several clusters can share one Redis and one PostgreSQL.",
)
@click.option(
    "--cors-origin",
    "cors_origins",
    multiple=True,
    metavar="ORIGIN",
    help="Let pages from ORIGIN (e.g. https://app.example.com, or * for any) call the "
    "admin API; repeatable. Default: BLOOMR_CORS_ORIGINS (comma-separated), else none. "
    "The client endpoints (polling, SSE, publish) answer any origin.",
)
@_bound_options
def serve_command(
    host: str,
    port: int,
    data_dir: Path,
    admin_key: str | None,
    demo: bool,
    webhook_allow_private: bool,
    redis_url: str | None,
    database_url: str | None,
    cluster_name: str,
    cors_origins: tuple[str, ...],
    max_body: int,
    backlog_messages: int,
    backlog_bytes: int,
    **bounds: Any,
) -> None:
    """Run bloomr: the HTTP API and Socket.IO on one port, SQLite in --data-dir; or, with
    --redis and --database, one node of a cluster (run as many as you like)."""
    if bool(redis_url) != bool(database_url):
        missing = "--database (BLOOMR_DATABASE_URL)" if redis_url else "--redis (BLOOMR_REDIS_URL)"
        raise CliError(f"cluster mode needs both --redis and --database: {missing} is missing")
    if redis_url:
        _require_cluster_extra()
    from ..server import serve

    settings = Settings(
        host=host,
        port=port,
        data_dir=data_dir,
        admin_key=admin_key,
        webhook_allow_private=webhook_allow_private,
        redis_url=redis_url or None,
        database_url=database_url or None,
        cluster_name=cluster_name,
        max_body_bytes=max_body,
        backlog_messages=backlog_messages,
        backlog_bytes=backlog_bytes,
        bounds=Bounds(**bounds),
    )
    if cors_origins:
        settings.admin_cors_origins = cors_origins
    on_ready = None
    if demo:
        from ..demo import run_demo

        on_ready = run_demo
    serve(settings, on_ready)
