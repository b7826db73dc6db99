"""`bloomr serve`."""

from __future__ import annotations

from pathlib import Path

import click

from ..config import DEFAULT_DATA_DIR, Settings


@click.command("serve")
@click.option("--host", default="127.0.0.1", envvar="BLOOMR_HOST", show_default=True)
@click.option(
    "--port",
    default=8080,
    type=int,
    envvar="BLOOMR_PORT",
    show_default=True,
    help="0 picks a free port (printed at start).",
)
@click.option(
    "--data-dir",
    default=DEFAULT_DATA_DIR,
    type=click.Path(path_type=Path),
    envvar="BLOOMR_DATA_DIR",
    show_default=True,
)
@click.option(
    "--admin-key", default=None, help="Defaults to BLOOMR_ADMIN_KEY, else data-dir/admin.key."
)
@click.option("--demo", is_flag=True, help="Create a demo stream that ticks every second.")
@click.option(
    "--webhook-allow-private",
    is_flag=True,
    envvar="BLOOMR_WEBHOOK_ALLOW_PRIVATE",
    show_envvar=True,
    help="Let webhooks call loopback, private and link-local addresses.",
)
def serve_command(
    host: str,
    port: int,
    data_dir: Path,
    admin_key: str | None,
    demo: bool,
    webhook_allow_private: bool,
) -> None:
    """Run bloomr: the HTTP API and Socket.IO on one port, SQLite in --data-dir."""
    from ..server import serve

    settings = Settings(
        host=host,
        port=port,
        data_dir=data_dir,
        admin_key=admin_key,
        webhook_allow_private=webhook_allow_private,
    )
    on_ready = None
    if demo:
        from ..demo import run_demo

        on_ready = run_demo
    serve(settings, on_ready)
