"""The logs through which a cache purge reaches other processes: a file (workers of one serve) and a
Redis stream (every replica, against a real Redis; skipped without one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aigw.stores.purge_log import FilePurgeLog, Purge, PurgeLog
from aigw.stores.redis.client import make_redis
from aigw.stores.redis.purge_log import RedisPurgeLog


@pytest.fixture
async def redis_log(redis_isolated: tuple[str, str]) -> AsyncIterator[tuple[RedisPurgeLog, Any]]:
    url, prefix = redis_isolated
    client = make_redis(url)
    yield RedisPurgeLog(client, prefix), client
    await client.aclose()


async def readers_see_what_came_after_their_cursor(first: PurgeLog, second: PurgeLog) -> None:
    """``first`` and ``second`` read and write the same log, as two processes would."""
    await first.announce("t-old", None)
    cursor = await second.head()  # what was there before it looked is not its business
    assert await second.since(cursor) == (cursor, [])
    own = await first.announce("t1", None)
    await first.announce(None, "gpt-4o")
    cursor, got = await second.since(cursor)
    assert [(p.tenant, p.model) for p in got] == [("t1", None), (None, "gpt-4o")]
    assert got[0].id == own  # the announcer can tell its own purge when it reads it back
    assert await second.since(cursor) == (cursor, [])
    await second.announce(None, None)
    assert [(p.tenant, p.model) for p in (await first.since(cursor))[1]] == [(None, None)]


async def test_a_file_log_shared_by_two_readers(tmp_path: Path) -> None:
    path = str(tmp_path / "purges.log")
    await readers_see_what_came_after_their_cursor(FilePurgeLog(path), FilePurgeLog(path))


async def test_a_file_log_that_does_not_exist_yet_is_empty(tmp_path: Path) -> None:
    log = FilePurgeLog(str(tmp_path / "none-yet.log"))
    assert await log.head() == "0"
    assert await log.since("0") == ("0", [])


async def test_a_line_still_being_written_waits_for_the_next_read(tmp_path: Path) -> None:
    path = tmp_path / "purges.log"
    log = FilePurgeLog(str(path))
    await log.announce("t1", None)
    with path.open("ab") as f:
        f.write(b'{"tenant": "t2", "mo')  # another worker halfway through its write
    cursor, got = await log.since("0")
    assert got == [Purge("0", "t1", None, cursor)] and cursor == str(len(b'{"tenant": "t1", "model": null}\n'))
    with path.open("ab") as f:
        f.write(b'del": null}\n')
    assert [(p.tenant, p.model) for p in (await log.since(cursor))[1]] == [("t2", None)]


async def test_a_redis_log_shared_by_two_replicas(redis_log: tuple[RedisPurgeLog, Any]) -> None:
    log, client = redis_log
    await readers_see_what_came_after_their_cursor(log, RedisPurgeLog(client, log.key.removesuffix("purges:cache")))
    assert await client.xlen(log.key) == 4


async def test_a_redis_log_is_not_emptied_by_a_purge_of_every_cache_entry(
        redis_log: tuple[RedisPurgeLog, Any]) -> None:
    from aigw.stores.redis.cache import RedisCacheStore

    log, client = redis_log
    prefix = log.key.removesuffix("purges:cache")
    await log.announce("t1", None)
    await RedisCacheStore(client, prefix).purge(None)
    assert await client.xlen(log.key) == 1
