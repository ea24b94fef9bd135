"""The Redis gate's skip window: a stalled Redis costs its timeout about once per window, not per call.

Against a redis-server of the test's own (SIGSTOPped and SIGCONTed by its pid; never the shared
one), through the lean pipe with its real 0.25 s timeout and through redis-py (the URLs the pipe
does not speak), which times out the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigw.stores.base import Limits, Scope
from aigw.stores.failures import StoreSkipped
from aigw.stores.redis.client import make_redis
from aigw.stores.redis.counters import RedisCounters
from aigw.stores.redis.pipe import TIMEOUT_S, RedisPipe

WINDOW_S = 0.5




@contextlib.asynccontextmanager
async def gate(url: str, lean: bool, window_s: float = WINDOW_S) -> AsyncIterator[RedisCounters]:
    redis = make_redis(url, socket_timeout_s=TIMEOUT_S)
    pipe = RedisPipe.from_url(url) if lean else None  # the gate's own 0.25 s timeout
    try:
        yield RedisCounters(redis, "aigw-test:skip:", pipe=pipe, retry_after_s=window_s)
    finally:
        if pipe is not None:
            await pipe.aclose()
        await redis.aclose()


async def _stalled_calls(counters: RedisCounters, scope: Scope, n: int, gap_s: float) -> tuple[float, list[Any]]:
    """``n`` sequential admits, ``gap_s`` apart: (wall time, each outcome or error)."""
    out: list[Any] = []
    started = time.perf_counter()
    for i in range(n):
        try:
            out.append(await counters.admit([scope], f"stalled-{i}", 0))
        except Exception as exc:
            out.append(exc)
        await asyncio.sleep(gap_s)
    return time.perf_counter() - started, out


@pytest.mark.parametrize("lean", [True, False], ids=["pipe", "redis-py"])
async def test_a_stalled_redis_costs_one_timeout_per_window_not_one_per_call(
        own_redis: tuple[str, subprocess.Popen[bytes]], lean: bool) -> None:
    url, proc = own_redis
    scope = Scope("key", "stall", Limits(rpm=1000))
    async with gate(url, lean) as counters:
        for i in range(3):
            assert (await counters.admit([scope], f"before-{i}", 0)).allowed
        assert (await counters.health())[0]
        os.kill(proc.pid, signal.SIGSTOP)
        n, gap = 30, 0.04  # ~1.2 s of calls: over two windows
        took, outcomes = await _stalled_calls(counters, scope, n, gap)
        waited = [o for o in outcomes if not isinstance(o, StoreSkipped)]
        assert all(isinstance(o, Exception) for o in outcomes)
        # two timeouts open the window, then one probe per window: ~4 here, never one per call (30 x 0.25 s)
        assert 2 <= len(waited) <= 5, outcomes
        assert took < n * gap + 6 * TIMEOUT_S + 0.5
        answering, detail = await counters.health()
        assert not answering and "skipped" in detail

        os.kill(proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 5
        while True:  # the next probe after the window finds Redis answering; the gate uses it again
            try:
                after = await counters.admit([scope], "after", 0)
                break
            except Exception:
                assert time.monotonic() < deadline, "the gate never used Redis again"
                await asyncio.sleep(0.05)
        assert after.allowed and (await counters.health())[0]
        # counts are right: the skipped calls took nothing; a call that timed out may have run (as before)
        used = 1000 - (after.remaining_requests or 0)
        assert 3 + 1 <= used <= 3 + 1 + len(waited)
        fresh = Scope("key", "after-stall", Limits(rpm=3))
        answers = [await counters.admit([fresh], f"f{i}", 0) for i in range(4)]
        assert [a.allowed for a in answers] == [True, True, True, False]


async def test_an_idle_gateway_finds_redis_back_through_its_health_check(
        own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = own_redis
    scope = Scope("key", "idle", Limits(rpm=10))
    async with gate(url, lean=True, window_s=0.2) as counters:
        await counters.admit([scope], "warm", 0)
        os.kill(proc.pid, signal.SIGSTOP)
        for i in range(2):  # the first failure, then one sent after it: Redis is down
            with pytest.raises(TimeoutError):
                await counters.admit([scope], f"stalled-{i}", 0)
        with pytest.raises(StoreSkipped):
            await counters.admit([scope], "skipped", 0)
        os.kill(proc.pid, signal.SIGCONT)
        assert not (await counters.health())[0]  # still in the window: not tried
        await asyncio.sleep(0.25)
        assert (await counters.health())[0]  # no call came to probe: the health check did
        assert (await counters.admit([scope], "back", 0)).allowed


async def test_only_one_call_probes_at_a_time(own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = own_redis
    scope = Scope("key", "probe", Limits(rpm=100))
    async with gate(url, lean=True, window_s=0.2) as counters:
        await counters.admit([scope], "warm", 0)
        os.kill(proc.pid, signal.SIGSTOP)
        for i in range(2):
            with pytest.raises(TimeoutError):
                await counters.admit([scope], f"stalled-{i}", 0)
        await asyncio.sleep(0.25)  # the window is over: the next call probes
        started = time.perf_counter()
        outcomes = await asyncio.gather(*(counters.admit([scope], f"c{i}", 0) for i in range(10)),
                                        return_exceptions=True)
        assert sum(not isinstance(o, StoreSkipped) for o in outcomes) == 1, outcomes  # the probe waited alone
        assert time.perf_counter() - started < 2 * TIMEOUT_S + 0.3


async def test_a_zero_window_tries_redis_on_every_call(own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = own_redis
    scope = Scope("key", "zero", Limits(rpm=100))
    async with gate(url, lean=True, window_s=0) as counters:
        await counters.admit([scope], "warm", 0)
        os.kill(proc.pid, signal.SIGSTOP)
        _, outcomes = await _stalled_calls(counters, scope, 3, 0)
        assert all(isinstance(o, TimeoutError) for o in outcomes)


@pytest.mark.parametrize("lean", [True, False], ids=["pipe", "redis-py"])
async def test_one_timeout_alone_skips_nothing(own_redis: tuple[str, subprocess.Popen[bytes]], lean: bool) -> None:
    """What a long pause of the gateway itself looks like (a GC): the call in flight times out although
    Redis is fine. The next call goes to Redis and is answered: no window, no budget refused for a second."""
    url, proc = own_redis
    scope = Scope("key", "blip", Limits(rpm=100))
    async with gate(url, lean) as counters:
        await counters.admit([scope], "warm", 0)
        os.kill(proc.pid, signal.SIGSTOP)
        with pytest.raises(Exception) as failed:  # the pipe's TimeoutError, or redis-py's own
            await counters.admit([scope], "in-flight", 0)
        assert not isinstance(failed.value, StoreSkipped)
        os.kill(proc.pid, signal.SIGCONT)
        answers = [await counters.admit([scope], f"next-{i}", 0) for i in range(3)]
        assert all(a.allowed for a in answers)
        assert (await counters.health())[0]
        assert "0 calls skipped in 0 outages" in (await counters.health())[1]
