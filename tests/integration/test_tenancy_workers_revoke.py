"""`aigw serve --workers 2`: a key revoked or rotated through one worker stops on every worker within a
second, measured from the admin API's answer to each worker's first 401; embedded (the workers share the
SQLite file, no Redis) and with Redis. The database holds 50,000 budgeted keys, as a platform that gives
each app its own budget would: what a worker reads again after a change (budgets) costs about a second then.

The kernel spreads connections over the workers, so the test keeps one keep-alive connection per worker and
finds which worker holds each from /proc (the worker with the socket whose peer is the connection's port).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aigw.cli.admin_client import AdminClient
from aigw.stores.database import open_database
from tests.integration.tenancy_support import MASTER, PRICED_MOCK, chat_body, setup_key
from tests.support.serve_process import start_serve, stop_serve, wait_live

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


def _workers(pid: int) -> list[int]:
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    return [int(c) for c in listed if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def _server_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the accepted socket whose peer is ``client_port`` (/proc/net/tcp, loopback IPv4)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return fields[9]
    return None


def _holder(pids: list[int], inode: str) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def _call(conn: http.client.HTTPConnection, key: str) -> tuple[int, Any]:
    conn.request("POST", "/v1/chat/completions", json.dumps(chat_body("hi", max_tokens=5)),
                 {"authorization": f"Bearer {key}", "content-type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


class Workers:
    """One kept-alive connection to each worker of a running `aigw serve --workers N`."""

    def __init__(self, url: str, pid: int) -> None:
        self.url = url
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.pid = pid
        self.conns: dict[int, http.client.HTTPConnection] = {}

    def admin(self) -> AdminClient:
        return AdminClient(self.url, MASTER)

    def connect_all(self, key: str) -> None:
        """Connections until every worker holds one, each having answered ``key`` once (so it is cached)."""
        deadline = time.monotonic() + 20
        while len(self.conns) < WORKERS:
            assert time.monotonic() < deadline, f"connections reached {list(self.conns)} only"
            pids = _workers(self.pid)
            conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            assert _call(conn, key)[0] == 200
            inode = _server_inode(self.port, conn.sock.getsockname()[1])
            worker = _holder(pids, inode) if inode is not None else None
            if worker is None or worker in self.conns:
                conn.close()
                continue
            self.conns[worker] = conn

    def call_each(self, key: str) -> dict[int, int]:
        return {pid: _call(conn, key)[0] for pid, conn in self.conns.items()}

    def seconds_to_401(self, key: str, since: float) -> dict[int, float]:
        """Each worker's first 401 for ``key``, in seconds after ``since`` (polled on its own connection)."""
        took: dict[int, float] = {}
        deadline = since + 5
        while len(took) < len(self.conns) and time.monotonic() < deadline:
            for pid, conn in self.conns.items():
                if pid not in took:
                    status, body = _call(conn, key)
                    if status == 401:
                        assert body["error"]["code"] == "invalid_api_key", body
                        took[pid] = time.monotonic() - since
                    else:
                        assert status == 200, body
        assert len(took) == len(self.conns), f"still accepted after 5 s by {set(self.conns) - set(took)}"
        return took

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


@pytest.fixture(params=["embedded", "redis"])
def workers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Workers]:
    _bulk_keys(tmp_path / "aigw.db")
    config: dict[str, Any] = {"server": {"master_key": MASTER}, "database_url": f"sqlite:///{tmp_path}/aigw.db",
                              "models": [PRICED_MOCK]}
    if request.param == "redis":
        redis_url, prefix = request.getfixturevalue("redis_isolated")
        config |= {"redis_url": redis_url, "redis_prefix": prefix}
    path = tmp_path / "aigw.yaml"
    path.write_text(yaml.safe_dump(config))
    proc, url = start_serve(tmp_path, "--config", str(path), "--workers", str(WORKERS), "--log-level", "warning")
    pool = Workers(url, proc.pid)
    try:
        wait_live(url, proc)
        yield pool
    finally:
        pool.close()
        stop_serve(proc)
    err = proc.stderr.read() if proc.stderr else b""
    assert b"Traceback" not in err, err.decode(errors="replace")


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
