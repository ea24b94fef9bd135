"""`aigw config check FILE`: validate a config without starting anything."""

from __future__ import annotations

import sys

import click

from aigw.config.load import ConfigError, load_config


@click.group("config")
def config_group() -> None:
    """Work with config files."""


@config_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def check(path: str) -> None:
    """Validate PATH: exits 0 and summarises it, or names the file, field and problem."""
    try:
        config = load_config(path)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    deployments = len(config.models)
    click.echo(f"{path}: ok ({len(config.model_names())} models, {deployments} deployments)")
