"""What a rate-limit answer reports for the ``x-ratelimit-*`` headers: the token reset beside the requests',
and every figure on a refusal (not only the refusing level's), the same from process memory and Redis (Lua)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigw.stores.base import Limits, Scope
from aigw.stores.memory import MemoryRateLimiter
from aigw.stores.redis.client import make_redis
from aigw.stores.redis.counters import RedisCounters
from aigw.stores.redis.pipe import RedisPipe
from tests.support.clock import ManualClock


@pytest.fixture(params=["memory", "redis"])
async def limiter(request: pytest.FixtureRequest) -> AsyncIterator[Any]:
    if request.param == "memory":
        yield MemoryRateLimiter(ManualClock(1_800_000_000.25))
        return
    url, prefix = request.getfixturevalue("redis_isolated")
    redis = make_redis(url, socket_timeout_s=2.0)
    pipe = RedisPipe.from_url(url, timeout_s=2.0)
    try:
        yield RedisCounters(redis, prefix, pipe=pipe)
    finally:
        await pipe.aclose()
        await redis.aclose()


async def test_an_accepted_call_says_when_the_window_frees_tokens(limiter: Any) -> None:
    scope = Scope("key", "tok-reset", Limits(tpm=1000))
    first = await limiter.admit([scope], "a", 100)
    assert first.remaining_tokens == 900
    assert 59 < first.reset_tokens_s <= 60  # this call's estimate leaves the window in a minute
    nothing = await limiter.admit([Scope("key", "tok-empty", Limits(tpm=1000))], "b", 0)
    assert nothing.reset_tokens_s == 0  # nothing counted: the window is whole now


async def test_the_token_reset_is_the_tightest_levels(limiter: Any) -> None:
    key = Scope("key", "loose-t", Limits(tpm=10_000))
    project = Scope("project", "tight-t", Limits(tpm=500))
    await limiter.admit([project], "early", 100)  # the project's window holds an older count
    got = await limiter.admit([key, project], "a", 100)
    assert (got.limit_tokens, got.remaining_tokens) == (500, 300)
    assert 59 < got.reset_tokens_s <= 60


async def test_a_tpm_refusal_reports_the_requests_of_another_level_too(limiter: Any) -> None:
    # the key caps tokens, its project requests: the 429 used to carry no requests figures at all
    key = Scope("key", "k-tpm", Limits(tpm=150))
    project = Scope("project", "p-rpm", Limits(rpm=10))
    assert (await limiter.admit([key, project], "a", 100)).allowed
    refused = await limiter.admit([key, project], "b", 100)
    assert not refused.allowed and refused.reason == "tpm" and refused.scope == "key:k-tpm"
    assert (refused.limit_requests, refused.remaining_requests) == (10, 8)
    assert refused.reset_requests_s == 0  # a request would fit now: tokens refused
    assert (refused.limit_tokens, refused.remaining_tokens) == (150, 0)
    assert refused.reset_tokens_s == refused.retry_after_s and 59 < refused.reset_tokens_s <= 60


async def test_an_rpm_refusal_reports_the_tokens_of_another_level_too(limiter: Any) -> None:
    key = Scope("key", "k-rpm", Limits(rpm=1))
    tenant = Scope("tenant", "t-tpm", Limits(tpm=1000))
    assert (await limiter.admit([key, tenant], "a", 100)).allowed
    refused = await limiter.admit([key, tenant], "b", 100)
    assert refused.reason == "rpm" and (refused.limit_requests, refused.remaining_requests) == (1, 0)
    assert refused.reset_requests_s == refused.retry_after_s > 0
    assert (refused.limit_tokens, refused.remaining_tokens, refused.reset_tokens_s) == (1000, 800, 0)


async def test_a_parallel_refusal_reports_both(limiter: Any) -> None:
    key = Scope("key", "k-par", Limits(max_parallel=1))
    project = Scope("project", "p-both", Limits(rpm=5, tpm=1000))
    assert (await limiter.admit([key, project], "a", 10)).allowed
    refused = await limiter.admit([key, project], "b", 10)
    assert refused.reason == "parallel"
    assert (refused.limit_requests, refused.remaining_requests, refused.reset_requests_s) == (5, 3, 0)
    assert (refused.limit_tokens, refused.remaining_tokens, refused.reset_tokens_s) == (1000, 980, 0)


async def test_peek_reports_each_levels_figures_as_they_stand_and_takes_nothing(limiter: Any) -> None:
    # what a prompt too large for a tpm cap is told: no wait lets it through, so no "until it fits" figures
    key = Scope("key", "peek-k", Limits(rpm=10, tpm=1000))
    empty = Scope("project", "peek-p", Limits(tpm=5000))
    assert (await limiter.admit([key], "a", 100)).allowed
    for _ in range(2):  # twice: the first read took nothing
        got_key, got_empty = await limiter.peek([key, empty])
        assert (got_key.limit_requests, got_key.remaining_requests) == (10, 9)
        assert (got_key.limit_tokens, got_key.remaining_tokens) == (1000, 900)
        assert 58 < got_key.reset_requests_s <= 60 and 58 < got_key.reset_tokens_s <= 60  # a busy machine: slack
        assert (got_empty.limit_requests, got_empty.remaining_requests) == (None, None)  # no rpm cap
        assert (got_empty.limit_tokens, got_empty.remaining_tokens, got_empty.reset_tokens_s) == (5000, 5000, 0)


async def _counted_ago(limiter: Any, scopes: list[Scope], ago: int, requests: int, tokens: int) -> None:
    """``requests`` and ``tokens`` counted ``ago`` seconds back, at every level of ``scopes`` (oldest first)."""
    if isinstance(limiter, MemoryRateLimiter):
        for n in range(requests or 1):
            limiter.take(scopes, f"old-{ago}-{n}", tokens if n == 0 else 0, limiter.now() - ago)
            if not requests:  # tokens alone: take the request back out
                limiter.give_back(scopes, f"old-{ago}-{n}", 0, int(limiter.now() - ago), limiter.now(), True)
        return
    redis = limiter._redis
    sec = int((await redis.time())[0]) - ago
    for s in scopes:
        if requests and s.limits.rpm:
            await redis.hincrby(f"{limiter._rl}{s.ref}:r", str(sec), requests)
        if tokens and s.limits.tpm:
            await redis.hincrby(f"{limiter._rl}{s.ref}:t", str(sec), tokens)


async def test_a_refusal_waits_for_every_level_that_refuses_not_only_the_first(limiter: Any) -> None:
    # the key's tokens leave its window in ~10 s, but its project's (another key's 500 too) fit only in ~20 s:
    # a client told 10 s came back to a second 429 (the SDKs' retries used up on a wait the gateway knew)
    key = Scope("key", "w-key", Limits(tpm=1000))
    project = Scope("project", "w-proj", Limits(tpm=1000))
    await _counted_ago(limiter, [key, project], 50, 0, 500)
    await _counted_ago(limiter, [project], 40, 0, 500)
    refused = await limiter.admit([key, project], "a", 600)
    assert not refused.allowed and refused.reason == "tpm"
    assert 19 < refused.retry_after_s <= 20, refused
    assert refused.scope == "project:w-proj" and refused.reset_tokens_s == refused.retry_after_s
    assert (refused.limit_tokens, refused.remaining_tokens) == (1000, 0)


async def test_a_refusal_on_requests_waits_for_a_levels_tokens_too(limiter: Any) -> None:
    # the key's rpm frees in ~10 s, its tenant's tokens fit in ~30 s: Retry-After says 30, and the requests
    # figures still say when the key's rpm lets one more through
    key = Scope("key", "m-key", Limits(rpm=1))
    tenant = Scope("tenant", "m-ten", Limits(tpm=1000))
    await _counted_ago(limiter, [key, tenant], 50, 1, 50)
    await _counted_ago(limiter, [tenant], 30, 0, 900)
    refused = await limiter.admit([key, tenant], "a", 200)
    assert (refused.allowed, refused.reason, refused.scope) == (False, "tpm", "tenant:m-ten")
    assert 29 < refused.retry_after_s <= 30 and refused.reset_tokens_s == refused.retry_after_s
    assert (refused.limit_requests, refused.remaining_requests) == (1, 0)
    assert 9 < refused.reset_requests_s <= 10
