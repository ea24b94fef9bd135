"""Shutdown with settles owed through a Redis outage: sent if Redis answers in time, else logged as lost
(before: dropped with the process, without a word)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import pytest

from aigw.stores.failures import SettleOwed
from aigw.stores.redis.gate_batch import GateBatcher
from aigw.stores.redis.pipe import Script


class FakeRedis:
    """The batch script's runner: down (every call times out) or answering (no crossings per step)."""

    def __init__(self) -> None:
        self.down = False
        self.steps_run = 0

    async def evalsha(self, script: Script, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        if self.down:
            raise TimeoutError("Redis did not answer")
        n = int(bytes(args[0]).split(b"\r\n")[1])
        self.steps_run += n
        return [[] for _ in range(n)]

    def evalsha_now(self, script: Script, keys: Sequence[bytes], args: Sequence[bytes]) -> None:
        return None


async def _owe_two(redis: FakeRedis, batcher: GateBatcher) -> list[asyncio.Future[Any]]:
    redis.down = True
    for _ in range(2):  # the first failure, and one after it: the skip window opens
        with pytest.raises(TimeoutError):
            await batcher.run(b"e", [], [])
    owed = []
    for _ in range(2):
        with pytest.raises(SettleOwed) as skipped:
            await batcher.run(b"l", [], [], replayable=True)
        owed.append(skipped.value.later)
    assert batcher.owed == 2
    return owed


async def test_owed_settles_are_sent_at_shutdown_when_redis_answers() -> None:
    redis, reports = FakeRedis(), []
    batcher = GateBatcher(redis, retry_after_s=0.05, report=lambda outcome, n: reports.append((outcome, n)))
    later = await _owe_two(redis, batcher)
    redis.down = False
    await batcher.close(timeout_s=2.0)
    assert batcher.owed == 0 and redis.steps_run == 2
    assert all(f.done() and not f.cancelled() for f in later)
    assert ("replayed", 2) in reports


async def test_owed_settles_left_at_shutdown_are_logged_as_lost(caplog: pytest.LogCaptureFixture) -> None:
    redis, reports = FakeRedis(), []
    batcher = GateBatcher(redis, retry_after_s=0.05, report=lambda outcome, n: reports.append((outcome, n)))
    later = await _owe_two(redis, batcher)
    with caplog.at_level(logging.ERROR, logger="aigw.gate"):
        await batcher.close(timeout_s=0.3)
    assert batcher.owed == 0 and all(f.cancelled() for f in later)
    assert ("dropped", 2) in reports
    assert any("2 settles owed" in r.getMessage() and "lost" in r.getMessage() for r in caplog.records), caplog.text
