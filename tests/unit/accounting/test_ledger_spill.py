"""The ledger's spill file: rows the database could not take at shutdown wait on disk for the next start.

What an operator relies on: every row that reached the file is written to the database once, whatever
happens at the next start (a crash before the first flush, several workers sharing the file, a torn
last line, more rows than ``max_buffered``), and a spill file that cannot be written is reported at start.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigw.accounting.ledger import Ledger
from aigw.supervise import Supervisor
from tests.unit.accounting.test_ledger_writer import FlakyStore, _cfg, _until

ROW_PAD = "tenant-" + "x" * 40


def _row(i: int, run: str = "") -> tuple[Any, ...]:
    return (f"sp_{run}{i}", i, ROW_PAD)


def _write_spill(path: Path, rows: range, run: str = "") -> None:
    path.write_bytes(b"".join(orjson.dumps(list(_row(i, run))) + b"\n" for i in rows))


def _leftovers(tmp_path: Path) -> list[str]:
    """Spill files still holding rows (the lock file holds none)."""
    return sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock"))


def _python(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter (one more gateway process)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=60)


async def _drain(store: FlakyStore, *ledgers: Ledger, rows: int) -> None:
    for ledger in ledgers:
        ledger.start(Supervisor())
    await _until(lambda: len(store.rows) == rows)
    for ledger in ledgers:
        await ledger.close()


CRASH_AFTER_REPLAY = """
import os, signal, sys
from aigw.accounting.ledger import Ledger
from aigw.config.tenancy import LedgerConfig

class Unused:
    async def write(self, records):
        raise AssertionError("no write before the crash")

