"""`aigw config check FILE`: validate a config without starting anything."""

from __future__ import annotations

import sys

import click

from aigw.cli.serve import open_to_all
from aigw.config.load import ConfigError, load_config


@click.group("config")
def config_group() -> None:
    """Work with config files."""


@config_group.command("check")
@click.argument("path", type=click.Path(dir_okay=False))
def check(path: str) -> None:
    """Validate PATH: exits 0 and summarises it, or names the file, field and problem.

    The app is built too (no socket, file or process: ~0.1 s), so what only building finds (a guardrails
    rule's unknown key, an unregistered classifier, a cache the stores cannot serve) is found here, as
    ``aigw serve`` would, not at the first start."""
    from aigw.app import build_app

    try:
        config = load_config(path)
        build_app(config)
    except ConfigError as exc:
        click.echo(str(exc) if str(exc).startswith(path) else f"{path}: {exc}", err=True)
        sys.exit(2)
    except ValueError as exc:  # a setup the file allows but the app cannot build
        click.echo(f"{path}: cannot start: {exc}", err=True)
        sys.exit(2)
    if refusal := open_to_all(config):  # what `aigw serve` refuses before it builds anything
        click.echo(f"{path}: {refusal}", err=True)
        sys.exit(2)
    deployments = len(config.models)
    click.echo(f"{path}: ok ({len(config.model_names())} models, {deployments} deployments)")
