"""Real PostgreSQL and Redis for scaled-mode tests, isolated per test run.

On a machine without them the tests skip with a one-line reason; with
AIGW_REQUIRE_SERVICES=1 (CI) a missing service is a failure instead. Each run
gets its own Redis key prefix and its own PostgreSQL schema, removed afterwards.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
import redis as redis_sync

REDIS_URL = os.environ.get("AIGW_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("AIGW_TEST_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
RUN_ID = uuid.uuid4().hex[:10]


def _reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def require(service: str, host: str, port: int) -> None:
    if _reachable(host, port):
        return
    reason = f"{service} is not reachable on {host}:{port}"
    if os.environ.get("AIGW_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (AIGW_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def redis_prefix(label: str = "") -> str:
    """A key prefix no other run (or test) shares: aigw-test:<run>:<label>:<random>:"""
    return f"aigw-test:{RUN_ID}:{label}{uuid.uuid4().hex[:6]}:"


def redis_url() -> str:
    require("Redis", "127.0.0.1", 6379)
    return REDIS_URL


def postgres_dsn() -> str:
    require("PostgreSQL", "127.0.0.1", 5432)
    return POSTGRES_DSN


def delete_redis_prefix(prefix: str) -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


@pytest.fixture
def redis_isolated() -> Iterator[tuple[str, str]]:
    """(redis_url, prefix) for one test; the prefix's keys are deleted afterwards."""
    url = redis_url()
    prefix = redis_prefix()
    yield url, prefix
    delete_redis_prefix(prefix)


@pytest.fixture
def postgres_schema() -> Iterator[tuple[str, str]]:
    """(dsn, schema) with a fresh schema for one test, dropped afterwards."""
    import asyncio

    import asyncpg

    dsn = postgres_dsn()
    schema = f"aigw_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f'CREATE SCHEMA "{schema}"'))
    yield dsn, schema
    asyncio.run(run(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def start_own_redis(port: int, *extra: str) -> subprocess.Popen[bytes]:
    """A redis-server of the test's own on ``port`` (plus ``extra`` options), empty and without persistence,
    so that it can be paused, killed or restarted (never the shared one); fails or skips like ``require``
    without one."""
    if shutil.which("redis-server") is None:
        if os.environ.get("AIGW_REQUIRE_SERVICES") == "1":
            pytest.fail("redis-server is not installed (AIGW_REQUIRE_SERVICES=1)")
        pytest.skip("redis-server is not installed: cannot start one to kill")
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    password = extra[extra.index("--requirepass") + 1] if "--requirepass" in extra else None
    client = redis_sync.Redis(port=port, password=password)
    try:
        for _ in range(200):
            try:
                client.ping()
                return proc
            except redis_sync.ConnectionError:
                time.sleep(0.02)
        stop_own_redis(proc)
        pytest.fail("own redis-server did not start")
    finally:
        client.close()


def stop_own_redis(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()  # SIGKILL ends a SIGSTOPped server too
    proc.wait(timeout=10)


def fill_redis(url: str) -> None:
    """Make a Redis of the test's own full: a maxmemory below what it uses, under noeviction (its query buffers
    count, so one filled only up to its limit drops back below it once a pipeline is read). Writes then fail
    with OOM; reads and deletes work. ``make_room`` undoes it."""
    client = redis_sync.Redis.from_url(url)
    try:
        used = int(client.info("memory")["used_memory"])
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", used // 2)
        try:
            client.set("aigw-test:full:probe", b"x")
        except redis_sync.exceptions.OutOfMemoryError:
            return
        pytest.fail("Redis took a write above its maxmemory")
    finally:
        client.close()


def make_room(url: str) -> None:
    """Memory frees up: no maxmemory on the test's own Redis any more."""
    client = redis_sync.Redis.from_url(url)
    try:
        client.config_set("maxmemory", 0)
    finally:
        client.close()


@pytest.fixture
def own_redis() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """(URL, process) of a redis-server of the test's own on a free port, to pause (SIGSTOP), kill or restart;
    never the shared one. Stopped after the test, paused or not."""
    from tests.support.servers import free_port

    proc = start_own_redis(port := free_port())
    try:
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        stop_own_redis(proc)


async def pg_execute(dsn: str, sql: str) -> None:
    """One statement on its own connection (creating and dropping a test's database or schema)."""
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()
