"""The gate against a Redis that is full (``maxmemory`` reached, ``maxmemory-policy noeviction``): Redis
answers but refuses writes. Steps then skip it for the skip window (limits and budgets take their failure
policies), /health says why, the log says it once, and a settle refused for want of memory never ran, so it
is owed and sent once Redis has room again: the settled spend ends up at the calls' real cost.

Against a redis-server of the test's own, filled under a maxmemory set on it alone (never the shared one).
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
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


@pytest.mark.parametrize("lean", [True, False])
async def test_with_the_window_off_a_settle_refused_by_a_full_redis_is_owed_and_sent_once_it_has_room(
        own_redis: tuple[str, subprocess.Popen[bytes]], lean: bool) -> None:
    """``store_retry_after_s: 0`` (every step tries Redis): a refused settle never ran either, so it is kept
    all the same and sent once Redis takes writes (before, it was raised and lost: the settled spend fell
    behind the calls' cost, a budget overrun by every call that ended while Redis was full)."""
    url, _ = own_redis
    scope = Scope("key", "no-window", Limits(tpm=100_000, budget_usd=1.0, budget_period="daily"))
    reserve, costs = NANO // 10, [NANO // 50, NANO // 40, 12345]
    async with gate(url, lean=lean, window_s=0) as counters:
        admitted = [(await counters.enter([scope], f"nw-{i}", 100, [scope], reserve, NOW))[0] for i in range(3)]
        fill_redis(url)
        owed = []
        for i, cost in enumerate(costs):
            with pytest.raises(SettleOwed) as kept:
                await counters.leave([scope], f"nw-{i}", 50, admitted[i].taken_at, [scope], reserve, cost, NOW,
                                     [0.01])
            owed.append(kept.value)
        assert counters.owed == 3
        with pytest.raises(Exception) as refused:  # no window: each step still goes to Redis, none is skipped
            await counters.enter([scope], "nw-late", 100, [scope], reserve, NOW)
        assert out_of_memory(refused.value) and not isinstance(refused.value, StoreSkipped)
        assert counters.owed == 3  # sent again with the refused step: still refused, still owed (not lost)

        make_room(url)
        other = Scope("key", "no-window-other", Limits(rpm=1000))
        assert (await counters.admit([other], "after", 0)).allowed  # Redis takes a step: the owed ones follow
        deadline = time.monotonic() + 5
        while counters.owed:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.05)  # the last chunk's replies handed out
        assert _window_keys(url, scope) == (sum(costs), 0, 0)  # each ran once, no lease left
        crossed = await asyncio.wait_for(owed[0].later, 1)
        assert [t for _, _, t in crossed] == [0.01]


async def test_with_the_window_off_an_idle_gateway_sends_what_a_full_redis_refused_through_its_health_check(
        own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, _ = own_redis
    scope = Scope("key", "no-window-idle", Limits(tpm=100_000, budget_usd=1.0, budget_period="daily"))
    async with gate(url, window_s=0) as counters:
        admitted, _ = await counters.enter([scope], "i", 100, [scope], NANO // 10, NOW)
        fill_redis(url)
        with pytest.raises(SettleOwed):
            await counters.leave([scope], "i", 50, admitted.taken_at, [scope], NANO // 10, 4321, NOW, [])
        answering, detail = await counters.health()  # no window, nothing skipped, but a settle waits on Redis
        assert not answering and "out of memory" in detail and "1 settles owed" in detail, detail
        await asyncio.sleep(0.1)
        assert counters.owed == 1  # the check sent it again: still full, refused, still owed
        assert not (await counters.health())[0]
        make_room(url)
        assert "0 settles owed" in await _until_answering(counters)  # sent: answering again
        assert _window_keys(url, scope) == (4321, 0, 0)


async def test_with_the_window_off_a_settle_that_timed_out_is_owed_as_its_once_only_part(
        own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    """Only Redis's own refusal says a settle did not run: one sent and not answered may have run, so it is raised
    as before (not a ``StoreSkipped``) and sent again only as the part of it that counts once: the lease's
    settle, which here ran when Redis resumed, so the second sending changes nothing."""
    url, proc = own_redis
    scope = Scope("key", "no-window-stall", Limits(budget_usd=1.0, budget_period="daily"))
    async with gate(url, window_s=0) as counters:
        admitted, _ = await counters.enter([], "s", 0, [scope], NANO // 10, NOW)
        os.kill(proc.pid, signal.SIGSTOP)
        try:
            with pytest.raises(Exception) as failed:
                await counters.leave([], "s", 0, admitted.taken_at, [scope], NANO // 10, 4321, NOW, [])
            assert not isinstance(failed.value, StoreSkipped) and counters.owed == 1
        finally:
            os.kill(proc.pid, signal.SIGCONT)
        for _ in range(100):  # the health check's empty batch tells that Redis answers: the owed settle goes
            await counters.health()
            if not counters.owed:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        assert _window_keys(url, scope) == (4321, 0, 0) and counters.owed == 0


async def test_with_the_window_off_health_stays_degraded_while_a_replay_of_refused_settles_is_out(
        own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    """A replay takes the owed settles off the list while its batch is out: a health check then must not
    forget the spell, or, when the still-full Redis refuses them again, they are owed and /health/ready says ok."""
    url, _ = own_redis
    scope = Scope("key", "no-window-race", Limits(tpm=100_000, budget_usd=1.0, budget_period="daily"))
    async with gate(url, window_s=0) as counters:
        admitted, _ = await counters.enter([scope], "r", 100, [scope], NANO // 10, NOW)
        fill_redis(url)
        with pytest.raises(SettleOwed):
            await counters.leave([scope], "r", 50, admitted.taken_at, [scope], NANO // 10, 999, NOW, [])
        assert not (await counters.health())[0]  # degraded; the check starts a replay
        for _ in range(3):  # the replay's batch is out (the settle off the list), then refused again
            await asyncio.sleep(0)
            assert not (await counters.health())[0], "ok while a refused settle was still being sent"
        await asyncio.sleep(0.1)
        assert counters.owed == 1  # refused again: still owed
        answering, detail = await counters.health()
        assert not answering and "out of memory" in detail, detail
        make_room(url)
        await _until_answering(counters)
        assert _window_keys(url, scope)[0] == 999
