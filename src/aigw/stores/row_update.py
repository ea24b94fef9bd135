"""Writing one tenancy row: the UPDATE of the columns a call changed, and a change applied under the row's lock.

An admin call reads a record, waits (for its body, say), then writes. Written as it was read, it undid what
another call saved meanwhile: the limits are one column, so a PATCH of ``rpm`` put back the ``tpm`` it had
read, and a tenant admin's metadata put back the guardrails entry it had read over the master's new one.
``locked_update`` reads the row again in one transaction that holds its lock (PostgreSQL ``SELECT ... FOR
UPDATE``; SQLite ``BEGIN IMMEDIATE``, the file's write lock, which other processes on the file wait for too),
applies the change to the row as saved and writes it before the lock is let go: per field, nothing lost.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any, TypeVar

from aigw.stores.base import BY_MASTER
from aigw.stores.sql import Row, Sql, UniqueViolation, fetchone, is_unique_violation

T = TypeVar("T")


async def locked_update(sql: Sql, table: str, ident: str, read: Callable[[Row], T],
                        values: Callable[[T], dict[str, Any]], change: Callable[[T], Collection[str]],
                        tenant_admin: bool = False, stamps: Mapping[str, str] | None = None) -> tuple[T, T] | None:
    """``change`` (pure: no I/O, it runs with the lock held) applied to row ``ident`` of ``table`` as saved now;
    it changes the record and returns the columns it changed, or raises to write nothing. The record before
    and as saved, or None when there is no such row. A name taken meanwhile raises ``UniqueViolation``.
    ``stamps``: as ``update_sql``'s."""
    lock = " FOR UPDATE" if sql.dialect == "postgres" else ""  # SQLite: the transaction holds the file's lock
    async with sql.transaction() as tx:
        row = await fetchone(tx, f"SELECT * FROM {table} WHERE id = ?{lock}", ident)
        if row is None:
            return None
        item = read(row)
        columns = change(item)
        if not columns:
            return read(row), item
        try:
            await tx.execute(*update_sql(table, values(item), columns, ident, tenant_admin, stamps))
        except Exception as exc:
            if is_unique_violation(exc):
                raise UniqueViolation(str(exc)) from exc
            raise
        saved = await fetchone(tx, f"SELECT * FROM {table} WHERE id = ?", ident)
        return read(row), read(saved or row)


def update_sql(table: str, values: dict[str, Any], columns: Collection[str] | None, ident: str,
               tenant_admin: bool = False, stamps: Mapping[str, str] | None = None) -> tuple[Any, ...]:
    """``UPDATE table SET ... WHERE id = ident`` of ``values`` (only ``columns`` of them, when given): the SQL
    and its arguments. ``revoked_at`` keeps the first revocation (an admin call that read the row before a
    revoke must not clear it); a ``tenant_admin``'s write leaves ``enabled`` and ``disabled_by`` of a row the
    master key disabled as they are, even one disabled after the call read it. ``stamps``: an assignment with no
    argument (``hashed_at = <the database's now>``) added when the column it is under is written."""
    names = [c for c in values if columns is None or c in columns]
    if unknown := set(columns or ()) - set(values):
        raise ValueError(f"{table} has no column to save named {sorted(unknown)}")

    def assign(c: str) -> str:
        if c == "revoked_at":
            return "revoked_at = COALESCE(revoked_at, ?)"
        if tenant_admin and c in ("enabled", "disabled_by"):
            return f"{c} = CASE WHEN disabled_by = '{BY_MASTER}' THEN {c} ELSE ? END"
        return f"{c} = ?"

    extra = [stamp for c, stamp in (stamps or {}).items() if c in names]
    sets = ", ".join([assign(c) for c in names] + extra)
    sets = sets or "id = id"  # a PATCH of an empty body changes nothing
    return (f"UPDATE {table} SET {sets} WHERE id = ?", *(values[c] for c in names), ident)
