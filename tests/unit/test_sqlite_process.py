"""The SQLite writer process: batches land, errors come back, and the child never outlives its use."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from aigw import sqlite_pace
from aigw.observability.request_log_rows import write_batch
from aigw.sqlite_process import PriorityWriter, SqliteProcess, WriterFailed
from aigw.stores.database import open_database
from aigw.stores.sqlite.ledger_rows import COLUMNS, write_rows
from aigw.stores.sqlite.ledger_writer import WRITER


def _row(n: int) -> tuple[object, ...]:
    values: dict[str, object] = {c: 0 for c in COLUMNS}
    values.update(id=f"sp_{n:06d}", request_id=f"req_{n}", ts_start=1.5, ts_end=2.5, day="2026-11-26",
                  tenant_id="ten_a", project_id="prj_a", key_id="key_a", key_prefix="sk-aigw-ab", model="m",
                  served_model="m", deployment_id="d", provider="mock", endpoint="chat", prompt_tokens=10,
                  completion_tokens=5, cost_nano=1000 + n, latency_ms=1.25, status=200, error_kind="",
                  handled_by="", usage_source="provider")
    return tuple(values[c] for c in COLUMNS)


@pytest.fixture
async def db_path(tmp_path: Path) -> str:
    path = str(tmp_path / "ledger.db")
    db = open_database(f"sqlite:///{path}")
    await db.open()
    await db.migrate()
    await db.close()
    return path


def _count(path: str) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT count(*) FROM spend_ledger").fetchone()[0])


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _policy(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[38])


async def test_a_batch_lands_once_and_a_replay_adds_nothing(db_path: str) -> None:
    proc = SqliteProcess(db_path, WRITER)
    try:
        rows = [_row(i) for i in range(250)]
        assert await proc.write(rows) == 250
        assert await proc.write([*rows[200:], _row(250)]) == 1  # 50 already there, one new
        assert _count(db_path) == 251
        with sqlite3.connect(db_path) as conn:  # the rollups count each row once, floats exact
            assert conn.execute("SELECT requests, cost_nano FROM spend_rollup").fetchone() == (
                251, sum(1000 + n for n in range(251)))
            assert conn.execute("SELECT latency_ms FROM spend_ledger LIMIT 1").fetchone()[0] == 1.25
        assert proc.started == 1
    finally:
        await proc.close()


async def test_a_failed_batch_comes_back_as_an_error_and_the_child_stays(db_path: str) -> None:
    proc = SqliteProcess(db_path, WRITER)
    try:
        await proc.write([_row(1)])
        pid = proc.pid
        with pytest.raises(WriterFailed, match=r"ProgrammingError: Incorrect number of bindings"):
            await proc.write([_row(2)[:-1]])  # one value short: the statement cannot bind
        assert await proc.write([_row(3)]) == 1 and proc.pid == pid
        assert _count(db_path) == 2
    finally:
        await proc.close()


async def test_a_child_that_died_is_started_again_and_the_batch_is_not_lost(db_path: str) -> None:
    proc = SqliteProcess(db_path, WRITER)
    try:
        await proc.write([_row(1)])
        first = proc.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        try:
            await proc.write([_row(2)])  # either it fails (the caller keeps the batch) ...
        except WriterFailed:
            await proc.write([_row(2)])  # ... and the retry starts a new child
        assert proc.pid not in (None, first) and proc.started == 2
        assert _count(db_path) == 2
    finally:
        await proc.close()


async def test_a_write_cancelled_mid_way_retires_its_child(db_path: str) -> None:
    proc = SqliteProcess(db_path, WRITER)
    try:
        await proc.write([_row(0)])
        first = proc.pid
        assert first is not None
        task = asyncio.create_task(proc.write([_row(i) for i in range(1, 20001)]))
        await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert proc.pid is None  # its answer would be out of step with the next write
        assert await proc.write([_row(5000)]) == 1 and proc.started == 2
    finally:
        await proc.close()


async def test_close_ends_the_child_and_it_ignores_a_stop_signal_before(db_path: str) -> None:
    proc = SqliteProcess(db_path, WRITER)
    await proc.write([_row(1)])
    pid = proc.pid
    assert pid is not None
    os.kill(pid, signal.SIGTERM)  # e.g. a group-wide stop: the parent still has rows to drain
    os.kill(pid, signal.SIGINT)
    await asyncio.sleep(0.2)
    assert await proc.write([_row(2)]) == 1 and proc.pid == pid
    await proc.close()
    assert not _alive(pid) and proc.pid is None


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the scheduling policy from /proc")
async def test_the_child_runs_at_idle_priority(db_path: str) -> None:
    proc = SqliteProcess(db_path, WRITER)
    try:
        await proc.write([_row(1)])
        assert proc.pid is not None and _policy(proc.pid) == os.SCHED_IDLE
    finally:
        await proc.close()


PARENT = """
import asyncio, sys
from aigw.sqlite_process import SqliteProcess
async def main():
    proc = SqliteProcess(sys.argv[1], sys.argv[2])
    await proc.write([])
    print(proc.pid, flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def test_the_child_exits_when_its_parent_is_killed(db_path: str) -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT, db_path, WRITER], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert _alive(child)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout is not None:
            parent.stdout.close()
    deadline = time.monotonic() + 5
    while _alive(child) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(child)


