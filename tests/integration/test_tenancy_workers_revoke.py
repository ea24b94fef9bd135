"""`aigw serve --workers 2`: a key revoked or rotated through one worker stops on every worker within a
second, measured from the admin API's answer to each worker's first 401; embedded (the workers share the
SQLite file, no Redis) and with Redis. The database holds 50,000 budgeted keys, as a platform that gives
each app its own budget would: what a worker reads again after a change (budgets) costs about a second then.

The kernel spreads connections over the workers, so the test keeps one keep-alive connection per worker and
finds which worker holds each from /proc (the worker with the socket whose peer is the connection's port).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aigw.stores.database import open_database
from tests.integration.tenancy_support import MASTER, PRICED_MOCK, setup_key
from tests.integration.worker_conns import Workers, serving_workers

WORKERS = 2
LIMIT_S = 1.0
BULK_KEYS = 50_000


async def _migrate(url: str) -> None:
    db = open_database(url)
    await db.open()
    try:
        await db.migrate()
    finally:
        await db.close()


def _bulk_keys(path: Path) -> None:
    """A tenant with ``BULK_KEYS`` budgeted keys, written straight into a migrated SQLite file."""
    asyncio.run(_migrate(f"sqlite:///{path}"))
    conn = sqlite3.connect(path)
    try:
        conn.execute("INSERT INTO tenants (id, name, created_at) VALUES ('t_bulk', 'bulk', 0)")
        conn.execute("INSERT INTO projects (id, tenant_id, name, created_at) VALUES ('p_bulk', 't_bulk', 'bulk', 0)")
        conn.executemany("INSERT INTO api_keys (id, tenant_id, project_id, key_hash, prefix, limits, created_at) "
                         "VALUES (?, 't_bulk', 'p_bulk', ?, 'sk-aigw-bulk', '{\"budget_usd\": 10.0}', 0)",
                         [(f"key_bulk{i}", f"{i:064x}") for i in range(BULK_KEYS)])
        conn.commit()
    finally:
        conn.close()


@pytest.fixture(params=["embedded", "redis"])
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workers]:
    _bulk_keys(tmp_path / "aigw.db")
    config: dict[str, Any] = {"server": {"master_key": MASTER}, "database_url": f"sqlite:///{tmp_path}/aigw.db",
                              "models": [PRICED_MOCK]}
    if request.param == "redis":
        redis_url, prefix = request.getfixturevalue("redis_isolated")
        config |= {"redis_url": redis_url, "redis_prefix": prefix}
    with serving_workers(tmp_path, config, WORKERS) as pool:
        yield pool


def test_a_revoked_key_stops_on_every_worker_within_a_second(workers: Workers) -> None:
    key = setup_key(workers.admin(), "revoke-workers", budget_usd=100.0)
    workers.connect_all(key["key"])
    for _ in range(3):  # a few in a row: each revoke of a fresh key is measured on its own
        workers.admin().post(f"/admin/keys/{key['id']}/revoke")
        took = workers.seconds_to_401(key["key"], time.monotonic())
        assert max(took.values()) < LIMIT_S, took
        key = setup_key(workers.admin(), "revoke-workers", budget_usd=100.0)
        assert set(workers.call_each(key["key"]).values()) == {200}


def test_a_rotated_out_secret_stops_on_every_worker_within_a_second(workers: Workers) -> None:
    key = setup_key(workers.admin(), "rotate-workers", budget_usd=100.0)
    workers.connect_all(key["key"])
    rotated = workers.admin().post(f"/admin/keys/{key['id']}/rotate")
    took = workers.seconds_to_401(key["key"], time.monotonic())
    assert max(took.values()) < LIMIT_S, took
    assert set(workers.call_each(rotated["key"]).values()) == {200}
