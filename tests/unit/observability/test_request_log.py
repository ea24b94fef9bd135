"""The request log stores (memory, SQLite, PostgreSQL) pass one suite; the writer never loses a batch."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from aigw.observability.request_log import (
    DAY_S,
    MemoryRequestLog,
    RequestLogStore,
    RequestLogWriter,
    RequestQuery,
    RequestRecord,
)
from aigw.observability.request_log_sql import PostgresRequestLog, SqliteRequestLog
from tests.support.writer_processes import writer_processes

DAY0 = 20_000 * DAY_S  # a fixed UTC midnight


def rec(i: int, day: int = 0, **kw: Any) -> RequestRecord:
    base: dict[str, Any] = dict(request_id=f"req_{i:04d}", ts=DAY0 + day * DAY_S + i, model="gpt", key_id="k1",
                                status=200, latency_ms=float(i), fallbacks=["a"] if i % 2 else [])
    base.update(kw)
    return RequestRecord(**base)


@pytest.fixture(params=["memory", "sqlite", "sqlite-writer-process", "postgres"])
def make_store(request: pytest.FixtureRequest, tmp_path: Any) -> Callable[[], RequestLogStore]:
    if request.param == "memory":
        return MemoryRequestLog
    if request.param.startswith("sqlite"):
        return lambda: SqliteRequestLog(str(tmp_path / "log.db"), background_writer=request.param != "sqlite")
    dsn, schema = request.getfixturevalue("postgres_schema")  # sync fixture: resolved before any loop runs
    return lambda: PostgresRequestLog(dsn, schema)


@pytest.fixture
async def store(make_store: Callable[[], RequestLogStore]) -> AsyncIterator[RequestLogStore]:
    s = make_store()
    await s.open()
    yield s
    await s.close()


async def test_write_then_read_back_newest_first(store: RequestLogStore) -> None:
    await store.write([rec(1), rec(2, day=1), rec(3, stream=True, ttft_ms=1.5)])
    got = await store.query(RequestQuery())
    assert [r.request_id for r in got] == ["req_0002", "req_0003", "req_0001"]
    assert got[1].stream is True and got[1].ttft_ms == 1.5 and got[2].fallbacks == ["a"]
    assert await store.get("req_0003") == got[1]
    assert await store.get("nope") is None


async def test_writes_are_idempotent_by_request_id(store: RequestLogStore) -> None:
    await store.write([rec(1)])
    await store.write([rec(1, status=500), rec(2)])
    got = await store.query(RequestQuery())
    assert len(got) == 2 and (await store.get("req_0001")).status == 200  # type: ignore[union-attr]


async def test_filters(store: RequestLogStore) -> None:
    await store.write([rec(1), rec(2, key_id="k2"), rec(3, model="a", served_model="gpt"), rec(4, model="b"),
                       rec(5, status=429), rec(6, status=503), rec(7, day=2), rec(8, tenant_id="t2")])

    async def ids(**kw: Any) -> list[int]:
        return sorted(int(r.request_id[4:]) for r in await store.query(RequestQuery(**kw)))

    assert await ids(key_id="k2") == [2]
    assert await ids(model="gpt") == [1, 2, 3, 5, 6, 7, 8]
    assert await ids(status=429) == [5]
    assert await ids(status_class=5) == [6]
    assert await ids(min_latency_ms=6) == [6, 7, 8]
    assert await ids(since=DAY0 + 2, until=DAY0 + 5) == [2, 3, 4]
    assert await ids(since=DAY0 + DAY_S) == [7]
    assert await ids(tenant_id="t2") == [8]
    assert await store.get("req_0008", tenant_id="t1") is None
    assert await store.get("req_0008", tenant_id="t2") is not None


async def test_paging_with_a_cursor_across_day_tables(store: RequestLogStore) -> None:
    await store.write([rec(i, day=i % 3) for i in range(1, 26)])
    seen: list[str] = []
    q = RequestQuery(limit=7)
    while True:
        page = await store.query(q)
        seen += [r.request_id for r in page]
        if len(page) < q.limit:
            break
        q.cursor = (page[-1].ts, page[-1].request_id)
    assert len(seen) == 25 and len(set(seen)) == 25
    ts = [next(r.ts for r in [rec(int(s[4:]), day=int(s[4:]) % 3)]) for s in seen]
    assert ts == sorted(ts, reverse=True)


async def test_retention_drops_whole_days(store: RequestLogStore) -> None:
    await store.write([rec(1, day=0), rec(2, day=1), rec(3, day=2)])
    dropped = await store.drop_before(20_002)
    assert dropped == 2
    assert [r.request_id for r in await store.query(RequestQuery())] == ["req_0003"]
    await store.write([rec(4, day=0)])  # a late record for a dropped day opens it again
    assert await store.get("req_0004") is not None


class Flaky(MemoryRequestLog):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True
        self.calls = 0

    async def write(self, records: Sequence[RequestRecord]) -> None:
        self.calls += 1
        if self.fail:
            raise ConnectionError("database away")
        await super().write(records)


async def test_writer_keeps_records_while_the_store_is_down_and_writes_them_later() -> None:
    store, errors = Flaky(), []
    w = RequestLogWriter(store, batch_size=3, now=lambda: DAY0, on_error=errors.append)
    for i in range(7):
        w.add(rec(i))
    assert await w.flush() is False and w.pending == 7 and errors == ["write"] and not w.healthy
    store.fail = False
    assert await w.flush() is True and w.pending == 0 and w.healthy
    assert len(await store.query(RequestQuery())) == 7


async def test_writer_drops_oldest_when_the_buffer_is_full_and_counts_it() -> None:
    store, errors = Flaky(), []
    w = RequestLogWriter(store, batch_size=100, max_buffer=100, now=lambda: DAY0, on_error=errors.append)
    for i in range(105):
        w.add(rec(i))
    assert w.pending == 100 and w.dropped == 5 and errors.count("buffer_full") == 5


async def test_writer_loop_backs_off_while_the_store_is_down_instead_of_retrying_at_every_add() -> None:
    store = Flaky()
    w = RequestLogWriter(store, flush_interval_s=0.05, batch_size=5, now=lambda: DAY0)
    task = asyncio.get_running_loop().create_task(w.run())
    for i in range(300):  # steady traffic: the buffer stays past a batch, so every add wakes the loop
        w.add(rec(i))
        await asyncio.sleep(0.001)
    assert store.calls <= 8  # tries at 0.05, 0.1, 0.2 s... apart, not one per add
    store.fail = False
    await w.close()
    await asyncio.wait_for(task, 1)
    assert len(await store.query(RequestQuery(limit=500))) == 300


async def test_writer_loop_flushes_on_its_own_and_close_drains() -> None:
    store = MemoryRequestLog()
    w = RequestLogWriter(store, flush_interval_s=0.01, now=lambda: DAY0)
    task = asyncio.get_running_loop().create_task(w.run())
    w.add(rec(1))
    for _ in range(100):
        if await store.get("req_0001"):
            break
        await asyncio.sleep(0.01)
    assert await store.get("req_0001") is not None
    w.add(rec(2))
    await w.close()
    await asyncio.wait_for(task, 1)
    assert await store.get("req_0002") is not None


async def test_a_reused_client_request_id_keeps_both_requests_and_get_finds_the_newest(store: RequestLogStore) -> None:
    await store.write([rec(1, status=200), rec(1, status=200, ts=DAY0 + 50, tenant_id="t")])
    assert len(await store.query(RequestQuery())) == 2
    newest = await store.get("req_0001")
    assert newest is not None and newest.ts == DAY0 + 50
    assert (await store.get("req_0001", tenant_id="t")).ts == DAY0 + 50  # type: ignore[union-attr]
    assert await store.get("req_0001", tenant_id="other") is None


class Hanging(MemoryRequestLog):
    """Hangs in write until released (a database stuck on a lock)."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.entered = asyncio.Event()

    async def write(self, records: Sequence[RequestRecord]) -> None:
        self.entered.set()
        await self.release.wait()
        await super().write(records)


