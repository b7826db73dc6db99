"""The `bloomr` command line: thin commands that call the app or its HTTP API."""

from __future__ import annotations

import click

from .serve import serve_command


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="bloomr")
def cli() -> None:
    """bloomr: run scripts and stream what they print, live and with replay."""


cli.add_command(serve_command)


def main() -> None:
    cli(prog_name="bloomr")
