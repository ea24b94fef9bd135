"""Breaker state and statistics shared by replicas through real Redis; local fallback when it is gone."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigw import errors
from aigw.config.models import CircuitBreakerConfig
from aigw.routing.book import HealthBook
from aigw.routing.breaker import CLOSED, HALF_OPEN, OPEN
from aigw.routing.retry import outcome_of
from aigw.routing.shared_state import SharedState
from aigw.routing.state import Outcome
from aigw.stores.redis.client import make_redis
from aigw.supervise import Supervisor
from aigw.types import SystemClock
from tests.unit.routing.fakes import deployment

OK = Outcome(ok=True, failure=False)
DOWN = outcome_of(errors.Unavailable("down"))
CFG = CircuitBreakerConfig(failures=5, window_s=10, cooldown_s=0.3, half_open_calls=1, sync_interval_s=0.05)


class Replica:
    def __init__(self, redis: Any, prefix: str, name: str, cfg: CircuitBreakerConfig = CFG) -> None:
        self.sup = Supervisor()
        self.book = HealthBook([deployment("m", 0, rpm=100), deployment("m", 1)], cfg, SystemClock(), self.sup)
        self.shared = SharedState(redis, prefix, self.book, cfg, replica=name)
        self.book.shared = self.shared
        self.a = self.book.state("m#0")

    async def fail(self, n: int) -> None:
        for _ in range(n):
            self.book.record(self.a, DOWN, trial=False)
        await self.sup.drain()


@pytest.fixture
async def pair(redis_isolated: tuple[str, str]) -> AsyncIterator[tuple[Replica, Replica]]:
    url, prefix = redis_isolated
    r1, r2 = make_redis(url), make_redis(url)
    yield Replica(r1, prefix, "one"), Replica(r2, prefix, "two")
    await r1.aclose()
    await r2.aclose()


async def test_failures_on_two_replicas_add_up_and_both_open(pair: tuple[Replica, Replica]) -> None:
    one, two = pair
    await one.fail(3)
    await two.fail(2)  # 3 + 2 = 5 in the shared window: open, though neither saw 5 itself
    now = one.book.clock.monotonic()
    assert two.a.breaker.phase(now) == OPEN
    assert one.a.breaker.phase(now) == CLOSED  # not synced yet
    assert await one.shared.sync_once()
    assert one.a.breaker.phase(one.book.clock.monotonic()) == OPEN


async def test_one_trial_across_replicas_and_its_success_closes_both(pair: tuple[Replica, Replica]) -> None:
    one, two = pair
    await one.fail(5)
    await two.shared.sync_once()
    await asyncio.sleep(CFG.cooldown_s + 0.05)
    assert one.a.breaker.phase(one.book.clock.monotonic()) == HALF_OPEN
    assert await one.book.admit_trial(one.a)
    assert not await two.book.admit_trial(two.a)  # the one shared permit is taken
    one.book.record(one.a, OK, trial=True)
    await one.sup.drain()
    assert one.a.breaker.phase(one.book.clock.monotonic()) == CLOSED
    await two.shared.sync_once()
    assert two.a.breaker.phase(two.book.clock.monotonic()) == CLOSED


async def test_a_trial_given_back_unmade_frees_the_shared_permit_for_another_replica(
        pair: tuple[Replica, Replica]) -> None:
    one, two = pair
    await one.fail(5)
    await two.shared.sync_once()
    await asyncio.sleep(CFG.cooldown_s + 0.05)
    assert await one.book.admit_trial(one.a)
    assert not await two.book.admit_trial(two.a)
    one.book.release_trial(one.a)  # e.g. the deployment was at its caps: the trial call was never made
    await one.sup.drain()
    assert await two.book.admit_trial(two.a)  # not a whole cooldown later
    assert not await one.book.admit_trial(one.a)


async def test_a_permit_given_back_after_its_lease_ran_out_frees_nobody_elses(
        pair: tuple[Replica, Replica]) -> None:
    one, two = pair
    await one.fail(5)
    await two.shared.sync_once()
    await asyncio.sleep(CFG.cooldown_s + 0.05)
    assert await one.book.admit_trial(one.a)  # one's trial hangs past the lease (a cooldown)
    await asyncio.sleep(CFG.cooldown_s + 0.05)
    assert await two.book.admit_trial(two.a)  # the lease ran out: two takes the one permit
    one.book.release_trial(one.a)  # one's stale permit comes back: two's must stay taken
    await one.sup.drain()
    assert not await one.book.admit_trial(one.a)


async def test_a_permit_of_an_earlier_half_open_period_frees_nothing_in_the_next(
        redis_isolated: tuple[str, str]) -> None:
    url, prefix = redis_isolated
    cfg = CFG.model_copy(update={"half_open_calls": 2})
    r = make_redis(url)
    try:
        await _earlier_period_permit(Replica(r, prefix, "one", cfg), Replica(r, prefix, "two", cfg))
    finally:
        await r.aclose()


async def _earlier_period_permit(one: Replica, two: Replica) -> None:
    await one.fail(5)
    await two.shared.sync_once()
    await asyncio.sleep(CFG.cooldown_s + 0.05)
    assert await one.book.admit_trial(one.a)
    assert await two.book.admit_trial(two.a)
    two.book.record(two.a, DOWN, trial=True)  # reopened for everyone: a new period, its permits all free
    await two.sup.drain()
    await asyncio.sleep(CFG.cooldown_s + 0.05)
    assert await two.book.admit_trial(two.a)
    assert await two.book.admit_trial(two.a)  # both of the new period's permits
    one.book.release_trial(one.a)  # one's permit of the earlier period: nothing of the new one
    await one.sup.drain()
    await one.shared.sync_once()
    assert not await one.book.admit_trial(one.a)


async def test_a_trial_let_through_without_a_permit_gives_back_none(redis_isolated: tuple[str, str]) -> None:
    url, prefix = redis_isolated
    cfg = CFG.model_copy(update={"half_open_calls": 2})
    r = make_redis(url)
    try:
        one, two = Replica(r, prefix, "one", cfg), Replica(r, prefix, "two", cfg)
        await one.fail(5)
        await two.shared.sync_once()
        await asyncio.sleep(CFG.cooldown_s + 0.05)
        one.shared._up = False  # Redis did not answer: this trial goes ahead on local state alone
        assert await one.book.admit_trial(one.a)
        one.shared._up = True
        assert await one.book.admit_trial(one.a)  # the first of the two shared permits
        assert await two.book.admit_trial(two.a)  # the second
        one.book.release_trial(one.a)  # which of one's trials ended is not known: no permit may go back yet
        await one.sup.drain()
        assert not await two.book.admit_trial(two.a)
        one.book.release_trial(one.a)  # now one holds no trial: its permit goes back
        await one.sup.drain()
        assert await two.book.admit_trial(two.a)
    finally:
        await r.aclose()


async def test_a_failed_trial_reopens_for_everyone(pair: tuple[Replica, Replica]) -> None:
    one, two = pair
    await one.fail(5)
    await two.shared.sync_once()
    await asyncio.sleep(CFG.cooldown_s + 0.05)
    assert await two.book.admit_trial(two.a)
    two.book.record(two.a, DOWN, trial=True)
    await two.sup.drain()
    await one.shared.sync_once()
    assert one.a.breaker.phase(one.book.clock.monotonic()) == OPEN


async def test_inflight_latency_and_quota_are_summed_across_replicas(pair: tuple[Replica, Replica]) -> None:
    one, two = pair
    wall = one.book.clock.now()
    for _ in range(3):
        one.a.started()
    for _ in range(2):
        two.a.started()
    one.a.sample_latency(0.1)
    two.a.sample_latency(0.3)
    await one.shared.sync_once()
    await two.shared.sync_once()
    await one.shared.sync_once()
    assert (one.a.inflight, two.a.inflight) == (5, 5)
    assert one.a.others_inflight == 2 and two.a.others_inflight == 3
    assert one.a.latency_s == pytest.approx(0.2, abs=0.001)
    assert one.a.rpm.used(wall) == pytest.approx(5, abs=0.5)  # 5 requests against its rpm of 100
    assert one.a.shared_window is not None


async def test_a_stale_replica_stops_counting(redis_isolated: tuple[str, str]) -> None:
    url, prefix = redis_isolated
    cfg = CFG.model_copy(update={"sync_interval_s": 0.05})
    r = make_redis(url)
    try:
        one, two = Replica(r, prefix, "one", cfg), Replica(r, prefix, "two", cfg)
        two.a.started()
        await two.shared.sync_once()
        await one.shared.sync_once()
        assert one.a.others_inflight == 1
        await asyncio.sleep(0.6)  # stale after max(0.5 s, 4 sync intervals)
        await one.shared.sync_once()
        assert one.a.others_inflight == 0
    finally:
        await r.aclose()


async def test_redis_down_falls_back_to_local_state_and_logs_once(caplog: pytest.LogCaptureFixture) -> None:
    from tests.support.servers import free_port

    redis = make_redis(f"redis://127.0.0.1:{free_port()}/0", socket_timeout_s=0.1)
    try:
        replica = Replica(redis, "aigw-test:down:", "solo", CFG.model_copy(update={"failures": 2}))
        with caplog.at_level(logging.WARNING, logger="aigw.routing"):
            for _ in range(3):
                assert not await replica.shared.sync_once()
            await replica.fail(2)  # the local breaker still works
        assert not replica.shared.up
        assert replica.a.breaker.phase(replica.book.clock.monotonic()) == OPEN
        warnings = [r for r in caplog.records if "Redis unavailable" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        await redis.aclose()


async def test_redis_coming_back_is_picked_up(redis_isolated: tuple[str, str],
                                              caplog: pytest.LogCaptureFixture) -> None:
    url, prefix = redis_isolated
    r = make_redis(url)
    try:
        replica = Replica(r, prefix, "solo")
        replica.shared._went_down(ConnectionError("test"))
        assert not replica.shared.up
        with caplog.at_level(logging.WARNING, logger="aigw.routing"):
            assert await replica.shared.sync_once()
        assert replica.shared.up
        assert any("answers again" in rec.getMessage() for rec in caplog.records)
    finally:
        await r.aclose()


async def test_one_failed_call_is_a_blip_not_an_outage(redis_isolated: tuple[str, str]) -> None:
    url, prefix = redis_isolated
    r = make_redis(url)
    try:
        replica = Replica(r, prefix, "solo")
        assert await replica.shared.sync_once()
        working = replica.shared._sync

        async def broken(**_: Any) -> Any:
            raise TimeoutError

        replica.shared._sync = broken
        assert not await replica.shared.sync_once()
        assert replica.shared.up and replica.a.shared_window is not None  # still trusting the shared numbers
        assert not await replica.shared.sync_once()
        assert not replica.shared.up and replica.a.shared_window is None  # twice in a row: down
        replica.shared._sync = working
        assert await replica.shared.sync_once()
        assert replica.shared.up
    finally:
        await r.aclose()
