"""How an admin endpoint answers what went wrong, as API clients expect: a refusal that says when to come back
carries ``Retry-After`` (and ``x-should-retry: false`` when no wait helps), a store that cannot be reached is a
503 ``store_unavailable`` with ``Retry-After: 1`` logged in one line, and a bug stays a 500 with neither."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from aigw import errors
from aigw.http.admin_api import AdminApi
from aigw.http.admin_guard import guarded
from aigw.http.auth import Authenticator
from aigw.pipeline.context import Principal
from aigw.stores.base import ApiKey, Project, Tenant
from aigw.stores.database import SqlDatabase, open_database
from aigw.stores.redis.client import make_redis
from aigw.stores.redis.counters import RedisKeyVersion
from aigw.types import JSON, SystemClock
from tests.support.servers import free_port
from tests.unit.http.admin_support import NoVersion, admin_api, migrated_db
from tests.unit.http.test_admin_api_query import MASTER, call

Answer = tuple[int, dict[str, str], Any]


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[SqlDatabase]:
    store = await migrated_db(tmp_path)
    try:
        yield store
    finally:
        await store.close()


def _tenants(api: AdminApi) -> Any:
    return guarded(Authenticator(MASTER), api.create_tenant, audit=True)


def _list(api: AdminApi) -> Any:
    return guarded(Authenticator(MASTER), api.list_tenants)


def _error(answer: Answer) -> tuple[int, str | None, str | None, str | None]:
    """(status, code, Retry-After, x-should-retry) of an error answer."""
    status, headers, body = answer
    return status, body["error"]["code"], headers.get("retry-after"), headers.get("x-should-retry")


async def test_a_change_saved_but_not_announced_is_a_503_with_retry_after(db: SqlDatabase) -> None:
    # the key version lives in a Redis that refuses (nothing listens on the port): AdminApi says 503, retry
    api = AdminApi(db, RedisKeyVersion(make_redis(f"redis://127.0.0.1:{free_port()}/0"), "t:"), SystemClock(),
                   lambda: None)
    await db.add_tenant(Tenant(id="ten_a", name="alpha"))
    change = guarded(Authenticator(MASTER), api.tenant_item, audit=True)
    answer = await call(change, "PATCH", "/admin/tenants/alpha", body={"name": "renamed"})
    assert _error(answer) == (503, "unavailable", "1", None)
    assert answer[1]["x-request-id"]
    assert "repeat the call" in answer[2]["error"]["message"]


async def test_a_change_saved_but_not_announced_is_in_the_audit_trail(db: SqlDatabase,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A revoke (or any change) saved while the key version's store was away answered 503 "the change is saved"
    and left no audit line: the key was revoked, and the trail said nothing of who did it. It now logs the
    change with its 503, the object and its tenant, once (a repeat that is announced logs its own 200)."""
    api = AdminApi(db, RedisKeyVersion(make_redis(f"redis://127.0.0.1:{free_port()}/0"), "t:"), SystemClock(),
                   lambda: None)
    await db.add_tenant(Tenant(id="ten_a", name="alpha"))
    await db.add_project(Project(id="prj_a", tenant_id="ten_a", name="web"))
    await db.add_key(ApiKey(id="key_a", tenant_id="ten_a", project_id="prj_a", key_hash="h-a", prefix="sk-aigw-a"))
    with caplog.at_level(logging.INFO, "aigw.admin"):
        for handler, method, path in ((api.key_item, "POST", "/admin/keys/key_a/revoke"),
                                      (api.tenant_item, "PATCH", "/admin/tenants/alpha")):
            body = {"name": "renamed"} if method == "PATCH" else None
            answer = await call(guarded(Authenticator(MASTER), handler, audit=True), method, path, body=body)
            assert answer[0] == 503
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("admin change:")]
    assert len(lines) == 2, lines
    assert "-> 503, object key_a, tenant ten_a, by the master key" in lines[0]
    assert "-> 503, object ten_a, tenant ten_a" in lines[1]
    assert (await db.get_key("key_a")).revoked_at is not None  # type: ignore[union-attr]  # it was made


@pytest.mark.parametrize(("retry_after", "header"), [(0.2, "1"), (1.0, "1"), (2.01, "3"), (30.0, "30")])
async def test_retry_after_is_whole_seconds_rounded_up_at_least_one(retry_after: float, header: str) -> None:
    async def full(req: Any, p: Principal) -> tuple[int, JSON]:
        raise errors.RateLimited("Too many purges; slow down.", retry_after=retry_after)

    answer = await call(guarded(Authenticator(MASTER), full), "DELETE", "/admin/cache")
    assert _error(answer) == (429, "rate_limit_exceeded", header, None)


