"""The gate against a Redis that is full (``maxmemory`` reached, ``maxmemory-policy noeviction``): Redis
answers but refuses writes. Steps then skip it for the skip window (limits and budgets take their failure
policies), /health says why, the log says it once, and a settle refused for want of memory never ran, so it
is owed and sent once Redis has room again: the settled spend ends up at the calls' real cost.

Against a redis-server of the test's own, filled under a maxmemory set on it alone (never the shared one).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import time

import pytest

from aigw.stores.base import NANO, Limits, Scope
from aigw.stores.failures import SettleOwed, StoreSkipped, out_of_memory
from tests.support.services import fill_redis, make_room
from tests.unit.stores.test_gate_owed import NOW, _window_keys, gate


async def _until_answering(counters: object) -> str:
    deadline = time.monotonic() + 5
    while True:
        answering, detail = await counters.health()  # type: ignore[attr-defined]
        if answering and not counters.owed:  # type: ignore[attr-defined]
            await asyncio.sleep(0.05)  # the last chunk's replies handed out
            return str(detail)
        assert time.monotonic() < deadline, detail
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("lean", [True, False])
async def test_a_full_redis_skips_the_gate_and_owes_the_settles(
        own_redis: tuple[str, subprocess.Popen[bytes]], lean: bool, caplog: pytest.LogCaptureFixture) -> None:
    url, _ = own_redis
    # a tpm limit makes the settle's first write a HINCRBY, which a full Redis refuses (a ZREM first it allows)
    scope = Scope("key", "full", Limits(tpm=100_000, budget_usd=1.0, budget_period="daily"))
    reserve, cost = NANO // 10, NANO // 50
    async with gate(url, lean=lean, window_s=0.2) as counters:
        admitted, res = await counters.enter([scope], "call-1", 100, [scope], reserve, NOW)
        assert admitted.allowed and res is not None and res.allowed
        fill_redis(url)
        caplog.set_level(logging.WARNING, "aigw.gate")
        with pytest.raises(Exception) as refused:  # Redis's own answer: no second failure needed
            await counters.enter([scope], "call-2", 100, [scope], reserve, NOW)
        assert out_of_memory(refused.value) and not isinstance(refused.value, StoreSkipped)
        with pytest.raises(SettleOwed) as owed:  # skipped in the window: kept
            await counters.leave([scope], "call-1", 50, admitted.taken_at, [scope], reserve, cost, NOW, [0.01])
        assert out_of_memory(owed.value)  # says why (metrics count it as "full")
        answering, detail = await counters.health()
        assert not answering and "out of memory" in detail and "1 settles owed" in detail, detail
        oom_lines = [r for r in caplog.records if "out of memory" in r.getMessage()]
        assert len(oom_lines) == 1, [r.getMessage() for r in caplog.records]

        await asyncio.sleep(0.25)  # the window is over: the probe finds Redis still full, and stays quiet
        with pytest.raises(Exception) as again:
            await counters.enter([scope], "call-3", 100, [scope], reserve, NOW)
        assert out_of_memory(again.value)
        assert len([r for r in caplog.records if "out of memory" in r.getMessage()]) == 1

        make_room(url)
        await asyncio.sleep(0.25)
        detail = await _until_answering(counters)  # the health check probes the idle gate
        assert "0 settles owed" in detail
        assert _window_keys(url, scope) == (cost, 0, 0)  # the settle ran once, the lease is gone
        crossed = await asyncio.wait_for(owed.value.later, 1)
        assert [t for _, _, t in crossed] == [0.01]


async def test_a_settle_refused_while_no_window_is_open_is_owed_too(
        own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    """The first refusal is the settle itself: it did not run, so it is kept rather than lost (before, its
    cost never reached the settled spend: a budget overrun by every call that ended while Redis was full)."""
    url, _ = own_redis
    scope = Scope("key", "first", Limits(tpm=100_000, budget_usd=1.0, budget_period="daily"))
    async with gate(url, window_s=0.2) as counters:
        admitted, _ = await counters.enter([scope], "c", 100, [scope], NANO // 10, NOW)
        fill_redis(url)
        with pytest.raises(SettleOwed):
            await counters.leave([scope], "c", 50, admitted.taken_at, [scope], NANO // 10, 12345, NOW, [])
        make_room(url)
        await asyncio.sleep(0.25)
        await _until_answering(counters)
        assert _window_keys(url, scope) == (12345, 0, 0)
