"""The `aigw` command: serve, config check, db, and the admin commands (tenants, projects, keys, spend, cache)."""

from __future__ import annotations

import click

from aigw.cli.cache import cache_group
from aigw.cli.config_cmd import config_group
from aigw.cli.db import db_group
from aigw.cli.keys import keys_group
from aigw.cli.projects import projects_group
from aigw.cli.serve import serve
from aigw.cli.spend import spend
from aigw.cli.tenants import tenants_group


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="aigw")
def cli() -> None:
    """aigw: one OpenAI- and Anthropic-compatible API in front of many LLM providers."""


cli.add_command(serve)
cli.add_command(config_group)
cli.add_command(tenants_group)
cli.add_command(projects_group)
cli.add_command(keys_group)
cli.add_command(spend)
cli.add_command(cache_group)
cli.add_command(db_group)


def main() -> None:
    cli()