async def test_a_child_that_cannot_start_is_not_spawned_for_every_batch(db_path: str) -> None:
    proc = SqliteProcess(db_path, "aigw.no_such_module:write")  # e.g. no `python -m` in a frozen build
    try:
        for _ in range(SqliteProcess.GIVE_UP_AFTER):
            with pytest.raises(WriterFailed, match="went away"):
                await proc.write([_row(1)])
        with pytest.raises(WriterFailed, match="not started again"):
            await proc.write([_row(1)])
        assert proc.started == SqliteProcess.GIVE_UP_AFTER
        proc._retry_at = 0.0  # the cool-off has passed: it tries again
        with pytest.raises(WriterFailed, match="went away"):
            await proc.write([_row(1)])
        assert proc.started == SqliteProcess.GIVE_UP_AFTER + 1
    finally:
        await proc.close()


def test_an_in_memory_database_cannot_go_to_a_child() -> None:
    with pytest.raises(ValueError, match="in-memory"):
        SqliteProcess(":memory:", WRITER)


class FakeWriter:
    def __init__(self, clock: list[float], takes_s: float = 0.0) -> None:
        self.clock, self.takes_s, self.batches = clock, takes_s, 0
        self.running = False  # until its first write (start-up)

    async def write(self, rows: object) -> int:
        self.clock[0] += self.takes_s
        self.batches += 1
        self.running = True
        return 1

    async def close(self) -> None:
        self.running = False


async def test_a_starving_idle_writer_hands_over_to_the_normal_one_for_a_while() -> None:
    now = [100.0]
    steady, busy = FakeWriter(now, takes_s=0.8), FakeWriter(now)
    writer = PriorityWriter(steady, busy, clock=lambda: now[0])
    await writer.write([0])
    assert writer.switches == 0  # the first write started the child: slow, but not starving
    steady.takes_s = 0.003
    await writer.write([1])
    assert (steady.batches, busy.batches, writer.switches) == (2, 0, 0)  # a few ms: the core has idle time
    steady.takes_s = 0.8  # the core is saturated: an idle-priority batch waits for a gap
    await writer.write([2])
    assert writer.switches == 1
    for _ in range(3):  # for HOLD_S the normal-priority child writes
        await writer.write([3])
    assert (steady.batches, busy.batches) == (3, 3)
    now[0] += PriorityWriter.HOLD_S
    steady.takes_s = 0.003
    assert busy.running
    await writer.write([4])  # then the idle one is tried again, and keeps the flow
    await writer.write([5])
    assert (steady.batches, busy.batches, writer.switches) == (5, 3, 1)
    assert busy.running  # kept a while for the next burst ...
    now[0] += PriorityWriter.RETIRE_S
    await writer.write([6])
    assert not busy.running  # ... then it ends


