"""Settles owed through a Redis outage: a leave skipped in the gate's skip window is kept and sent once Redis
answers again (exactly once: it never ran), so the calls that ended in the outage are in the settled spend
and their leases are gone; the queue is bounded; a leave that timed out or was lost on its way is sent again
as its part that counts once however often it runs; and only one probe is out at a time.

Against a redis-server of the test's own, SIGSTOPped and SIGCONTed by its pid (never the shared one).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import AsyncIterator

import pytest
import redis as redis_sync

from aigw.stores.base import NANO, Limits, Scope, window_of
from aigw.stores.failures import SettleOwed, StoreSkipped
from aigw.stores.redis.client import make_redis
from aigw.stores.redis.counters import RedisCounters
from aigw.stores.redis.pipe import TIMEOUT_S, RedisPipe

PREFIX = "aigw-test:owed:"
NOW = time.time()




@contextlib.asynccontextmanager
async def gate(url: str, lean: bool = True, window_s: float = 0.3,
               reports: list[tuple[str, int]] | None = None) -> AsyncIterator[RedisCounters]:
    redis = make_redis(url, socket_timeout_s=TIMEOUT_S)
    pipe = RedisPipe.from_url(url) if lean else None
    report = None if reports is None else (lambda outcome, n: reports.append((outcome, n)))
    try:
        yield RedisCounters(redis, PREFIX, parallel_ttl_s=600, pipe=pipe, retry_after_s=window_s, report=report)
    finally:
        if pipe is not None:
            await pipe.aclose()
        await redis.aclose()


def _window_keys(url: str, scope: Scope) -> tuple[int, int, int]:
    """(settled, reserved, leases) of the scope's budget window, read directly."""
    base = f"{PREFIX}bg:{scope.ref}:{window_of(scope.limits.budget_period, NOW)}"
    client = redis_sync.Redis.from_url(url)
    try:
        return (int(client.get(base + ":settled") or 0), int(client.get(base + ":reserved") or 0),
                int(client.zcard(base + ":leases")))
    finally:
        client.close()


async def _confirm_outage(counters: RedisCounters, proc: subprocess.Popen[bytes]) -> None:
    """Stall Redis; two admits time out (the first failure, one sent after it): the skip window opens."""
    os.kill(proc.pid, signal.SIGSTOP)
    other = Scope("key", "other", Limits(rpm=1000))
    for i in range(2):  # the pipe's TimeoutError, or redis-py's own
        with pytest.raises(Exception) as failed:
            await counters.admit([other], f"confirm-{i}", 0)
        assert not isinstance(failed.value, StoreSkipped)
    with pytest.raises(StoreSkipped):
        await counters.admit([other], "skipped", 0)


async def _until_owed_sent(counters: RedisCounters) -> None:
    deadline = time.monotonic() + 5
    while True:
        answering, detail = await counters.health()  # the health check probes an idle gate
        if answering and not counters.owed:
            break
        assert time.monotonic() < deadline, (counters.owed, detail)
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.05)  # the last chunk's replies handed out


async def _enter(counters: RedisCounters, scope: Scope, slots: list[str], amount: int) -> None:
    for slot in slots:
        _, res = await counters.enter([], slot, 0, [scope], amount, NOW)
        assert res is not None and res.allowed