ledger = Ledger(Unused(), LedgerConfig(spill_file=sys.argv[1]))
print(ledger.replay_spill(), flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # ready, but dead before the first flush
"""


async def test_rows_replayed_by_a_process_killed_before_its_first_flush_are_replayed_at_the_next_start(
        tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    store = FlakyStore()
    store.down = True
    first = Ledger(store, _cfg(spill_file=str(spill)))  # type: ignore[arg-type]
    for i in range(32):
        first.record(_row(i))
    await first.close(timeout_s=0.05)  # database down at shutdown: 32 rows spilled
    crashed = _python(CRASH_AFTER_REPLAY, str(spill))
    assert crashed.returncode == -9 and crashed.stdout.strip() == "32", crashed.stderr
    store.down = False
    again = Ledger(store, _cfg(spill_file=str(spill)))  # type: ignore[arg-type]
    assert again.replay_spill() == 32
    await _drain(store, again, rows=32)
    assert sorted(r[1] for r in store.rows.values()) == list(range(32))
    assert _leftovers(tmp_path) == []  # written: nothing left to replay


def _replay_at_once(workers: list[Ledger]) -> list[int | BaseException]:
    """Each worker's ``replay_spill`` on its own thread, all let go at the same moment."""
    start = threading.Barrier(len(workers))
    taken: list[int | BaseException] = []

    def replay(ledger: Ledger) -> None:
        start.wait()
        try:
            taken.append(ledger.replay_spill())
        except BaseException as exc:  # what made `aigw serve --workers 2` exit 3
            taken.append(exc)

    threads = [threading.Thread(target=replay, args=(w,)) for w in workers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return taken


async def test_workers_replaying_one_spill_at_once_never_fail_and_take_each_row_once(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    store = FlakyStore()
    for run in range(12):
        _write_spill(spill, range(2000), run=f"{run}_")
        workers = [Ledger(store, _cfg(spill_file=str(spill))) for _ in range(3)]  # type: ignore[arg-type]
        taken = _replay_at_once(workers)
        assert all(isinstance(n, int) for n in taken), taken
        assert sum(n for n in taken if isinstance(n, int)) == 2000, taken  # each row taken by one worker
        await _drain(store, *workers, rows=2000 * (run + 1))
        assert _leftovers(tmp_path) == []


def _tear(spill: Path, row: int) -> None:
    with spill.open("ab") as f:
        f.write(orjson.dumps(list(_row(row)))[:20])  # the disk filled up mid-line


async def test_a_torn_last_line_is_skipped_with_a_log_line_and_the_rest_replayed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spill = tmp_path / "spill.jsonl"
    _write_spill(spill, range(15))
    _tear(spill, 15)
    store = FlakyStore()
    ledger = Ledger(store, _cfg(spill_file=str(spill)))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="aigw.ledger"):
        assert ledger.replay_spill() == 15  # start-up goes on
    assert any("skipped" in r.getMessage() and str(spill) in r.getMessage() for r in caplog.records), caplog.text
    await _drain(store, ledger, rows=15)
    assert sorted(r[1] for r in store.rows.values()) == list(range(15))


async def test_rows_spilled_after_a_torn_line_are_all_kept(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    _write_spill(spill, range(15))
    _tear(spill, 15)
    store = FlakyStore()
    store.down = True
    later = Ledger(store, _cfg(spill_file=str(spill)))  # type: ignore[arg-type]
    for i in range(100, 103):
        later.record(_row(i))
    await later.close(timeout_s=0.05)  # appended after the torn line, not glued to it
    store.down = False
    ledger = Ledger(store, _cfg(spill_file=str(spill)))  # type: ignore[arg-type]
    assert ledger.replay_spill() == 18
    await _drain(store, ledger, rows=18)
    assert sorted(r[1] for r in store.rows.values()) == [*range(15), 100, 101, 102]


async def test_a_spill_three_times_max_buffered_is_replayed_whole_while_new_rows_arrive(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    _write_spill(spill, range(3000))  # e.g. three workers' full buffers
    store = FlakyStore()
    ledger = Ledger(store, _cfg(spill_file=str(spill), max_buffered=1000))  # type: ignore[arg-type]
    assert ledger.replay_spill() == 3000
    ledger.start(Supervisor())
    for i in range(3000, 3600):  # traffic from the first moment
        ledger.record(_row(i))
        if i % 100 == 0:
            await asyncio.sleep(0.01)
    await _until(lambda: len(store.rows) == 3600)
    assert ledger.dropped == 0
    await ledger.close()
    assert _leftovers(tmp_path) == []


async def test_new_rows_beyond_max_buffered_are_still_dropped_but_never_replayed_ones(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    _write_spill(spill, range(1500))
    store = FlakyStore()
    store.down = True
    ledger = Ledger(store, _cfg(spill_file=str(spill), max_buffered=1000))  # type: ignore[arg-type]
    assert ledger.replay_spill() == 1500
    for i in range(2000, 3005):
        ledger.record(_row(i))
    assert ledger.dropped == 5 and ledger.pending == 2500  # the 5 oldest new rows
    store.down = False
    await ledger.close()
    assert sorted(r[1] for r in store.rows.values()) == [*range(1500), *range(2005, 3005)]


async def test_an_unwritable_spill_file_is_reported_at_start(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    spill = tmp_path / "no-such-dir" / "spill.jsonl"
    ledger = Ledger(FlakyStore(), _cfg(spill_file=str(spill)))  # type: ignore[arg-type]
    with caplog.at_level(logging.WARNING, logger="aigw.ledger"):
        assert ledger.replay_spill() == 0
    assert any(str(spill) in r.getMessage() and r.levelno >= logging.WARNING for r in caplog.records), caplog.text


SPILL_WITH_FILE_SIZE_LIMIT = """
import asyncio, logging, resource, sys
from aigw.accounting.ledger import Ledger
from aigw.config.tenancy import LedgerConfig

class Down:
    async def write(self, records):
        raise ConnectionError("database is down")

logging.basicConfig(level=logging.INFO, format="%(message)s")
resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))  # the disk fills up mid-spill
ledger = Ledger(Down(), LedgerConfig(spill_file=sys.argv[1]))
for i in range(24):
    ledger.record((f"sp_{i}", i, "tenant-" + "x" * 40))
asyncio.run(ledger.close(timeout_s=0.05))
print(ledger.dropped)
"""


def test_a_spill_cut_short_keeps_whole_lines_and_counts_what_it_lost(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    done = _python(SPILL_WITH_FILE_SIZE_LIMIT, str(spill))
    assert done.returncode == 0, done.stderr
    data = spill.read_bytes()
    assert data.endswith(b"\n")  # no torn line for the next start (or the next appender) to trip on
    kept = [orjson.loads(line) for line in data.splitlines()]
    assert [r[1] for r in kept] == list(range(len(kept))) and 0 < len(kept) < 24
    assert int(done.stdout.split()[-1]) == 24 - len(kept), done.stderr  # counted as lost: only the rest
    assert f"{len(kept)} of 24 rows" in done.stderr, done.stderr


class HungStore:
    """A database that stopped answering: a write never returns."""

    async def write(self, records: list[Any]) -> int:
        await asyncio.Event().wait()
        return 0


async def test_a_database_that_stopped_answering_holds_shutdown_no_longer_than_its_timeout(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    ledger = Ledger(HungStore(), _cfg(spill_file=str(spill)))
    for i in range(5):
        ledger.record(_row(i))
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(ledger.close(timeout_s=0.3), 10)
    assert asyncio.get_running_loop().time() - started < 1.5
    assert len(spill.read_bytes().splitlines()) == 5  # kept on disk for the next start


FORCED_EXIT = """
import asyncio, sys
from aigw.accounting.ledger import Ledger
from aigw.config.tenancy import LedgerConfig
from aigw.supervise import Supervisor

class Down:
    async def write(self, records):
        raise ConnectionError("database is down")

async def main():
    ledger = Ledger(Down(), LedgerConfig(flush_interval_s=0.05, retry_backoff_s=0.05, spill_file=sys.argv[1]))
    ledger.start(Supervisor())
    for i in range(7):
        ledger.record((f"sp_{i}", i, "t"))
    await asyncio.sleep(0.1)
    close = asyncio.ensure_future(ledger.close(timeout_s=30))  # the first Ctrl-C: a drain that waits on the DB
    await asyncio.sleep(0.2)
    raise KeyboardInterrupt  # the second Ctrl-C: out, past the lifespan shutdown

asyncio.run(main())
"""


def test_a_forced_exit_during_the_drain_still_keeps_the_rows_on_disk(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    done = _python(FORCED_EXIT, str(spill))
    assert done.returncode != 0 and "KeyboardInterrupt" in done.stderr
    assert len(spill.read_bytes().splitlines()) == 7


class Interrupted:
    """A write that a second Ctrl-C interrupts while the store's own code runs."""

    async def write(self, records: list[Any]) -> int:
        raise KeyboardInterrupt


async def test_a_batch_interrupted_mid_write_is_still_spilled_at_exit(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    ledger = Ledger(Interrupted(), _cfg(spill_file=str(spill), batch_size=10))
    for i in range(25):
        ledger.record(_row(i))
    with pytest.raises(KeyboardInterrupt):
        await ledger.flush_once()
    ledger._spill_at_exit()  # what the exit hook does as the process goes
    assert len(spill.read_bytes().splitlines()) == 25
