"""What the admin endpoint tests share: a migrated SQLite database and an admin API over it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path

from aigw.http.admin_api import AdminApi
from aigw.stores.database import SqlDatabase, open_database
from aigw.types import SystemClock


class NoVersion:
    """A key version that never moves (no key cache to tell in these tests)."""

    async def get(self) -> int:
        return 0

    async def bump(self) -> int:
        return 0


async def migrated_db(tmp_path: Path) -> SqlDatabase:
    db: SqlDatabase = open_database(f"sqlite:///{tmp_path}/t.db")
    await db.open()
    await db.migrate()
    return db


@asynccontextmanager
async def seeded_db(tmp_path: Path, seed: Callable[[SqlDatabase], Awaitable[None]]) -> AsyncIterator[SqlDatabase]:
    """``migrated_db`` with ``seed``'s rows, closed after the block."""
    db = await migrated_db(tmp_path)
    try:
        await seed(db)
        yield db
    finally:
        await db.close()


def admin_api(db: SqlDatabase) -> AdminApi:
    return AdminApi(db, NoVersion(), SystemClock(), lambda: None)  # type: ignore[arg-type]
