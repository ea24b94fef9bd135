"""The durable store over SQL: tenants, projects, keys, the key version and the ledger.

``open_database(url)`` picks SQLite (``sqlite:///path``) or PostgreSQL
(``postgresql://...``); everything above sees only the ``Database`` protocol.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import Any

import orjson

from aigw.sqlite_thread import while_locked
from aigw.stores import sql_ledger
from aigw.stores.base import (
    ApiKey,
    Grant,
    Limits,
    Period,
    Project,
    RequestQuery,
    SpendQuery,
    SpendRecord,
    Tenant,
    window_of,
    window_start_day,
)
from aigw.stores.row_update import locked_update, update_sql
from aigw.stores.sql import Row, Sql, UniqueViolation, fetchone, is_unique_violation, migrate, pending


class AmbiguousName(LookupError):
    """A project looked up by a name that projects of several tenants share, with no tenant to choose."""


BUDGETED_PAGE = 2000  # rows a reseed reads at a time (``_budgeted``)
HASHES_PAGE = 5000  # rows ``key_hashes`` reads at a time when it reads every key
# ``key_hashes``' next ``since`` is this much before its read: a key whose write took its stamp just before
# the read but was committed after it is read by the next call
HASHED_OVERLAP_S = 5.0
# the database's own clock, in seconds since the epoch: one clock for every replica's stamps
_NOW_SQL = {"sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
            "postgres": "(extract(epoch from clock_timestamp())::double precision)"}


def _limits_json(lim: Limits) -> str:
    raw = {"rpm": lim.rpm, "tpm": lim.tpm, "max_parallel": lim.max_parallel, "budget_usd": lim.budget_usd,
           "budget_period": lim.budget_period}
    return orjson.dumps({k: v for k, v in raw.items() if v is not None}).decode()


def _limits(text: str | None) -> Limits:
    return Limits(**orjson.loads(text or "{}"))


def _tenant(r: Row, p: str = "") -> Tenant:
    return Tenant(id=r[p + "id"], name=r[p + "name"], limits=_limits(r[p + "limits"]), enabled=bool(r[p + "enabled"]),
                  metadata=orjson.loads(r[p + "metadata"]), created_at=r[p + "created_at"])


def _project(r: Row, p: str = "") -> Project:
    return Project(id=r[p + "id"], tenant_id=r[p + "tenant_id"], name=r[p + "name"], limits=_limits(r[p + "limits"]),
                   enabled=bool(r[p + "enabled"]), metadata=orjson.loads(r[p + "metadata"]),
                   created_at=r[p + "created_at"], disabled_by=r[p + "disabled_by"])


def _key(r: Row) -> ApiKey:
    models = r["allowed_models"]
    return ApiKey(id=r["id"], tenant_id=r["tenant_id"], project_id=r["project_id"], key_hash=r["key_hash"],
                  prefix=r["prefix"], name=r["name"], allowed_models=orjson.loads(models) if models else None,
                  limits=_limits(r["limits"]), expires_at=r["expires_at"], enabled=bool(r["enabled"]),
                  role=r["role"], metadata=orjson.loads(r["metadata"]), created_at=r["created_at"],
                  revoked_at=r["revoked_at"], previous_hash=r["previous_hash"], previous_until=r["previous_until"],
                  disabled_by=r["disabled_by"])


def _j(v: Any) -> str:
    return orjson.dumps(v).decode()


def _tenant_values(t: Tenant) -> dict[str, Any]:
    return {"name": t.name, "limits": _limits_json(t.limits), "enabled": int(t.enabled), "metadata": _j(t.metadata)}


def _project_values(p: Project) -> dict[str, Any]:
    return {"name": p.name, "limits": _limits_json(p.limits), "enabled": int(p.enabled), "metadata": _j(p.metadata),
            "disabled_by": p.disabled_by}


def _key_values(k: ApiKey) -> dict[str, Any]:
    return {"key_hash": k.key_hash, "prefix": k.prefix, "name": k.name,
            "allowed_models": _j(k.allowed_models) if k.allowed_models is not None else None,
            "limits": _limits_json(k.limits), "expires_at": k.expires_at, "enabled": int(k.enabled),
            "role": k.role, "metadata": _j(k.metadata), "revoked_at": k.revoked_at,
            "previous_hash": k.previous_hash, "previous_until": k.previous_until, "disabled_by": k.disabled_by}


_KEY_COLS = ("id, tenant_id, project_id, key_hash, prefix, name, allowed_models, limits, expires_at, enabled, "
             "role, metadata, created_at, revoked_at, previous_hash, previous_until, disabled_by")
_GRANT_SQL = (
    "SELECT k.*, p.id AS p_id, p.tenant_id AS p_tenant_id, p.name AS p_name, p.limits AS p_limits, "
    "p.enabled AS p_enabled, p.metadata AS p_metadata, p.created_at AS p_created_at, "
    "p.disabled_by AS p_disabled_by, t.id AS t_id, "
    "t.name AS t_name, t.limits AS t_limits, t.enabled AS t_enabled, t.metadata AS t_metadata, "
    "t.created_at AS t_created_at FROM api_keys k JOIN projects p ON p.id = k.project_id "
    "JOIN tenants t ON t.id = k.tenant_id WHERE k.key_hash = ? OR k.previous_hash = ?"
)


class SqlDatabase:
    def __init__(self, sql: Any, migrations_package: str) -> None:
        self.sql: Sql = sql
        self.kind: str = sql.dialect
        self._migrations = migrations_package
        # a write of a key's secret stamps when, by the database's clock (``key_hashes(since)`` reads by it)
        self._key_stamp = {"key_hash": f"hashed_at = {_NOW_SQL[self.kind]}"}

    async def open(self) -> None:
        await self.sql.open()  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self.sql.close()  # type: ignore[attr-defined]

    async def migrate(self) -> list[int]:
        """Processes starting together (replicas, ``--workers N``): one migrates, the others wait for its
        transaction and then find nothing left to do (on SQLite for as long as ``while_locked`` allows)."""
        if self.kind == "sqlite":
            return await while_locked(self._migrate_once, "the database")
        return await self._migrate_once()

    async def _migrate_once(self) -> list[int]:
        async with self.sql.transaction() as tx:  # SQLite: BEGIN IMMEDIATE, the file's write lock
            if self.kind == "postgres":
                await tx.execute("SELECT pg_advisory_xact_lock(724201)")
            return await migrate(tx, self._migrations, time.time())

    async def pending_migrations(self) -> list[int]:
        return await pending(self.sql, self._migrations)

    async def ping(self) -> None:
        await self.sql.fetch("SELECT 1 AS ok")

    async def key_version(self) -> int:
        row = await fetchone(self.sql, "SELECT value FROM aigw_meta WHERE name = 'key_version'")
        return int(row["value"]) if row else 0

    async def bump_key_version(self) -> int:
        await self.sql.execute("UPDATE aigw_meta SET value = value + 1 WHERE name = 'key_version'")
        return await self.key_version()

    async def _named(self, sql: str, *args: Any) -> None:
        """A write of a tenant's or project's name: a name taken meanwhile raises ``UniqueViolation`` (the
        caller's duplicate check and this write are two steps, and a concurrent call can come between)."""
        try:
            await self.sql.execute(sql, *args)
        except Exception as exc:
            if is_unique_violation(exc):
                raise UniqueViolation(str(exc)) from exc
            raise

    # -- tenants -------------------------------------------------------------------
    async def add_tenant(self, t: Tenant) -> None:
        await self._named("INSERT INTO tenants (id, name, limits, enabled, metadata, created_at) "
                          "VALUES (?, ?, ?, ?, ?, ?)", t.id, t.name, _limits_json(t.limits), int(t.enabled),
                          _j(t.metadata), t.created_at)

    async def get_tenant(self, tenant_id: str) -> Tenant | None:
        row = await fetchone(self.sql, "SELECT * FROM tenants WHERE id = ?", tenant_id)
        return _tenant(row) if row else None

    async def find_tenant(self, name_or_id: str) -> Tenant | None:
        row = await fetchone(self.sql, "SELECT * FROM tenants WHERE id = ? OR name = ? ORDER BY id = ? DESC",
                             name_or_id, name_or_id, name_or_id)
        return _tenant(row) if row else None

    async def list_tenants(self, limit: int | None = None, after: Tenant | None = None) -> list[Tenant]:
        sql, args = _paged("SELECT * FROM tenants WHERE 1 = 1", [], limit, after)
        return [_tenant(r) for r in await self.sql.fetch(sql, *args)]

    async def save_tenant(self, t: Tenant, columns: Collection[str] | None = None) -> None:
        await self._named(*update_sql("tenants", _tenant_values(t), columns, t.id))

    async def update_tenant(self, tenant_id: str, change: Callable[[Tenant], Collection[str]]
                            ) -> tuple[Tenant, Tenant] | None:
        return await locked_update(self.sql, "tenants", tenant_id, _tenant, _tenant_values, change)

    # -- projects ------------------------------------------------------------------
    async def add_project(self, p: Project) -> None:
        await self._named("INSERT INTO projects (id, tenant_id, name, limits, enabled, metadata, created_at, "
                          "disabled_by) VALUES (?, ?, ?, ?, ?, ?, ?, ?)", p.id, p.tenant_id, p.name,
                          _limits_json(p.limits), int(p.enabled), _j(p.metadata), p.created_at, p.disabled_by)

    async def get_project(self, project_id: str) -> Project | None:
        row = await fetchone(self.sql, "SELECT * FROM projects WHERE id = ?", project_id)
        return _project(row) if row else None

    async def find_project(self, name_or_id: str, tenant_id: str | None) -> Project | None:
        sql, args = "SELECT * FROM projects WHERE (id = ? OR name = ?)", [name_or_id, name_or_id]
        if tenant_id is not None:
            sql += " AND tenant_id = ?"
            args.append(tenant_id)
        rows = await self.sql.fetch(sql + " ORDER BY created_at", *args)
        exact = [r for r in rows if r["id"] == name_or_id]
        if exact or len(rows) == 1:
            return _project((exact or rows)[0])
        if rows:  # a name shared by projects of several tenants: saying "none" would send the caller astray
            raise AmbiguousName(name_or_id)
        return None

    async def list_projects(self, tenant_id: str | None, limit: int | None = None,
                            after: Project | None = None) -> list[Project]:
        sql, args = "SELECT * FROM projects WHERE 1 = 1", list[object]()
        if tenant_id is not None:
            sql += " AND tenant_id = ?"
            args.append(tenant_id)
        sql, args = _paged(sql, args, limit, after)
        return [_project(r) for r in await self.sql.fetch(sql, *args)]

    async def save_project(self, p: Project, columns: Collection[str] | None = None,
                           tenant_admin: bool = False) -> None:
        await self._named(*update_sql("projects", _project_values(p), columns, p.id, tenant_admin))

    async def update_project(self, project_id: str, change: Callable[[Project], Collection[str]],
                             tenant_admin: bool = False) -> tuple[Project, Project] | None:
        return await locked_update(self.sql, "projects", project_id, _project, _project_values, change, tenant_admin)

    # -- keys ----------------------------------------------------------------------
    async def add_key(self, k: ApiKey) -> None:
        await self.sql.execute(
            f"INSERT INTO api_keys ({_KEY_COLS}, hashed_at) "
            f"VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, {_NOW_SQL[self.kind]})",
            k.id, k.tenant_id, k.project_id, k.key_hash, k.prefix, k.name,
            _j(k.allowed_models) if k.allowed_models is not None else None, _limits_json(k.limits), k.expires_at,
            int(k.enabled), k.role, _j(k.metadata), k.created_at, k.revoked_at, k.previous_hash, k.previous_until,
            k.disabled_by)

    async def get_key(self, key_id: str, tenant_id: str | None = None) -> ApiKey | None:
        if tenant_id is None:
            row = await fetchone(self.sql, "SELECT * FROM api_keys WHERE id = ?", key_id)
        else:  # the tenant in the query: another tenant's row never leaves the database
            row = await fetchone(self.sql, "SELECT * FROM api_keys WHERE id = ? AND tenant_id = ?", key_id, tenant_id)
        return _key(row) if row else None

    async def list_keys(self, tenant_id: str | None, project_id: str | None, limit: int | None = None,
                        after: ApiKey | None = None) -> list[ApiKey]:
        sql, args = "SELECT * FROM api_keys WHERE 1 = 1", list[object]()
        for column, value in (("tenant_id", tenant_id), ("project_id", project_id)):
            if value is not None:
                sql += f" AND {column} = ?"
                args.append(value)
        sql, args = _paged(sql, args, limit, after)
        return [_key(r) for r in await self.sql.fetch(sql, *args)]

    async def enabled_states(self, project_ids: Collection[str]) -> dict[str, tuple[bool, bool]]:
        ids = sorted(set(project_ids))
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        rows = await self.sql.fetch("SELECT p.id, p.enabled, t.enabled AS tenant_enabled FROM projects p "
                                    f"JOIN tenants t ON t.id = p.tenant_id WHERE p.id IN ({marks})", *ids)
        return {r["id"]: (bool(r["enabled"]), bool(r["tenant_enabled"])) for r in rows}

    async def save_key(self, k: ApiKey, columns: Collection[str] | None = None, tenant_admin: bool = False) -> None:
        """Write ``columns`` of ``k`` (None: all): a call writes what it changed only, so a change another call
        saved meanwhile (a revoke, a rotation) is not undone. A revocation is never undone, nor, by a
        ``tenant_admin``, a disabling by the master key."""
        await self.sql.execute(*update_sql("api_keys", _key_values(k), columns, k.id, tenant_admin, self._key_stamp))

    async def update_key(self, key_id: str, change: Callable[[ApiKey], Collection[str]],
                         tenant_admin: bool = False) -> tuple[ApiKey, ApiKey] | None:
        return await locked_update(self.sql, "api_keys", key_id, _key, _key_values, change, tenant_admin,
                                   self._key_stamp)

    async def grant_by_hash(self, key_hash: str) -> Grant | None:
        row = await fetchone(self.sql, _GRANT_SQL, key_hash, key_hash)
        if row is None:
            return None
        key = _key(row)
        previous = key.key_hash != key_hash  # the secret before the last rotation: usable in its grace only
        return Grant(key=key, project=_project(row, "p_"), tenant=_tenant(row, "t_"),
                     until=(key.previous_until or 0.0) if previous else None)

    async def key_hashes(self, since: float | None) -> tuple[list[str], float]:
        """Every key's hashes (``since`` None: a page of rows at a time, the event loop gets its turn between
        them), or those of keys whose secret was set (``hashed_at``, the database's clock) since ``since``."""
        row = await fetchone(self.sql, f"SELECT {_NOW_SQL[self.kind]} AS now")
        mark = float(row["now"] if row else 0.0) - HASHED_OVERLAP_S
        if since is not None:  # a few rows, by the index on hashed_at
            rows = await self.sql.fetch("SELECT key_hash, previous_hash FROM api_keys WHERE hashed_at >= ?", since)
            return _hashes(rows), mark
        out: list[str] = []
        after = ""
        while True:
            rows = await self.sql.fetch("SELECT id, key_hash, previous_hash FROM api_keys WHERE id > ? ORDER BY id "
                                        f"LIMIT {HASHES_PAGE}", after)
            out += _hashes(rows)
            if len(rows) < HASHES_PAGE:
                return out, mark
            after = rows[-1]["id"]

    async def scope_spend(self, kind: str, ident: str, period: Period, now: float) -> int:
        """Spend of one key, project or tenant in the current ``period`` window, from the rollups."""
        column = {"tenant": "tenant_id", "project": "project_id", "key": "key_id"}[kind]
        rows = await self.sql.fetch(f"SELECT sum(cost_nano) AS c FROM spend_rollup WHERE {column} = ? AND day >= ?",
                                    ident, window_start_day(period, now))
        return int(rows[0]["c"] or 0) if rows else 0

    async def budgeted_spend(self, now: float) -> dict[tuple[str, str, str], int]:
        """Spend of the current window of every budgeted key, project and tenant, from the rollups."""
        levels: list[tuple[str, str, list[tuple[str, Limits]]]] = [
            ("tenant", "tenant_id", await self._budgeted("tenants")),
            ("project", "project_id", await self._budgeted("projects")),
            # a revoked key never spends again: its counters are not seeded (a `total` one would live for good)
            ("key", "key_id", await self._budgeted("api_keys", " AND revoked_at IS NULL")),
        ]
        out: dict[tuple[str, str, str], int] = {}
        for kind, column, items in levels:
            periods: set[Period] = {lim.budget_period for _, lim in items if lim.budget_usd is not None}
            for period in periods:
                since = window_start_day(period, now)
                rows = await self.sql.fetch(f"SELECT {column} AS id, sum(cost_nano) AS c FROM spend_rollup "
                                            f"WHERE day >= ? GROUP BY {column}", since)
                totals = {r["id"]: int(r["c"] or 0) for r in rows}
                window = window_of(period, now)
                for ident, lim in items:
                    if lim.budget_usd is not None and lim.budget_period == period and totals.get(ident):
                        out[(kind, ident, window)] = totals[ident]
        return out

    async def _budgeted(self, table: str, where: str = "") -> list[tuple[str, Limits]]:
        """(id, limits) of the rows of ``table`` with a budget, read ``BUDGETED_PAGE`` rows at a time by primary
        key: a worker seeds again on every admin change, and a key lookup waits for the database between pages
        only (with 50,000 keys one read of them all held it, and the event loop, for about a second)."""
        out: list[tuple[str, Limits]] = []
        after = ""
        while True:
            rows = await self.sql.fetch(f"SELECT id, limits FROM {table} WHERE id > ?{where} ORDER BY id "
                                        f"LIMIT {BUDGETED_PAGE}", after)
            out += [(r["id"], _limits(r["limits"])) for r in rows if "budget_usd" in (r["limits"] or "")]
            if len(rows) < BUDGETED_PAGE:
                return out
            after = rows[-1]["id"]

    # -- ledger --------------------------------------------------------------------
    async def write(self, records: list[SpendRecord] | list[tuple[Any, ...]]) -> int:
        return await sql_ledger.write_batch(self.sql, records)

    async def spend(self, query: SpendQuery) -> list[dict[str, Any]]:
        return await sql_ledger.spend_report(self.sql, query)

    async def requests(self, query: RequestQuery) -> list[dict[str, Any]]:
        return await sql_ledger.request_page(self.sql, query)

    async def request(self, request_id: str, tenant_id: str | None) -> dict[str, Any] | None:
        return await sql_ledger.one_request(self.sql, request_id, tenant_id)

    async def count(self) -> int:
        return await sql_ledger.ledger_count(self.sql)


def open_database(url: str) -> SqlDatabase:
    """Build (not yet open) the durable store named by ``url``."""
    if url.startswith("sqlite:"):
        from aigw.stores.sqlite.db import SqliteSql, path_of

        return SqlDatabase(SqliteSql(path_of(url)), "aigw.stores.sqlite")
    if url.startswith(("postgresql:", "postgres:")):
        from aigw.stores.postgres.db import PostgresSql

        return SqlDatabase(PostgresSql(url), "aigw.stores.postgres")
    raise ValueError(f"database_url must start with sqlite: or postgresql:, got {url.split(':', 1)[0]!r}")


def _hashes(rows: list[Row]) -> list[str]:
    return [h for r in rows for h in (r["key_hash"], r["previous_hash"]) if h]


def _paged(sql: str, args: list[object], limit: int | None, after: Tenant | Project | ApiKey | None
           ) -> tuple[str, list[object]]:
    """A listing's ``SELECT ... WHERE ...`` oldest first (ties by id, so one order), from just after
    ``after`` and at most ``limit`` rows when given."""
    if after is not None:
        sql += " AND (created_at > ? OR (created_at = ? AND id > ?))"
        args = [*args, after.created_at, after.created_at, after.id]
    sql += " ORDER BY created_at, id"
    if limit is not None:
        sql += f" LIMIT {int(limit)}"
    return sql, args
