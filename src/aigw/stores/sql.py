"""The small SQL surface both durable backends share, and their versioned migrations.

Queries are written once with ``?`` placeholders; the PostgreSQL adapter numbers
them. Each backend keeps its migrations in ``<backend>/migrations/NNNN_name.sql``,
applied in order inside one transaction each and recorded in ``schema_migrations``.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager
from importlib import resources
from typing import Any, Protocol

Row = dict[str, Any]

_MIGRATION = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_DOLLAR_QUOTED = re.compile(r"(\$\$.*?\$\$)", re.S)


class Sql(Protocol):
    """One connection (or pool) that runs statements; ``transaction()`` pins one connection."""

    dialect: str  # "sqlite" | "postgres"

    async def execute(self, sql: str, *args: Any) -> None: ...
    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    async def fetch(self, sql: str, *args: Any) -> list[Row]: ...
    def transaction(self) -> AbstractAsyncContextManager[Sql]: ...


class UniqueViolation(Exception):
    """A write broke a UNIQUE constraint (a name taken meanwhile by a concurrent call, say), on either backend."""


def is_unique_violation(exc: BaseException) -> bool:
    """SQLite's ``UNIQUE constraint failed`` or PostgreSQL's SQLSTATE 23505 (asyncpg's ``UniqueViolationError``,
    told by its code so that SQLite installs need no asyncpg)."""
    if isinstance(exc, sqlite3.IntegrityError):
        return str(exc).startswith("UNIQUE constraint failed")
    return getattr(exc, "sqlstate", None) == "23505"


async def fetchone(db: Sql, sql: str, *args: Any) -> Row | None:
    rows = await db.fetch(sql, *args)
    return rows[0] if rows else None


def migrations(package: str) -> list[tuple[int, str]]:
    """(version, sql) pairs shipped in ``<package>/migrations``, in order."""
    folder = resources.files(package).joinpath("migrations")
    out = []
    for entry in folder.iterdir():
        m = _MIGRATION.match(entry.name)
        if m:
            out.append((int(m.group(1)), entry.read_text(encoding="utf-8")))
    return sorted(out)


def split_statements(script: str) -> list[str]:
    """Statements of a migration file (no semicolons inside our literals; a ``$$ ... $$`` body, as a
    PostgreSQL ``DO`` block's, is kept whole)."""
    lines = [ln for ln in script.splitlines() if not ln.strip().startswith("--")]
    statements, current = [], ""
    for i, part in enumerate(_DOLLAR_QUOTED.split("\n".join(lines))):
        first, *rest = [part] if i % 2 else part.split(";")  # odd parts: the quoted bodies
        current += first
        for piece in rest:
            statements.append(current)
            current = piece
    return [s.strip() for s in (*statements, current) if s.strip()]


async def applied_versions(db: Sql) -> set[int]:
    await db.execute("CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
                     "applied_at DOUBLE PRECISION NOT NULL)")
    return {int(r["version"]) for r in await db.fetch("SELECT version FROM schema_migrations")}


async def pending(db: Sql, package: str) -> list[int]:
    done = await applied_versions(db)
    return [v for v, _ in migrations(package) if v not in done]


async def migrate(db: Sql, package: str, now: float) -> list[int]:
    """Apply every migration not yet recorded; returns the versions applied."""
    done = await applied_versions(db)
    applied = []
    for version, script in migrations(package):
        if version in done:
            continue
        if getattr(db, "in_transaction", False):  # the caller holds a transaction (and a lock) already
            await _apply(db, version, script, now)
        else:
            async with db.transaction() as tx:
                await _apply(tx, version, script, now)
        applied.append(version)
    return applied



async def _apply(tx: Sql, version: int, script: str, now: float) -> None:
    for statement in split_statements(script):
        await tx.execute(statement)
    await tx.execute("INSERT INTO schema_migrations (version, applied_at) VALUES (?, ?)", version, now)