async def test_a_refusal_no_wait_cures_says_do_not_retry_and_no_retry_after(db: SqlDatabase) -> None:
    api = admin_api(db)
    assert (await call(_tenants(api), "POST", "/admin/tenants", body={"name": "alpha"}))[0] == 201
    taken = await call(_tenants(api), "POST", "/admin/tenants", body={"name": "alpha"})
    assert _error(taken) == (409, "already_exists", None, "false")  # SDKs retry a 409 on their own
    bad = await call(_tenants(api), "POST", "/admin/tenants", body={"nme": "beta"})
    assert _error(bad)[0] == 400 and "x-should-retry" not in bad[1] and "retry-after" not in bad[1]


@contextlib.contextmanager
def _write_locked(path: str) -> Iterator[None]:
    """The SQLite file held locked by another process's writer (a migration, a backup tool) while inside."""
    other = sqlite3.connect(path, isolation_level=None)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield
        other.execute("ROLLBACK")
    finally:
        other.close()


async def test_a_locked_sqlite_file_is_a_503_store_unavailable_logged_in_one_line_and_nothing_changes(
        db: SqlDatabase, caplog: pytest.LogCaptureFixture) -> None:
    api = admin_api(db)
    await db.sql.execute("PRAGMA busy_timeout=50")  # its wait for the lock, cut from 5 s: the test stays fast
    with _write_locked(db.sql.path), caplog.at_level(logging.INFO, "aigw.admin"):  # type: ignore[attr-defined]
        answer = await call(_tenants(api), "POST", "/admin/tenants", body={"name": "alpha"})
    assert _error(answer) == (503, "store_unavailable", "1", None)
    error = answer[2]["error"]
    assert error["type"] == "service_unavailable_error"
    assert "cannot be reached" in error["message"] and "retry" in error["message"]
    assert "database is locked" not in error["message"]  # the store's own words stay in the log
    [line] = caplog.records  # one warning, no stack trace, no audit line for a change not made
    assert line.levelno == logging.WARNING and line.exc_info is None
    assert "store cannot be reached" in line.getMessage() and "database is locked" in line.getMessage()
    status, _, listed = await call(_list(api), "GET", "/admin/tenants")
    assert status == 200 and listed["data"] == []  # nothing was created


async def test_a_bug_stays_a_500_without_retry_after_logged_with_its_trace(
        db: SqlDatabase, caplog: pytest.LogCaptureFixture) -> None:
    # a missing table is an sqlite3.OperationalError too, but no wait cures it: not an outage
    await db.sql.execute("ALTER TABLE tenants RENAME TO tenants_gone")
    with caplog.at_level(logging.INFO, "aigw.admin"):
        answer = await call(_list(admin_api(db)), "GET", "/admin/tenants")
    status, headers, body = answer
    assert (status, body["error"]["message"]) == (500, "internal error (OperationalError)")
    assert "retry-after" not in headers and "x-should-retry" not in headers
    [line] = caplog.records
    assert line.levelno == logging.ERROR and line.exc_info is not None


class _Proxy:
    """A loopback TCP relay to PostgreSQL that can be cut: its connections dropped and its port then refusing,
    as a database server that went away."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.server: asyncio.Server | None = None
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        self.writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for w in self.writers:
            w.transport.abort()
        await self.server.wait_closed()


async def test_postgresql_gone_is_a_503_store_unavailable(postgres_schema: tuple[str, str]) -> None:
    dsn, schema = postgres_schema
    parts = urlsplit(dsn)
    proxy = _Proxy((parts.hostname or "127.0.0.1", parts.port or 5432))
    port = await proxy.start()
    login = parts.netloc.rpartition("@")[0]
    via_proxy = urlunsplit(parts._replace(netloc=f"{login}@127.0.0.1:{port}" if login else f"127.0.0.1:{port}"))
    db: SqlDatabase = open_database(f"{via_proxy}?search_path={schema}")
    await db.open()
    try:
        await db.migrate()
        api = AdminApi(db, NoVersion(), SystemClock(), lambda: None)  # type: ignore[arg-type]
        assert (await call(_list(api), "GET", "/admin/tenants"))[0] == 200
        await proxy.cut()
        for _ in range(2):  # the pooled connection lost mid-call, then a new one refused
            assert _error(await call(_list(api), "GET", "/admin/tenants")) == (503, "store_unavailable", "1", None)
    finally:
        await db.close()
