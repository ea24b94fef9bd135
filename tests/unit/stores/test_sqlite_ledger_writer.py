"""The ledger's writer processes: rows land once, and a batch they cannot write goes to the fallback."""

from __future__ import annotations

import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from aigw.sqlite_child import LOW_NICE
from aigw.sqlite_process import SqliteProcess, WriterFailed
from aigw.stores.database import open_database
from aigw.stores.sqlite.ledger_writer import SqliteLedgerWriter
from tests.unit.test_sqlite_process import _policy, _row


class Keep:
    def __init__(self) -> None:
        self.batches: list[list[Any]] = []

    async def write(self, records: list[Any]) -> int:
        self.batches.append(records)
        return len(records)


async def _migrated(path: Path) -> str:
    db = open_database(f"sqlite:///{path}")
    await db.open()
    await db.migrate()
    await db.close()
    return str(path)


async def test_duplicate_rows_in_a_batch_are_written_once(tmp_path: Path) -> None:
    path = await _migrated(tmp_path / "l.db")
    writer = SqliteLedgerWriter(path)
    try:
        assert await writer.write([_row(1), _row(1), _row(2)]) == 2
        assert await writer.write([]) == 0
        with sqlite3.connect(path) as conn:
            assert conn.execute("SELECT count(*) FROM spend_ledger").fetchone()[0] == 2
    finally:
        await writer.close()


async def test_a_child_that_cannot_write_hands_the_batch_to_its_fallback(tmp_path: Path) -> None:
    fallback = Keep()
    writer = SqliteLedgerWriter(str(tmp_path / "no-such-dir" / "l.db"), fallback=fallback)
    try:
        assert await writer.write([_row(1), _row(2)]) == 2
        assert [len(b) for b in fallback.batches] == [2]
    finally:
        await writer.close()


async def test_without_a_fallback_the_failure_reaches_the_ledger(tmp_path: Path) -> None:
    writer = SqliteLedgerWriter(str(tmp_path / "no-such-dir" / "l.db"))
    try:
        with pytest.raises(WriterFailed, match="went away"):
            await writer.write([_row(1)])
    finally:
        await writer.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads the scheduling policy from /proc")
async def test_the_steady_child_is_idle_priority_and_the_busy_one_low(tmp_path: Path) -> None:
    path = await _migrated(tmp_path / "l.db")
    writer = SqliteLedgerWriter(path, fallback=Keep())
    steady, busy = writer.children.steady, writer.children.busy
    assert isinstance(steady, SqliteProcess) and isinstance(busy, SqliteProcess)
    try:
        await writer.write([_row(1)])
        await busy.write([_row(2)])
        assert steady.pid is not None and busy.pid is not None
        assert _policy(steady.pid) == os.SCHED_IDLE
        assert _policy(busy.pid) == os.SCHED_OTHER and os.getpriority(os.PRIO_PROCESS, busy.pid) == min(
            19, os.getpriority(os.PRIO_PROCESS, 0) + LOW_NICE)
    finally:
        await writer.close()
    assert steady.pid is None and busy.pid is None