async def test_settles_skipped_in_an_outage_are_sent_when_redis_answers(
        own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = own_redis
    scope = Scope("key", "owed", Limits(budget_usd=1.0, budget_period="daily"))
    reserve = NANO // 10  # each call reserves $0.10 and costs less
    costs = [NANO // 100 * (i + 1) for i in range(5)]  # $0.01 .. $0.05: $0.15, crossing 10 %
    slots = [f"call-{i}" for i in range(5)]
    reports: list[tuple[str, int]] = []
    async with gate(url, reports=reports) as counters:
        await _enter(counters, scope, slots, reserve)
        assert _window_keys(url, scope) == (0, 5 * reserve, 5)
        await _confirm_outage(counters, proc)
        owed = []
        for slot, cost in zip(slots, costs, strict=True):  # the calls end in the window: their settles skipped
            with pytest.raises(SettleOwed) as skipped:
                await counters.settle([scope], reserve, cost, NOW, [0.1, 0.5], slot)
            owed.append(skipped.value.later)
        answering, detail = await counters.health()
        assert not answering and "5 settles owed" in detail, detail
        assert not any(f.done() for f in owed)

        os.kill(proc.pid, signal.SIGCONT)
        await _until_owed_sent(counters)
        # each settle ran once: the settled spend is the calls' real cost, the leases are gone
        assert _window_keys(url, scope) == (sum(costs), 0, 0)
        assert "0 settles owed" in (await counters.health())[1]
        # what each returned reaches its caller's future: the crossing of 10 % (by the settle that made it)
        results = [f.result() for f in owed]
        assert [c for r in results for c in r] == [("key:owed", window_of("daily", NOW), 0.1)], results
        assert ("owed", 1) in reports and sum(n for o, n in reports if o == "replayed") == 5
        # the next call is counted against the true spend
        _, res = await counters.enter([], "next", 0, [scope], NANO - sum(costs) + 1, NOW)
        assert res is not None and not res.allowed


async def test_owed_rate_steps_free_the_parallel_slot_and_settle_tokens(
        own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = own_redis
    scope = Scope("key", "parallel", Limits(max_parallel=1, tpm=1000))
    async with gate(url, lean=False) as counters:  # redis-py: the URLs the lean pipe does not speak
        taken = await counters.admit([scope], "first", 100)
        assert taken.allowed
        await _confirm_outage(counters, proc)
        with pytest.raises(SettleOwed):
            await counters.release([scope], "first", -60, taken.taken_at)  # used 40 of the 100 estimated
        os.kill(proc.pid, signal.SIGCONT)
        await _until_owed_sent(counters)
        second = await counters.admit([scope], "second", 10)  # the slot is free: no wait for its TTL
        assert second.allowed and second.remaining_tokens == 1000 - 40 - 10


async def test_the_owed_queue_is_bounded_and_drops_the_oldest(
        own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = own_redis
    scope = Scope("key", "bounded", Limits(budget_usd=10.0, budget_period="daily"))
    reports: list[tuple[str, int]] = []
    slots = [f"b-{i}" for i in range(5)]
    async with gate(url, reports=reports) as counters:
        counters._batch.owed_settles.limit = 3
        await _enter(counters, scope, slots, NANO)
        await _confirm_outage(counters, proc)
        owed = []
        for i, slot in enumerate(slots):
            with pytest.raises(SettleOwed) as skipped:
                await counters.settle([scope], NANO, (i + 1) * 1000, NOW, [], slot)
            owed.append(skipped.value.later)
        assert counters.owed == 3 and ("dropped", 1) in reports and counters._batch.owed_settles.counts["dropped"] == 2
        await asyncio.sleep(0)  # the callers' futures follow the batcher's
        assert [f.cancelled() for f in owed] == [True, True, False, False, False]
        os.kill(proc.pid, signal.SIGCONT)
        await _until_owed_sent(counters)
        settled, reserved, leases = _window_keys(url, scope)
        assert settled == 3000 + 4000 + 5000  # the three kept; the two dropped wait for their leases to expire
        assert (reserved, leases) == (2 * NANO, 2)


async def test_a_leave_that_timed_out_but_ran_is_sent_again_and_counts_once(
        own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    url, proc = own_redis
    scope = Scope("key", "timed-out", Limits(budget_usd=10.0, budget_period="daily"))
    reports: list[tuple[str, int]] = []
    async with gate(url, reports=reports) as counters:
        await _enter(counters, scope, ["t-0"], NANO)
        os.kill(proc.pid, signal.SIGSTOP)
        with pytest.raises(TimeoutError):  # sent, no answer: it may have run (here it will, once Redis resumes)
            await counters.settle([scope], NANO, 1000, NOW, [], "t-0")
        with pytest.raises(TimeoutError):  # a call sent after that fails too: the window opens
            await counters.admit([Scope("key", "x", Limits(rpm=10))], "x", 0)
        assert counters.owed == 1  # its once-only part, kept
        os.kill(proc.pid, signal.SIGCONT)
        await _until_owed_sent(counters)
        assert _window_keys(url, scope) == (1000, 0, 0)  # the first ran when Redis resumed; the second changed nothing
        assert counters._batch.owed_settles.counts == {"owed": 1, "replayed": 1, "dropped": 0, "failed": 0}


async def test_a_leave_lost_on_its_way_is_sent_again_and_settles_the_call(
        own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    """A settle that never reached Redis (the connection swallowed it) and timed out: its cost reached the settled
    spend only when the lease expired, never (the expiry frees the reservation, not the cost), and its
    max-parallel slot stayed taken for the lease's life."""
    from tests.integration.routing_support import TcpProxy

    url, _ = own_redis
    proxy = TcpProxy(int(url.rsplit(":", 1)[1].split("/")[0]))
    budget = Scope("key", "lost", Limits(budget_usd=10.0, budget_period="daily"))
    rate = Scope("key", "lost-rate", Limits(max_parallel=1))
    try:
        async with gate(f"redis://127.0.0.1:{proxy.port}/0", window_s=0) as counters:
            _, res = await counters.enter([rate], "l-0", 0, [budget], NANO, NOW)
            assert res is not None and res.allowed
            proxy.hung = True  # what is sent now goes nowhere, and nothing comes back
            with pytest.raises(TimeoutError):
                await counters.leave([rate], "l-0", 0, 0, [budget], NANO, 2500, NOW, [])
            proxy.hung = False
            assert _window_keys(url, budget) == (0, NANO, 1)  # it did not run
            await _until_owed_sent(counters)
            assert _window_keys(url, budget) == (2500, 0, 0)  # settled to its cost, the lease gone
            admitted, _ = await counters.enter([rate], "l-1", 0, [], 0, NOW)
            assert admitted.allowed  # its parallel slot is free: no wait for the lease's TTL
    finally:
        proxy.stop()


async def test_enters_are_not_owed(own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    """An enter skipped is refused or let through by the policies; sent later, it would take a slot and a lease
    for a call that is over (or never ran)."""
    url, proc = own_redis
    scope = Scope("key", "enter", Limits(budget_usd=10.0, budget_period="daily"))
    async with gate(url) as counters:
        await _enter(counters, scope, ["warm"], 1)
        await _confirm_outage(counters, proc)
        with pytest.raises(StoreSkipped) as skipped:
            await counters.enter([], "e-1", 0, [scope], NANO, NOW)
        assert not isinstance(skipped.value, SettleOwed) and counters.owed == 0


async def test_a_stale_batch_failing_while_the_probe_is_out_lets_no_second_probe_go(
        own_redis: tuple[str, subprocess.Popen[bytes]]) -> None:
    """Through redis-py each call waits and fails on its own connection, so a batch sent before the window opened
    can fail after the probe went. That failure says nothing new: it neither renews the window nor lets a
    second probe go while the first is out."""
    url, proc = own_redis
    scope = Scope("key", "probe", Limits(rpm=1000))
    window = 0.05

    async def admit(name: str) -> object:
        try:
            return await counters.admit([scope], name, 0)
        except Exception as exc:
            return exc

    async with gate(url, lean=False, window_s=window) as counters:
        await counters.admit([scope], "warm", 0)
        os.kill(proc.pid, signal.SIGSTOP)
        first = asyncio.ensure_future(admit("first"))  # fails at ~0.25 s: the first failure
        assert isinstance(await first, Exception)
        confirming = asyncio.ensure_future(admit("confirming"))  # sent after it: fails at ~0.55 s, confirms
        await asyncio.sleep(0.12)
        stale = asyncio.ensure_future(admit("stale"))  # sent before the confirmation: fails at ~0.67 s
        await confirming
        outage = counters._batch.outage
        assert outage is not None and outage.confirmed
        await asyncio.sleep(window + 0.01)  # the window is over
        probe = asyncio.ensure_future(admit("probe"))  # out until ~0.86 s
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        assert outage.probing
        stale_failure = await stale  # the stale batch fails while the probe is out
        assert isinstance(stale_failure, Exception) and not isinstance(stale_failure, StoreSkipped)
        assert not probe.done()
        await asyncio.sleep(window + 0.02)  # its window, had it renewed one, would be over
        assert isinstance(await admit("second"), StoreSkipped)  # not a second probe
        assert isinstance(await probe, Exception)
        os.kill(proc.pid, signal.SIGCONT)
