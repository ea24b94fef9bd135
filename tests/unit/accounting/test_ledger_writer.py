"""The ledger writer: batches off the request path, survives a database outage, drains on close."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aigw.accounting.ledger import Ledger
from aigw.config.tenancy import LedgerConfig
from aigw.supervise import Supervisor


@dataclass
class Rec:
    n: int
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or f"sp_{self.n}"


class FlakyStore:
    """Keeps rows by id (idempotent, like the real stores); can be 'down'."""

    def __init__(self) -> None:
        self.rows: dict[str, Any] = {}
        self.down = False
        self.batches: list[int] = []
        self.lose_answer = False  # commit, then fail (the answer is lost on the way back)

    async def write(self, records: list[Any]) -> int:
        if self.down:
            raise ConnectionError("database is down")
        keyed = {(r[0] if isinstance(r, tuple) else r.id): r for r in records}
        new = [k for k in keyed if k not in self.rows]
        self.rows.update(keyed)
        self.batches.append(len(records))
        if self.lose_answer:
            self.lose_answer = False
            raise TimeoutError("commit answer lost")
        return len(new)


def _cfg(**kw: Any) -> LedgerConfig:
    return LedgerConfig(**{"flush_interval_s": 0.05, "batch_size": 50, "retry_backoff_s": 0.05, **kw})


async def _until(cond: object, limit_s: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + limit_s
    while not cond():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_rows_are_written_in_batches_within_the_flush_interval() -> None:
    store, sup = FlakyStore(), Supervisor()
    ledger = Ledger(store, _cfg())  # type: ignore[arg-type]
    ledger.start(sup)
    for i in range(120):
        ledger.record(Rec(i))
    await _until(lambda: len(store.rows) == 120)
    assert max(store.batches) <= 50 and len(store.batches) >= 3
    await ledger.close()


async def test_an_outage_buffers_rows_and_replays_them_without_duplicates() -> None:
    store, sup = FlakyStore(), Supervisor()
    ledger = Ledger(store, _cfg())  # type: ignore[arg-type]
    ledger.start(sup)
    store.down = True
    for i in range(30):
        ledger.record(Rec(i))
    await asyncio.sleep(0.3)
    assert not store.rows and ledger.pending == 30 and not ledger.healthy
    store.down, store.lose_answer = False, True  # first write commits but reports failure
    await _until(lambda: ledger.pending == 0 and ledger.healthy)
    assert sorted(r.n for r in store.rows.values()) == list(range(30))  # each once
    await ledger.close()


async def test_close_drains_everything_left() -> None:
    store = FlakyStore()
    ledger = Ledger(store, _cfg(flush_interval_s=30))  # type: ignore[arg-type]
    ledger.start(Supervisor())
    for i in range(75):
        ledger.record(Rec(i))
    await ledger.close()
    assert len(store.rows) == 75 and ledger.pending == 0


async def test_close_waits_for_a_database_that_comes_back() -> None:
    store = FlakyStore()
    store.down = True
    ledger = Ledger(store, _cfg())  # type: ignore[arg-type]
    for i in range(10):
        ledger.record(Rec(i))

    async def recover() -> None:
        await asyncio.sleep(0.4)
        store.down = False

    back = asyncio.get_running_loop().create_task(recover())
    await ledger.close(timeout_s=5)
    await back
    assert len(store.rows) == 10 and ledger.dropped == 0


async def test_the_buffer_is_bounded_and_counts_what_it_drops() -> None:
    store = FlakyStore()
    store.down = True
    ledger = Ledger(store, _cfg(max_buffered=1000))  # type: ignore[arg-type]
    for i in range(1005):
        ledger.record(Rec(i))
    assert ledger.pending == 1000 and ledger.dropped == 5
    ledger.healthy = False  # as a failed write leaves it
    assert ledger.status() == ("degraded", "ledger writes failing; 1000 rows buffered, 5 dropped")  # /health/ready
    await ledger.close(timeout_s=0.1)
    assert ledger.dropped == 1005


async def test_rows_the_database_never_took_are_kept_on_disk_and_replayed(tmp_path: Path) -> None:
    spill = tmp_path / "spill.jsonl"
    store = FlakyStore()
    store.down = True
    first = Ledger(store, _cfg(spill_file=str(spill)))  # type: ignore[arg-type]
    for i in range(7):
        first.record((f"sp_{i}", i, "tenant"))
    await first.close(timeout_s=0.1)
    assert spill.exists() and first.dropped == 0 and not store.rows
    store.down = False
    second = Ledger(store, _cfg(spill_file=str(spill)))  # type: ignore[arg-type]
    assert second.replay_spill() == 7 and not spill.exists()
    second.start(Supervisor())
    await _until(lambda: len(store.rows) == 7)
    assert store.rows["sp_3"] == ("sp_3", 3, "tenant")
    await second.close()


class HangingStore(FlakyStore):
    """Hangs in write until released (a database stuck on a lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def write(self, records: list[Any]) -> int:
        self.entered.set()
        await self.release.wait()
        return await super().write(records)


async def test_a_write_cancelled_mid_way_keeps_its_rows_for_the_next_write() -> None:
    store = HangingStore()
    ledger = Ledger(store, _cfg())  # type: ignore[arg-type]
    for i in range(10):
        ledger.record(Rec(i))
    flush = asyncio.create_task(ledger.flush_once())
    await store.entered.wait()
    flush.cancel()
    await asyncio.gather(flush, return_exceptions=True)
    assert ledger.pending == 10  # not lost with the cancelled write
    store.release.set()
    await ledger.close()
    assert sorted(r.n for r in store.rows.values()) == list(range(10)) and ledger.dropped == 0


async def test_failed_writes_and_dropped_rows_count_in_the_store_errors_metric() -> None:
    from aigw.app import build_app
    from aigw.config.models import GatewayConfig

    app = build_app(GatewayConfig.model_validate({
        "server": {"master_key": "sk-test"}, "database_url": "sqlite://:memory:",
        "models": [{"name": "mock", "provider": "mock"}],
        "tenancy": {"ledger": {"max_buffered": 1000, "spill_file": "off"}}}))
    ledger = app.state["deps"].services["tenancy"].ledger
    store = FlakyStore()
    store.down = True
    ledger._store = store  # the database went away
    for i in range(1001):
        ledger.record(Rec(i))  # the last one pushes the oldest out
    assert not await ledger.flush_once()
    text = app.state["observability"].metrics.render().decode()
    assert 'aigw_store_errors_total{operation="write",store="ledger"} 1.0' in text
    assert 'aigw_store_errors_total{operation="buffer_full",store="ledger"} 1.0' in text