async def test_a_write_cancelled_mid_way_keeps_its_records_for_the_next_flush() -> None:
    store = Hanging()
    w = RequestLogWriter(store, batch_size=10, now=lambda: DAY0)
    for i in range(5):
        w.add(rec(i))
    flush = asyncio.create_task(w.flush())
    await store.entered.wait()
    flush.cancel()
    await asyncio.gather(flush, return_exceptions=True)
    assert w.pending == 5
    store.release.set()
    assert await w.flush() is True and len(await store.query(RequestQuery())) == 5


async def test_sqlite_batches_are_written_by_a_writer_process_that_ends_with_the_store(
        tmp_path: Any, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "log.db"
    store = SqliteRequestLog(str(path), background_writer=True)
    await store.open()
    await store.write([*(rec(i) for i in range(3)), rec(9, day=1)])
    assert "writer process failed" not in caplog.text  # not the database thread's fallback
    assert len(writer_processes(path)) == 1
    assert [r.request_id for r in await store.query(RequestQuery(limit=10))] == [
        "req_0009", "req_0002", "req_0001", "req_0000"]
    await store.close()
    assert not writer_processes(path)


async def test_sqlite_batches_the_writer_process_cannot_take_are_written_on_the_thread(
        tmp_path: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import aigw.observability.request_log_sql as sql

    monkeypatch.setattr(sql, "_WRITER", "aigw.no_such_module:write")  # the child dies at start
    store = SqliteRequestLog(str(tmp_path / "log.db"), background_writer=True)
    await store.open()
    try:
        await store.write([rec(1), rec(2, day=1)])
        await store.write([rec(3)])
        assert caplog.text.count("request log writer process failed") == 1  # once, not per batch
        assert sorted(r.request_id for r in await store.query(RequestQuery(limit=10))) == [
            "req_0001", "req_0002", "req_0003"]
    finally:
        await store.close()


async def test_a_sqlite_log_file_another_process_holds_is_opened_once_it_lets_go(tmp_path: Any) -> None:
    """A worker starting while another still switches the new file to WAL: the switch fails at once with
    "database is locked", and the log used to fall back to memory for good (its records never stored)."""
    import sqlite3
    import threading

    path = tmp_path / "log.db"
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN IMMEDIATE")
    holder.execute("CREATE TABLE held (x)")
    released = threading.Timer(1.5, lambda: holder.execute("ROLLBACK"))
    released.start()
    store = SqliteRequestLog(str(path), background_writer=False)
    try:
        await store.open()
        await store.write([rec(1)])
        assert [r.request_id for r in await store.query(RequestQuery(limit=10))] == ["req_0001"]
    finally:
        released.join()
        holder.close()
        await store.close()


async def test_replicas_opening_the_same_new_day_at_once_all_write(postgres_schema: tuple[str, str]) -> None:
    """Several replicas' first writes of a day race to create its table: none may fail on it."""
    dsn, schema = postgres_schema
    replicas = [PostgresRequestLog(dsn, schema) for _ in range(6)]
    for r in replicas:
        await r.open()
    try:
        for day in range(1, 4):
            await asyncio.gather(*(r.write([rec(100 * i + day, day=day)]) for i, r in enumerate(replicas)))
        assert len(await replicas[0].query(RequestQuery(limit=100))) == 18
    finally:
        for r in replicas:
            await r.close()


async def test_an_id_or_filter_holding_nul_names_nothing(store: RequestLogStore) -> None:
    # PostgreSQL text cannot hold NUL: asked as is, it refused the query (the admin API answered 503, not 404)
    await store.write([rec(1)])
    assert await store.get("req_0001\x00") is None
    assert await store.query(RequestQuery(model="gpt\x00")) == []
    assert await store.query(RequestQuery(key_id="k1\x00")) == []


async def test_a_record_whose_text_holds_nul_is_written_and_holds_up_no_record_after_it(
        store: RequestLogStore) -> None:
    """PostgreSQL text cannot hold NUL: a batch with a client's ``"model": "gpt\\u0000evil"`` (or a logged body
    holding one) failed on every retry and no record after it was written. There NUL is kept as U+FFFD."""
    errors: list[str] = []
    w = RequestLogWriter(store, batch_size=2, now=lambda: DAY0, on_error=errors.append)
    w.add(rec(1, model="gpt\x00evil", request_body='{"content": "a\x00b"}'))
    for i in range(2, 5):
        w.add(rec(i))
    assert await w.flush() is True and errors == [] and w.pending == 0
    held = "\ufffd" if isinstance(store, PostgresRequestLog) else "\x00"
    got = await store.query(RequestQuery(limit=10))
    assert [r.request_id for r in got] == ["req_0004", "req_0003", "req_0002", "req_0001"]
    assert (got[-1].model, got[-1].request_body) == (f"gpt{held}evil", f'{{"content": "a{held}b"}}')
    [found] = await store.query(RequestQuery(model="gpt\x00evil"))  # the name as the client sent it
    assert found.request_id == "req_0001"
