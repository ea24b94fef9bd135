"""`aigw serve --workers 3` without Redis: the workers share one set of rate-limit and budget counters (kept
by their parent, stores/counter_host.py), so a key's rpm and max-parallel hold for the whole gateway, not
once per worker. Each check sends its calls over one connection to each worker at once."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.integration.tenancy_support import MASTER, PRICED_MOCK, SLOW_MOCK, setup_key, wait_ledger_rows
from tests.integration.worker_conns import Workers, call, serving_workers

WORKERS = 3
HANGING_MOCK = {"name": "mock-hang", "provider": "mock", "latency_ms": 20_000}
PRICED_HANG = {**HANGING_MOCK, "name": "mock-hang-priced", "prices": PRICED_MOCK["prices"]}


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    config: dict[str, Any] = {"server": {"master_key": MASTER}, "database_url": f"sqlite:///{tmp_path}/aigw.db",
                              "models": [PRICED_MOCK, SLOW_MOCK, HANGING_MOCK, PRICED_HANG],
                              "tenancy": {"ledger": {"flush_interval_s": 0.05}}}
    with serving_workers(tmp_path, config, WORKERS) as pool:
        yield pool
    assert "limits apply per worker" not in pool.stderr  # the old warning: counters are shared now


def _on_every_worker(workers: Workers, key: str, calls: int, model: str = "mock") -> list[int]:
    """``calls`` calls on each worker's connection, the workers' at the same time: every status."""
    statuses: list[int] = []
    lock = threading.Lock()

    def run(conn: Any) -> None:
        for _ in range(calls):
            status, _ = call(conn, key, model)
            with lock:
                statuses.append(status)

    threads = [threading.Thread(target=run, args=(conn,)) for conn in workers.conns.values()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return statuses


def test_a_keys_rpm_holds_across_every_worker(workers: Workers, tmp_path: Path) -> None:
    opener = setup_key(workers.admin(), "workers-rpm")  # finds each worker's connection, takes nothing below
    workers.connect_all(opener["key"])
    assert len(workers.conns) == WORKERS
    key = setup_key(workers.admin(), "workers-rpm", rpm=20)
    statuses = _on_every_worker(workers, key["key"], 12)  # 36 calls, 12 per worker: each worker alone allows all
    assert statuses.count(200) == 20 and statuses.count(429) == 16, statuses
    # one ledger row per request, and the refused ones cost nothing: the 20 that ran are the bill
    assert wait_ledger_rows(tmp_path / "aigw.db", key["id"], 36) == 36
    assert wait_ledger_rows(tmp_path / "aigw.db", key["id"], 20, "status = 200 AND cost_nano > 0") == 20


def test_max_parallel_holds_across_every_worker(workers: Workers) -> None:
    opener = setup_key(workers.admin(), "workers-parallel")
    workers.connect_all(opener["key"])
    key = setup_key(workers.admin(), "workers-parallel", max_parallel=2)
    statuses = _on_every_worker(workers, key["key"], 1, model="mock-slow")  # three 300 ms calls at once
    assert sorted(statuses) == [200, 200, 429], statuses


def test_ready_says_the_counters_are_shared(workers: Workers) -> None:
    body = requests.get(workers.url + "/health/ready", timeout=5).json()
    assert "shared by the workers" in str(body), body


def test_a_killed_workers_parallel_slot_is_free_at_once(workers: Workers) -> None:
    opener = setup_key(workers.admin(), "workers-killed")
    workers.connect_all(opener["key"])
    key = setup_key(workers.admin(), "workers-killed", max_parallel=1)
    (doomed, conn), (_, other) = list(workers.conns.items())[:2]
    deadline = time.monotonic() + 10
    hanging: threading.Thread | None = None
    while True:  # until the hanging call holds the key's one slot (it may lose a race with a probe: again)
        assert time.monotonic() < deadline, "the hanging call never took the slot"
        if hanging is None or not hanging.is_alive():
            hanging = threading.Thread(target=lambda: _swallow(call, conn, key["key"], "mock-hang"), daemon=True)
            hanging.start()
            time.sleep(0.2)
        if call(other, key["key"])[0] == 429 and hanging.is_alive():
            break
    os.kill(doomed, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while (status := call(other, key["key"])[0]) == 429:  # freed when the parent sees the worker's link end
        assert time.monotonic() < deadline, "the dead worker's slot is still held"
        time.sleep(0.05)
    assert status == 200
    del workers.conns[doomed]


def test_a_killed_workers_budget_reservations_are_given_back_at_once(workers: Workers) -> None:
    opener = setup_key(workers.admin(), "workers-killed-budget")
    workers.connect_all(opener["key"])
    # a call of 5 output tokens reserves ~2 cents at these prices: one fits in 3 cents, two do not
    key = setup_key(workers.admin(), "workers-killed-budget", budget_usd=0.03, budget_period="total")
    (doomed, conn), (_, other) = list(workers.conns.items())[:2]
    hanging = threading.Thread(target=lambda: _swallow(call, conn, key["key"], "mock-hang-priced"), daemon=True)
    hanging.start()
    time.sleep(1.0)  # the hanging call reserves in milliseconds (a probe before it would spend the budget)
    assert call(other, key["key"])[0] == 429 and hanging.is_alive()  # its reservation holds the budget
    os.kill(doomed, signal.SIGKILL)
    deadline = time.monotonic() + 2
    while (status := call(other, key["key"])[0]) == 429:  # not held for the lease's life (request timeout + 60 s)
        assert time.monotonic() < deadline, "the dead worker's reservation still holds the budget"
        time.sleep(0.05)
    assert status == 200
    del workers.conns[doomed]


def _swallow(fn: Any, *args: Any) -> None:
    with contextlib.suppress(Exception):  # the worker is killed under it
        fn(*args)


def test_a_budget_is_never_overrun_by_more_than_one_call_across_workers(workers: Workers, tmp_path: Path) -> None:
    opener = setup_key(workers.admin(), "workers-budget")
    workers.connect_all(opener["key"])
    key = setup_key(workers.admin(), "workers-budget", budget_usd=0.10, budget_period="total")
    statuses = _on_every_worker(workers, key["key"], 10)  # ~1.4 cents a call: each worker alone allows ~7
    ok = statuses.count(200)
    db = tmp_path / "aigw.db"
    assert wait_ledger_rows(db, key["id"], ok, "status = 200") == ok
    with sqlite3.connect(db) as conn:
        spent, one_call = conn.execute("SELECT sum(cost_nano), max(cost_nano) FROM spend_ledger WHERE key_id = ?",
                                       (key["id"],)).fetchone()
    assert set(statuses) == {200, 429} and 0 < ok < 10, statuses
    assert spent <= 100_000_000 + one_call
    assert spent > 100_000_000 - 2 * one_call  # leases do not strand the budget either