class FailingWriter(FakeWriter):
    async def write(self, rows: object) -> int:
        raise WriterFailed("SQLite writer process went away (BrokenPipeError)")


async def test_a_batch_no_child_can_write_goes_to_the_fallback_and_a_failing_fallback_reaches_the_caller(
        caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    taken: list[object] = []

    async def fallback(rows: object) -> int:
        if rows == ["down"]:
            raise ConnectionError("database is locked")  # the caller (the ledger) keeps the batch
        taken.append(rows)
        return 1

    writer = PriorityWriter(FailingWriter(now), FakeWriter(now), fallback, "spend ledger", clock=lambda: now[0])
    assert await writer.write(["a"]) == 1 and await writer.write(["b"]) == 1
    assert taken == [["a"], ["b"]] and writer.fallbacks == 2
    assert caplog.text.count("spend ledger writer process failed") == 1  # once, then every 100th
    with pytest.raises(ConnectionError):
        await writer.write(["down"])
    without = PriorityWriter(FailingWriter(now), FakeWriter(now), clock=lambda: now[0])
    with pytest.raises(WriterFailed):
        await without.write(["c"])


def test_a_batch_gives_the_core_back_between_statements_only_in_the_saturation_writer(
        db_path: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(sqlite_pace, "_sleep", pauses.append)
    conn = sqlite3.connect(db_path, isolation_level=None)
    try:
        assert write_rows([_row(n) for n in range(250)], conn) == 250
        assert pauses == []  # the gateway's thread and the idle-priority child: no pause
        monkeypatch.setattr(sqlite_pace, "pause_s", sqlite_pace.SATURATED_PAUSE_S)
        assert write_rows([_row(n) for n in range(250, 500)], conn) == 250
        assert pauses == [sqlite_pace.SATURATED_PAUSE_S] * 3  # after each of the 100-row statements
    finally:
        conn.close()
    assert _count(db_path) == 500


@pytest.mark.parametrize(("priority", "pause"), [("low", sqlite_pace.SATURATED_PAUSE_S), ("idle", 0.0)])
def test_only_the_nice_child_paces_its_batches(priority: str, pause: float) -> None:
    out = subprocess.run(  # its own process: the test runner's priority stays as it is
        [sys.executable, "-c", "from aigw import sqlite_child, sqlite_pace; "
         f"sqlite_child._set_priority({priority!r}); print(sqlite_pace.pause_s)"],
        capture_output=True, text=True, timeout=30, check=True).stdout
    assert float(out) == pause


def test_the_request_log_batch_paces_the_same_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(sqlite_pace, "_sleep", pauses.append)
    monkeypatch.setattr(sqlite_pace, "pause_s", sqlite_pace.SATURATED_PAUSE_S)
    conn = sqlite3.connect(str(tmp_path / "log.db"), isolation_level=None)
    try:
        rows = [(f"req_{n}", n) for n in range(150)]
        create = ["CREATE TABLE IF NOT EXISTS log_day (id TEXT PRIMARY KEY, n INTEGER)"]
        assert write_batch(create, "id, n", [["log_day", rows], ["log_day", rows[:1]]], conn) == 151
        assert conn.execute("SELECT count(*) FROM log_day").fetchone()[0] == 150  # the replayed row ignored
    finally:
        conn.close()
    assert pauses == [sqlite_pace.SATURATED_PAUSE_S] * 3  # two statements for 150 rows, one for the last


async def test_the_child_is_out_of_reach_of_a_signal_to_the_gateways_process_group(db_path: str) -> None:
    # a terminal's Ctrl-C goes to its foreground process group: the child, started in a group of its own, never
    # gets it, not even while it imports (before it ignores SIGINT itself), so the parent can still drain it
    proc = SqliteProcess(db_path, WRITER)
    try:
        await proc.write([_row(1)])
        assert proc.pid is not None and os.getpgid(proc.pid) == proc.pid != os.getpgid(0)
    finally:
        await proc.close()
