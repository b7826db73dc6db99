"""The `bloomr` command line: thin commands that call the app or its HTTP API.

Each command group lives in its own module, imported only when that command runs, so
`bloomr publish` never pays for the server's imports."""

from __future__ import annotations

import importlib
import os
import sys

import click

from .common import CliError

# name -> (module, attribute): one module per command group
COMMANDS = {
    "serve": ("serve", "serve_command"),
    "streams": ("streams", "streams_group"),
    "tokens": ("tokens", "tokens_group"),
    "webhooks": ("webhooks", "webhooks_group"),
    "publish": ("publish", "publish_command"),
    "tail": ("tail", "tail_command"),
    "run": ("run", "run_command"),
    "admin-key": ("admin", "admin_key_command"),
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return super().get_command(ctx, cmd_name)
        module, attribute = COMMANDS[cmd_name]
        command = getattr(importlib.import_module(f".{module}", __name__), attribute)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bloomr")
def cli() -> None:
    """bloomr: run scripts and stream what they print, live and with replay.

    Client commands find the server in BLOOMR_URL and the admin key in BLOOMR_ADMIN_KEY
    (else ./bloomr-data/admin.key); `bloomr COMMAND --help` tells more."""


def main() -> None:
    """Errors end in one line on stderr, never a traceback (BLOOMR_DEBUG=1 shows it)."""
    try:
        cli(prog_name="bloomr")
    except CliError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except Exception as exc:  # a bug of ours: still one line, unless asked for more
        if os.environ.get("BLOOMR_DEBUG"):
            raise
        print(f"error: internal: {type(exc).__name__}: {exc}", file=sys.stderr)
        sys.exit(1)
