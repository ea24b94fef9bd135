"""The `aigw` command: serve, worker, config check, and the admin commands."""

from __future__ import annotations

import click

from aigw.cli.config_cmd import config_group
from aigw.cli.serve import serve


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aigw")
def cli() -> None:
    """aigw: one OpenAI- and Anthropic-compatible API in front of many LLM providers."""


cli.add_command(serve)
cli.add_command(config_group)


def main() -> None:
    cli()
