"""Rate limits and budgets: the same rules from process memory and from Redis (Lua).

Every test runs against both implementations; the Redis one uses a real Redis
with a prefix of its own (skipped with a reason when Redis is not there), once
through the gate's lean client (``pipe.py``) and once through redis-py, the
fallback for URLs that client does not speak.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import math
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigw.stores.base import NANO, Limits, Scope, to_nano, window_of
from aigw.stores.memory import MemoryGate, MemoryRateLimiter
from aigw.stores.memory_budgets import MemoryBudgets
from aigw.stores.redis.client import make_redis
from aigw.stores.redis.counters import RedisCounters
from aigw.stores.redis.pipe import RedisPipe
from tests.support.clock import ManualClock

KEY = Scope("key", "k1", Limits(rpm=5))
NOW = 1_800_000_000.0


@pytest.fixture(params=["memory", "redis", "redis-py"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any]]:
    if request.param == "memory":
        yield MemoryRateLimiter(ManualClock(NOW)), MemoryBudgets()
        return
    url, prefix = request.getfixturevalue("redis_isolated")
    redis = make_redis(url, socket_timeout_s=2.0)
    pipe = RedisPipe.from_url(url, timeout_s=2.0) if request.param == "redis" else None
    try:
        yield RedisCounters(redis, prefix, pipe=pipe), RedisCounters(redis, prefix, pipe=pipe)
    finally:
        if pipe is not None:
            await pipe.aclose()
        await redis.aclose()


async def test_rpm_admits_exactly_the_limit_then_says_when_to_retry(backend: tuple[Any, Any]) -> None:
    limiter, _ = backend
    answers = [await limiter.admit([KEY], f"r{i}", 0) for i in range(8)]
    assert [a.allowed for a in answers] == [True] * 5 + [False] * 3
    assert [a.remaining_requests for a in answers[:5]] == [4, 3, 2, 1, 0]
    refused = answers[5]
    assert refused.reason == "rpm" and refused.scope == "key:k1"
    assert 0 < refused.retry_after_s <= 60


async def test_an_accepted_call_says_when_the_window_frees_a_request(backend: tuple[Any, Any]) -> None:
    limiter, _ = backend
    scope = Scope("key", "reset", Limits(rpm=5))
    first = await limiter.admit([scope], "a", 0)
    assert 59 < first.reset_requests_s <= 60  # this call leaves the window in a minute


async def test_an_rpm_refusal_still_reports_the_token_figures(backend: tuple[Any, Any]) -> None:
    limiter, _ = backend
    scope = Scope("key", "both", Limits(rpm=1, tpm=1000))
    assert (await limiter.admit([scope], "a", 100)).allowed
    refused = await limiter.admit([scope], "b", 100)
    assert refused.reason == "rpm" and (refused.limit_tokens, refused.remaining_tokens) == (1000, 800)


async def test_concurrent_admissions_never_exceed_the_limit(backend: tuple[Any, Any]) -> None:
    limiter, _ = backend
    scope = Scope("key", "burst", Limits(rpm=50))
    answers = await asyncio.gather(*(limiter.admit([scope], f"r{i}", 0) for i in range(200)))
    assert sum(a.allowed for a in answers) == 50


async def test_a_refusal_at_one_level_takes_nothing_from_the_others(backend: tuple[Any, Any]) -> None:
    limiter, _ = backend
    key = Scope("key", "k2", Limits(rpm=100))
    tenant = Scope("tenant", "t2", Limits(rpm=2))
    results = [(await limiter.admit([key, tenant], f"r{i}", 0)).allowed for i in range(4)]
    assert results == [True, True, False, False]
    other_tenant = Scope("tenant", "t3", Limits(rpm=100))
    first = await limiter.admit([key, other_tenant], "x", 0)
    assert first.allowed and first.remaining_requests == 100 - 3  # only the two admitted calls counted


async def test_an_accepted_call_reports_the_level_with_the_least_left(backend: tuple[Any, Any]) -> None:
    # the key has room for 100 a minute, its tenant for 2: "98 left" would be followed by a 429
    limiter, _ = backend
    key = Scope("key", "loose", Limits(rpm=100, tpm=10_000))
    project = Scope("project", "tight-tokens", Limits(tpm=500))
    tenant = Scope("tenant", "tight-requests", Limits(rpm=2))
    first = await limiter.admit([key, project, tenant], "a", 100)
    assert (first.limit_requests, first.remaining_requests) == (2, 1)
    assert (first.limit_tokens, first.remaining_tokens) == (500, 400)
    second = await limiter.admit([key, project, tenant], "b", 100)
    assert (second.remaining_requests, second.remaining_tokens) == (0, 300)
    assert not (await limiter.admit([key, project, tenant], "c", 100)).allowed
    # a key with only a parallel cap still reports its project's rpm
    only_parallel = Scope("key", "par-only", Limits(max_parallel=4))
    proj = Scope("project", "p-rpm", Limits(rpm=7))
    got = await limiter.admit([only_parallel, proj], "d", 0)
    assert (got.limit_requests, got.remaining_requests) == (7, 6) and 59 < got.reset_requests_s <= 60


async def test_tpm_counts_the_estimate_and_settles_to_the_real_tokens(backend: tuple[Any, Any]) -> None:
    limiter, _ = backend
    scope = Scope("key", "tok", Limits(tpm=1000))
    first = await limiter.admit([scope], "a", 600)
    assert first.allowed
    refused = await limiter.admit([scope], "b", 600)
    assert not refused.allowed and refused.reason == "tpm"
    await limiter.release([scope], "a", -500, first.taken_at)  # the call used 100 tokens, not 600
    again = await limiter.admit([scope], "c", 600)
    assert again.allowed and again.remaining_tokens == 1000 - 100 - 600


async def test_a_refund_goes_back_to_the_estimates_second_or_nowhere(backend: tuple[Any, Any]) -> None:
    limiter, _ = backend
    scope = Scope("key", "refund", Limits(tpm=1000))
    taken = await limiter.admit([scope], "a", 600)
    # a refund dated before the window: its estimate has left the window, so it takes nothing off
    await limiter.release([scope], "a", -600, taken.taken_at - 120)
    assert not (await limiter.admit([scope], "b", 600)).allowed


async def test_a_request_given_back_leaves_its_second_and_frees_its_place(backend: tuple[Any, Any]) -> None:
    limiter, _ = backend
    scope = Scope("key", "back", Limits(rpm=2))
    first = await limiter.admit([scope], "a", 0)
    await limiter.admit([scope], "b", 0)
    assert not (await limiter.admit([scope], "c", 0)).allowed
    await limiter.release([scope], "a", 0, first.taken_at, request_back=True)  # refused after the gate
    again = await limiter.admit([scope], "d", 0)
    assert again.allowed and again.remaining_requests == 0
    await limiter.release([scope], "d", 0, first.taken_at - 120, request_back=True)  # its second has gone
    assert not (await limiter.admit([scope], "e", 0)).allowed


async def test_a_late_refund_does_not_open_room_in_the_next_minute() -> None:
    clock = ManualClock(NOW)
    limiter = MemoryRateLimiter(clock)
    scope = Scope("key", "late", Limits(tpm=1000))
    taken = await limiter.admit([scope], "a", 1000)
    clock.t += 59.5
    await limiter.release([scope], "a", -1000, taken.taken_at)  # the call failed: all of it back
    clock.t += 1  # the estimate's second has left the window
    assert (await limiter.admit([scope], "b", 1000)).allowed
    assert not (await limiter.admit([scope], "c", 1000)).allowed  # 2,000 in one second before


async def test_parallel_slots_are_freed_on_release(backend: tuple[Any, Any]) -> None:
    limiter, _ = backend
    scope = Scope("key", "par", Limits(max_parallel=2))
    assert (await limiter.admit([scope], "a", 0)).allowed
    assert (await limiter.admit([scope], "b", 0)).allowed
    refused = await limiter.admit([scope], "c", 0)
    assert not refused.allowed and refused.reason == "parallel"
    await limiter.release([scope], "a", 0)
    assert (await limiter.admit([scope], "c", 0)).allowed


async def test_memory_window_slides_per_second() -> None:
    clock = ManualClock(NOW)
    limiter = MemoryRateLimiter(clock)
    for i in range(5):
        assert (await limiter.admit([KEY], f"r{i}", 0)).allowed
        clock.t += 10
    refused = await limiter.admit([KEY], "x", 0)  # t = +50: all five still inside the last 60 s
    assert not refused.allowed and refused.retry_after_s == pytest.approx(10, abs=1)
    clock.t += 11  # the first call (at +0) has left the window
    assert (await limiter.admit([KEY], "y", 0)).allowed


BUDGET_KEY = Scope("key", "bk", Limits(budget_usd=1.0, budget_period="daily"))
BUDGET_TENANT = Scope("tenant", "bt", Limits(budget_usd=10.0, budget_period="monthly"))


async def test_reservations_never_overrun_a_budget_under_concurrency(backend: tuple[Any, Any]) -> None:
    _, budgets = backend
    cost = to_nano(0.07)
    answers = await asyncio.gather(*(budgets.reserve([BUDGET_KEY, BUDGET_TENANT], cost, NOW) for _ in range(40)))
    admitted = sum(a.allowed for a in answers)
    assert admitted == 14  # floor(1.00 / 0.07)
    assert await budgets.spent(BUDGET_KEY, NOW) == 14 * cost
    assert await budgets.spent(BUDGET_TENANT, NOW) == 14 * cost  # refused calls reserved nothing anywhere
    refused = next(a for a in answers if not a.allowed)
    assert refused.scope == "key:bk" and refused.limit_nano == NANO


async def test_settle_replaces_the_reservation_and_alerts_once_per_threshold(backend: tuple[Any, Any]) -> None:
    _, budgets = backend
    scopes = [BUDGET_KEY]
    assert (await budgets.reserve(scopes, to_nano(0.5), NOW, "a")).allowed
    crossed = await budgets.settle(scopes, to_nano(0.5), to_nano(0.55), NOW, [0.5, 0.8, 1.0], "a")
    assert crossed == [("key:bk", window_of("daily", NOW), 0.5)]
    assert await budgets.spent(BUDGET_KEY, NOW) == to_nano(0.55)
    assert (await budgets.reserve(scopes, to_nano(0.3), NOW, "b")).allowed
    crossed = await budgets.settle(scopes, to_nano(0.3), to_nano(0.3), NOW, [0.5, 0.8, 1.0], "b")
    assert [c[2] for c in crossed] == [0.8]  # 0.5 already fired in this window
    assert not (await budgets.reserve(scopes, to_nano(0.2), NOW)).allowed  # 0.85 + 0.2 > 1.00


async def test_alerts_follow_settled_spend_not_the_reservations_in_flight(backend: tuple[Any, Any]) -> None:
    _, budgets = backend
    scope = Scope("key", "inflight", Limits(budget_usd=1.0, budget_period="daily"))
    for i in range(20):  # $1.00 reserved by calls still running
        assert (await budgets.reserve([scope], to_nano(0.05), NOW, f"c{i}")).allowed
    alerts = [await budgets.settle([scope], to_nano(0.05), to_nano(0.001), NOW, [0.5, 0.8, 1.0], "c0")]
    assert alerts == [[]]  # $0.001 spent: no 50 % alert
    for i in range(1, 12):
        alerts.append(await budgets.settle([scope], to_nano(0.05), to_nano(0.05), NOW, [0.5, 0.8, 1.0], f"c{i}"))
    fired = [(i, c[2]) for i, crossed in enumerate(alerts) for c in crossed]
    assert fired == [(10, 0.5)]  # when the real spend passed $0.50, once


async def test_a_seeded_window_does_not_alert_again_for_thresholds_already_passed(backend: tuple[Any, Any]) -> None:
    _, budgets = backend
    scope = Scope("key", "seeded", Limits(budget_usd=1.0, budget_period="daily"))
    await budgets.seed({("key", "seeded", window_of("daily", NOW)): to_nano(0.85)})  # a restart at $0.85
    assert (await budgets.reserve([scope], to_nano(0.01), NOW, "a")).allowed
    assert await budgets.settle([scope], to_nano(0.01), to_nano(0.01), NOW, [0.5, 0.8, 1.0], "a") == []
    assert (await budgets.reserve([scope], to_nano(0.14), NOW, "b")).allowed
    crossed = await budgets.settle([scope], to_nano(0.14), to_nano(0.14), NOW, [0.5, 0.8, 1.0], "b")
    assert [c[2] for c in crossed] == [1.0]


async def test_a_new_window_starts_from_zero_and_seed_restores_the_current_one(backend: tuple[Any, Any]) -> None:
    _, budgets = backend
    await budgets.seed({("key", "bk", window_of("daily", NOW)): to_nano(0.95)})
    assert not (await budgets.reserve([BUDGET_KEY], to_nano(0.1), NOW)).allowed
    tomorrow = NOW + 86400
    assert (await budgets.reserve([BUDGET_KEY], to_nano(0.1), tomorrow)).allowed
    await budgets.seed({("key", "bk", window_of("daily", NOW)): 0})  # live counters win over a seed
    assert await budgets.spent(BUDGET_KEY, NOW) == to_nano(0.95)


async def test_seeding_raises_settled_spend_to_the_ledgers_figure_and_never_lowers_it(backend: tuple[Any, Any]) -> None:
    _, budgets = backend
    scope = Scope("key", "raise", Limits(budget_usd=1.0, budget_period="daily"))
    window = window_of("daily", NOW)
    await budgets.seed({("key", "raise", window): to_nano(0.5)})
    assert (await budgets.reserve([scope], to_nano(0.2), NOW)).allowed  # in flight: 0.7 counted
    await budgets.seed({("key", "raise", window): to_nano(0.4)})  # lower than what settled: kept
    assert await budgets.spent(scope, NOW) == to_nano(0.7)
    await budgets.seed({("key", "raise", window): to_nano(0.6)})  # spent while no budget counted it: raised
    assert await budgets.spent(scope, NOW) == to_nano(0.8)  # the call in flight is not in the ledger: still counted


async def test_changed_limits_apply_to_the_next_call(backend: tuple[Any, Any]) -> None:
    limiter, budgets = backend
    assert (await limiter.admit([Scope("key", "chg", Limits(rpm=1))], "a", 0)).allowed
    assert not (await limiter.admit([Scope("key", "chg", Limits(rpm=1))], "b", 0)).allowed
    raised = await limiter.admit([Scope("key", "chg", Limits(rpm=3))], "c", 0)  # an admin raised the limit
    assert raised.allowed and raised.limit_requests == 3
    small = Scope("key", "chg", Limits(budget_usd=0.1, budget_period="daily"))
    assert not (await budgets.reserve([small], to_nano(0.2), NOW)).allowed
    bigger = Scope("key", "chg", Limits(budget_usd=1.0, budget_period="daily"))
    assert (await budgets.reserve([bigger], to_nano(0.2), NOW)).allowed


# -- leases: a reservation whose settle never comes stops counting ----------------------------------

LEASE_TTL = 0.5  # Redis times leases by its own clock: these tests wait it out (memory: a later ``now``)


@pytest.fixture(params=["memory", "redis", "redis-py"])
async def gate(request: pytest.FixtureRequest) -> AsyncIterator[tuple[Any, Any]]:
    """(gate, budgets) with a lease TTL of half a second."""
    if request.param == "memory":
        budgets = MemoryBudgets(lease_ttl_s=LEASE_TTL)
        yield MemoryGate(MemoryRateLimiter(ManualClock(NOW)), budgets), budgets
        return
    url, prefix = request.getfixturevalue("redis_isolated")
    redis = make_redis(url, socket_timeout_s=2.0)
    pipe = RedisPipe.from_url(url, timeout_s=2.0) if request.param == "redis" else None
    try:
        counters = RedisCounters(redis, prefix, parallel_ttl_s=LEASE_TTL, pipe=pipe)
        yield counters, counters
    finally:
        if pipe is not None:
            await pipe.aclose()
        await redis.aclose()


async def _after_the_lease_ttl(gate: Any) -> float:
    """A ``now`` past the leases taken at NOW (Redis: once its own clock has passed them)."""
    if not isinstance(gate, MemoryGate):
        await asyncio.sleep(LEASE_TTL + 0.2)
    return NOW + LEASE_TTL + 0.2


async def _reserve(gate: Any, scope: Scope, usd: float, slot: str, now: float = NOW) -> bool:
    _, res = await gate.enter([], slot, 0, [scope], to_nano(usd), now)
    return bool(res.allowed)


async def _settle(gate: Any, scope: Scope, usd_reserved: float, usd_actual: float, slot: str) -> list[Any]:
    return list(await gate.leave([], slot, 0, 0, [scope], to_nano(usd_reserved), to_nano(usd_actual), NOW,
                                 [0.5, 0.8, 1.0]))


async def test_a_reservation_never_settled_stops_counting_after_its_lease_ttl(gate: tuple[Any, Any]) -> None:
    g, budgets = gate
    scope = Scope("key", "lost", Limits(budget_usd=1.0, budget_period="daily"))
    assert await _reserve(g, scope, 0.6, "lost-reply")  # its reply was lost, or its replica died: no settle comes
    assert not await _reserve(g, scope, 0.6, "refused")  # while the lease lives, it counts
    later = await _after_the_lease_ttl(g)
    assert await _reserve(g, scope, 0.6, "next", later)  # the budget is whole again
    assert await budgets.spent(scope, later) == to_nano(0.6)  # the live lease only
    assert not await _reserve(g, scope, 0.6, "over", later)


@pytest.mark.parametrize("dropped", [True, False], ids=["after a reservation dropped it", "before"])
async def test_a_settle_after_its_lease_expired_counts_the_real_cost_once(gate: tuple[Any, Any],
                                                                         dropped: bool) -> None:
    g, budgets = gate
    scope = Scope("key", "slow", Limits(budget_usd=1.0, budget_period="daily"))
    assert await _reserve(g, scope, 0.6, "slow")
    later = await _after_the_lease_ttl(g)
    if dropped:
        assert await _reserve(g, scope, 0.3, "other", later)
    assert await _settle(g, scope, 0.6, 0.25, "slow") == []
    assert await _settle(g, scope, 0.6, 0.25, "slow") == []  # once
    assert await budgets.spent(scope, later) == to_nano(0.25 + (0.3 if dropped else 0))


async def test_settling_twice_counts_once(gate: tuple[Any, Any]) -> None:
    g, budgets = gate
    scope = Scope("key", "twice", Limits(budget_usd=1.0, budget_period="daily"))
    assert await _reserve(g, scope, 0.5, "a")
    assert await _reserve(g, scope, 0.2, "b")
    assert [c[2] for c in await _settle(g, scope, 0.5, 0.6, "a")] == [0.5]
    assert await _settle(g, scope, 0.5, 0.6, "a") == []  # a retried settle: nothing more
    assert await budgets.spent(scope, NOW) == to_nano(0.6 + 0.2)  # b still in flight, a's reservation gone once
    assert await _settle(g, scope, 0.2, 0.1, "b") == []
    assert await budgets.spent(scope, NOW) == to_nano(0.7)


async def test_leases_and_their_markers_go_in_time(gate: tuple[Any, Any]) -> None:
    g, budgets = gate
    scope = Scope("key", "tidy", Limits(budget_usd=1.0, budget_period="total"))
    assert await _reserve(g, scope, 0.5, "lost")
    later = await _after_the_lease_ttl(g)
    assert await _reserve(g, scope, 0.1, "settled", later)  # drops "lost", keeping a marker for a late settle
    await _settle(g, scope, 0.1, 0.1, "settled")
    later = await _after_the_lease_ttl(g)
    assert await _reserve(g, scope, 0.1, "last", later + LEASE_TTL)  # the marker's time is up too
    assert await _settle(g, scope, 0.5, 0.5, "lost") == []  # too late to count: nothing
    assert await budgets.spent(scope, later + LEASE_TTL) == to_nano(0.2)
    if isinstance(g, MemoryGate):
        assert list(budgets._windows[(scope.ref, "total")].leases) == ["last"]
        return
    keys = [k async for k in g._redis.scan_iter(match=g._bg + "*")]
    assert sorted(k.decode().rsplit(":", 1)[1] for k in keys) == ["leases", "reserved", "settled"]
    leases = await g._redis.zrange(g._budget_key(scope.ref, "total") + ":leases", 0, -1)
    assert leases == [f"{to_nano(0.1)}:last".encode()]
    for key in keys:  # settled spend of the "total" window is kept; every lease key goes on its own
        ttl = await g._redis.ttl(key)
        assert ttl == -1 if key.endswith(b":settled") else 0 < ttl <= math.ceil(LEASE_TTL) + 10


async def test_a_budget_raised_mid_window_alerts_at_its_own_thresholds(backend: tuple[Any, Any]) -> None:
    # the marks were per window and threshold only: after $1.00 of a $1 budget had alerted 50/80/100 %, the
    # budget raised to $2 reached $2.00 (and refused calls) without one alert
    _, budgets = backend
    small = Scope("key", "raised", Limits(budget_usd=1.0, budget_period="daily"))
    fired = []
    for i in range(10):
        assert (await budgets.reserve([small], to_nano(0.1), NOW, f"a{i}")).allowed
        fired += await budgets.settle([small], to_nano(0.1), to_nano(0.1), NOW, [0.5, 0.8, 1.0], f"a{i}")
    assert [c[2] for c in fired] == [0.5, 0.8, 1.0]
    raised = Scope("key", "raised", Limits(budget_usd=2.0, budget_period="daily"))
    fired = []
    for i in range(10):
        assert (await budgets.reserve([raised], to_nano(0.1), NOW, f"b{i}")).allowed
        fired += await budgets.settle([raised], to_nano(0.1), to_nano(0.1), NOW, [0.5, 0.8, 1.0], f"b{i}")
    assert [c[2] for c in fired] == [0.8, 1.0]  # 50 % of $2 was passed when the budget changed


async def test_process_memory_forgets_the_windows_that_ended_before_yesterday() -> None:
    # every window a scope ever had stayed in memory (one entry per key and day, for as long as the
    # process lived); now the first reservation of a day forgets those before yesterday
    budgets = MemoryBudgets(lease_ttl_s=660)
    daily = Scope("key", "days", Limits(budget_usd=1.0, budget_period="daily"))
    monthly = Scope("key", "month", Limits(budget_usd=1.0, budget_period="monthly"))
    midnight = (NOW // 86400 + 1) * 86400  # 2027-01-16T00:00:00Z: not a month's end
    day = [window_of("daily", midnight + n * 86400) for n in (-1, 0, 1)]
    for scope in (daily, monthly):
        assert (await budgets.reserve([scope], to_nano(0.5), midnight - 100, "a")).allowed
        await budgets.settle([scope], to_nano(0.5), to_nano(0.5), midnight - 100, [0.5], "a")
    assert (await budgets.reserve([daily], to_nano(0.3), midnight - 1, "late")).allowed  # in flight at midnight
    assert (await budgets.reserve([daily, monthly], to_nano(0.1), midnight + 1, "next")).allowed
    crossed = await budgets.settle([daily], to_nano(0.3), to_nano(0.3), midnight - 1, [0.8], "late")
    assert crossed == [("key:days", day[0], 0.8)]  # settled in its own window, which is still there
    await budgets.settle([daily, monthly], to_nano(0.1), to_nano(0.1), midnight + 1, [0.5], "next")
    assert (await budgets.reserve([daily, monthly], to_nano(0.1), midnight + 86400, "after")).allowed
    assert sorted(budgets._windows) == [(daily.ref, day[1]), (daily.ref, day[2]),
                                        (monthly.ref, window_of("monthly", midnight))]
    assert await budgets.spent(monthly, midnight + 86400) == to_nano(0.7)  # the month goes on
    assert {m[1] for m in budgets._alerted} == {window_of("monthly", midnight)}


@contextlib.asynccontextmanager
async def lean_gate(url: str, prefix: str, timeout_s: float = 2.0) -> AsyncIterator[tuple[Any, Any, Any]]:
    """The Redis gate over its lean pipe (the batcher's own path), with the redis-py client beside it."""
    redis = make_redis(url, socket_timeout_s=timeout_s)
    pipe = RedisPipe.from_url(url, timeout_s=timeout_s)
    assert pipe is not None
    try:
        yield RedisCounters(redis, prefix, pipe=pipe), pipe, redis
    finally:
        await pipe.aclose()
        await redis.aclose()


@pytest.mark.parametrize("turns", [1, 2], ids=["gathering-the-batch", "batch-sent"])
async def test_a_caller_gone_from_a_batch_leaves_the_others_their_answers(
        redis_isolated: tuple[str, str], turns: int) -> None:
    url, prefix = redis_isolated
    async with lean_gate(url, prefix) as (limiter, _, _):
        await limiter.admit([KEY], "warm", 0)  # connected
        opener = asyncio.create_task(limiter.admit([KEY], "gone", 0))  # its client leaves: its task is cancelled
        other = asyncio.create_task(limiter.admit([KEY], "stays", 0))
        for _ in range(turns):  # the batch is gathering, or its script call is on its way
            await asyncio.sleep(0)
        opener.cancel()
        answer = await asyncio.wait_for(other, 2)  # not ConnectionError, nor waiting forever
        assert answer.allowed and answer.remaining_requests is not None
        assert (await asyncio.wait_for(limiter.admit([KEY], "next", 0), 2)).allowed


async def test_a_batch_that_finds_its_script_gone_loads_it_and_answers_every_step(
        redis_isolated: tuple[str, str]) -> None:
    url, prefix = redis_isolated
    scope = Scope("key", "noscript", Limits(rpm=10))
    async with lean_gate(url, prefix) as (limiter, pipe, _):
        await limiter.admit([scope], "warm", 0)
        await pipe.call(b"SCRIPT", b"FLUSH")  # as after a Redis restart
        answers = await asyncio.wait_for(asyncio.gather(*(limiter.admit([scope], f"s{i}", 0) for i in range(5))), 2)
        assert sorted(a.remaining_requests for a in answers) == [4, 5, 6, 7, 8]  # each step ran once


async def test_a_gone_opener_of_a_batch_that_fails_leaves_no_unretrieved_error(
        redis_isolated: tuple[str, str]) -> None:
    url = "redis://127.0.0.1:1"  # nothing listens there: the batch fails
    logged: list[Any] = []
    loop = asyncio.get_running_loop()
    old = loop.get_exception_handler()
    loop.set_exception_handler(lambda _, context: logged.append(context.get("message")))
    async with lean_gate(url, redis_isolated[1], timeout_s=0.5) as (limiter, _, _):
        opener = asyncio.create_task(limiter.admit([KEY], "gone", 0))  # its client leaves while the batch gathers
        other = asyncio.create_task(limiter.admit([KEY], "stays", 0))
        await asyncio.sleep(0)
        opener.cancel()
        done = await asyncio.wait_for(asyncio.gather(opener, other, return_exceptions=True), 2)
        assert isinstance(done[0], asyncio.CancelledError) and isinstance(done[1], ConnectionError)
        del opener, other, done
        gc.collect()
        await asyncio.sleep(0)
        assert logged == []  # not "Future exception was never retrieved"
    loop.set_exception_handler(old)


async def test_a_step_whose_caller_left_runs_before_the_settle_of_its_slot_even_when_sent_again(
        redis_isolated: tuple[str, str]) -> None:
    """After a Redis restart (scripts gone) a batch is sent again; a client that leaves meanwhile has its slot
    freed at the call's end, which must not run before the step that takes it (else the slot stays taken)."""
    url, prefix = redis_isolated
    async with lean_gate(url, prefix) as (limiter, pipe, redis):
        await limiter.admit([KEY], "warm", 0)
        for turns in range(60):  # the client leaves at every point of the step's journey
            scope = Scope("key", f"left{turns}", Limits(max_parallel=1))
            await pipe.call(b"SCRIPT", b"FLUSH")
            call = asyncio.create_task(limiter.admit([scope], "s", 0))
            for _ in range(turns):
                await asyncio.sleep(0)
            call.cancel()
            await asyncio.gather(call, return_exceptions=True)
            await asyncio.wait_for(limiter.release([scope], "s", 0, 0), 2)  # what the call's end does
        await asyncio.sleep(0.1)
        stranded = [t for t in range(60) if await redis.zcard(f"{prefix}rl:key:left{t}:p")]
        assert stranded == []
        assert limiter._batch.gone == {}


async def test_a_forgotten_total_budget_leaves_no_counter_for_good(redis_isolated: tuple[str, str]) -> None:
    """A revoked key's ``total`` window: in Redis its keys get a TTL (a settle in flight still lands),
    in memory the window goes; either way nothing of it is kept for good."""
    url, prefix = redis_isolated
    scope = Scope("key", "revoked", Limits(budget_usd=1.0, budget_period="total"))
    memory = MemoryBudgets()
    redis = make_redis(url, socket_timeout_s=2.0)
    try:
        counters = RedisCounters(redis, prefix, parallel_ttl_s=30)
        for budgets in (memory, counters):
            assert (await budgets.reserve([scope], to_nano(0.1), NOW, "a")).allowed
            await budgets.settle([scope], to_nano(0.1), to_nano(0.05), NOW, [], "a")
            assert (await budgets.reserve([scope], to_nano(0.1), NOW, "b")).allowed  # in flight at the revoke
            await budgets.forget(scope, NOW)
        assert await memory.spent(scope, NOW) == 0
        keys = [k async for k in redis.scan_iter(match=f"{prefix}bg:key:revoked:*")]
        assert sorted(k.decode().rsplit(":", 1)[1] for k in keys) == ["leases", "reserved", "settled"]
        ttls = [await redis.ttl(k) for k in keys]
        assert all(0 < ttl <= 70 for ttl in ttls), ttls  # 2 x the lease's life, a margin
        await counters.settle([scope], to_nano(0.1), to_nano(0.05), NOW, [], "b")  # the call in flight ends
        ttls = [await redis.ttl(k) for k in keys]  # and the counters still expire (or are gone: -2), none is kept
        assert -1 not in ttls and all(ttl <= 70 for ttl in ttls), ttls
    finally:
        await redis.aclose()


async def test_a_budget_changed_mid_window_alerts_each_threshold_its_spend_reached_once(
        backend: tuple[Any, Any]) -> None:
    # a budget lowered from $10 to $1 after $0.85 of spend: the change measured the (lagging) rollups and saw
    # less, and a call in flight under the old $10 took spend past $1: no settle ever crossed 80 or 100 % of
    # the new amount, so neither ever alerted while every call was refused
    _, budgets = backend
    ths = [0.5, 0.8, 1.0]
    old = Scope("key", "lowered", Limits(budget_usd=10.0, budget_period="daily"))
    new = Scope("key", "lowered", Limits(budget_usd=1.0, budget_period="daily"))
    assert (await budgets.reserve([old], to_nano(0.5), NOW, "late")).allowed  # in flight across the change
    assert (await budgets.reserve([old], to_nano(0.6), NOW, "a")).allowed
    assert await budgets.settle([old], to_nano(0.6), to_nano(0.6), NOW, ths, "a") == []  # 6 % of $10
    assert await budgets.reached(new, NOW, ths) == [0.5]  # the change: $0.60 of $1
    assert await budgets.reached(new, NOW, ths) == []  # once
    assert await budgets.settle([old], to_nano(0.5), to_nano(0.45), NOW, ths, "late") == []  # $1.05, under $10
    assert (await budgets.reserve([new], to_nano(0.01), NOW, "b")).allowed is False  # spent: refused
    await budgets.seed({("key", "lowered", window_of("daily", NOW)): to_nano(1.05)})  # as the change seeds
    # the next settle under the new amount (a call admitted just before the refusals began) alerts both
    assert (await budgets.reserve([old], to_nano(0.01), NOW, "c")).allowed
    crossed = await budgets.settle([new], to_nano(0.01), to_nano(0.001), NOW, ths, "c")
    assert [c[2] for c in crossed] == [0.8, 1.0]
    assert (await budgets.reserve([old], to_nano(0.01), NOW, "d")).allowed
    assert await budgets.settle([new], to_nano(0.01), to_nano(0.001), NOW, ths, "d") == []  # once


async def test_a_budget_not_changed_still_alerts_only_on_crossing(backend: tuple[Any, Any]) -> None:
    # without a change, thresholds seeded past (a restart) stay quiet, as before
    _, budgets = backend
    scope = Scope("key", "steady", Limits(budget_usd=1.0, budget_period="daily"))
    await budgets.seed({("key", "steady", window_of("daily", NOW)): to_nano(0.9)})
    assert (await budgets.reserve([scope], to_nano(0.01), NOW, "a")).allowed
    assert await budgets.settle([scope], to_nano(0.01), to_nano(0.01), NOW, [0.5, 0.8, 1.0], "a") == []
