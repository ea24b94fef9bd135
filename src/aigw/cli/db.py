"""`aigw db upgrade|status`: schema migrations, run against the database directly (not over HTTP).

Embedded SQLite migrates itself on start; with PostgreSQL run ``aigw db upgrade``
once per release, before (or while) the new replicas start.
"""

from __future__ import annotations

import asyncio
import os
import sys

import click

from aigw.config.load import ConfigError, load_config
from aigw.stores.database import open_database
from aigw.stores.database_name import shown_database
from aigw.stores.sqlite.db import path_of


def _url(config_path: str | None, database_url: str | None) -> str:
    if database_url:
        return database_url
    try:
        return load_config(config_path).database_url
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)


def _missing_file(url: str) -> bool:
    """A SQLite database_url whose file does not exist yet, in a directory that does (``status`` must not make
    the file)."""
    if not url.startswith("sqlite:") or path_of(url) == ":memory:":
        return False
    path = os.path.abspath(path_of(url))
    return not os.path.exists(path) and os.path.isdir(os.path.dirname(path))  # else opening it says why not


async def _run(url: str, apply: bool) -> tuple[list[int], list[int]]:
    if not apply and _missing_file(url):
        url = "sqlite://:memory:"  # a new database: every migration is pending
    db = open_database(url)
    await db.open()
    try:
        if apply:
            return await db.migrate(), []
        return [], await db.pending_migrations()
    finally:
        await db.close()


def _upgrade_request_log(url: str) -> str:
    """SQLite's request log is a file of its own beside the database (PostgreSQL's day tables are in the database,
    upgraded by its migrations): its day tables get what they lack, as the gateway's start would give them."""
    from aigw.observability.request_log_sql import upgrade_sqlite_log
    from aigw.observability.setup import sqlite_request_log_path

    path = sqlite_request_log_path(url)
    if not path or not os.path.exists(path):  # no request log yet: its day tables will be made as they are now
        return ""
    changed = asyncio.run(upgrade_sqlite_log(path))
    return f"request log {os.path.abspath(path)}: upgraded {changed} day tables" if changed else ""


@click.group("db")
def db_group() -> None:
    """The database: schema migrations."""


_config = click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
_dburl = click.option("--database-url", default=None, help="Override the config's database_url.")


@db_group.command("upgrade")
@_config
@_dburl
def upgrade(config_path: str | None, database_url: str | None) -> None:
    """Apply every pending migration."""
    url = _url(config_path, database_url)
    try:
        applied, _ = asyncio.run(_run(url, apply=True))
        request_log = _upgrade_request_log(url)
    except Exception as exc:
        click.echo(f"error: migration failed: {type(exc).__name__}: {exc} ({shown_database(url)})", err=True)
        sys.exit(1)
    done = [f"applied migrations {applied}"] if applied else []
    if request_log:
        done.append(request_log)
    click.echo(f"{shown_database(url)}: " + ("; ".join(done) or "database is up to date"))


@db_group.command("status")
@_config
@_dburl
def status(config_path: str | None, database_url: str | None) -> None:
    """List pending migrations (exit 1 when some are pending, 2 when the database cannot be read)."""
    url = _url(config_path, database_url)
    try:
        _, pending = asyncio.run(_run(url, apply=False))
    except Exception as exc:  # an unusable URL, a database that is down: one line, not a traceback
        click.echo(f"error: cannot read the database: {type(exc).__name__}: {exc} ({shown_database(url)})", err=True)
        sys.exit(2)
    if pending:
        new = " (no database yet)" if _missing_file(url) else ""
        click.echo(f"{shown_database(url)}{new}: pending migrations {pending}: run `aigw db upgrade`")
        sys.exit(1)
    click.echo(f"{shown_database(url)}: database is up to date")
