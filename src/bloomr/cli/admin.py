"""`bloomr admin-key`: print the admin key the server uses."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..config import DEFAULT_DATA_DIR
from .common import CliError, read_admin_key


@click.command("admin-key")
@click.option(
    "--data-dir",
    type=click.Path(path_type=Path, file_okay=False),
    default=DEFAULT_DATA_DIR,
    envvar="BLOOMR_DATA_DIR",
    show_default=True,
    show_envvar=True,
    help="Where `bloomr serve` keeps its data (and admin.key).",
)
def admin_key_command(data_dir: Path) -> None:
    """Print the admin key: BLOOMR_ADMIN_KEY if set, else the one in DATA_DIR/admin.key
    (a cluster stores only a hash of a generated key: it cannot be printed again)."""
    key = os.environ.get("BLOOMR_ADMIN_KEY") or read_admin_key(data_dir)
    if not key and os.environ.get("BLOOMR_DATABASE_URL"):
        raise CliError(
            "no admin key: BLOOMR_ADMIN_KEY is not set, and a cluster keeps only a hash of "
            "the key its first node generated (printed once in that node's output); set "
            "BLOOMR_ADMIN_KEY on every node to choose one"
        )
    if not key:
        raise CliError(
            f"no admin key: BLOOMR_ADMIN_KEY is not set and {data_dir / 'admin.key'} does not "
            "exist (the first `bloomr serve` creates it)"
        )
    click.echo(key)
