"""The probe with replicas sharing breakers through real Redis: what one replica saw kill a deployment holds a
probe on another that did not see it, and a probe's revival is every replica's, with one trial among them."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aigw import errors
from aigw.config.models import CircuitBreakerConfig
from aigw.routing.breaker import CLOSED, HALF_OPEN, OPEN
from aigw.routing.retry import outcome_of
from aigw.routing.state import Outcome
from aigw.stores.redis.client import make_redis
from tests.unit.routing.test_shared_state import Replica

CFG = CircuitBreakerConfig(failures=2, window_s=10, cooldown_s=30, half_open_calls=1, sync_interval_s=0.05)
REFUSED = outcome_of(errors.AuthError("upstream rejected the credentials configured for this deployment"))
DOWN = outcome_of(errors.Unavailable("down"))


@pytest.fixture
async def pair(redis_isolated: tuple[str, str]) -> AsyncIterator[tuple[Replica, Replica]]:
    url, prefix = redis_isolated
    r1, r2 = make_redis(url), make_redis(url)
    yield Replica(r1, prefix, "one", CFG), Replica(r2, prefix, "two", CFG)
    await r1.aclose()
    await r2.aclose()


async def opened_by(one: Replica, two: Replica, outcome: Outcome) -> None:
    """``one`` sees the failures that open the shared breaker; ``two`` learns only that it is open."""
    for _ in range(CFG.failures):
        one.book.record(one.a, outcome, trial=False)
    await one.sup.drain()
    assert await two.shared.sync_once()
    assert two.a.breaker.phase(two.book.clock.monotonic()) == OPEN
    assert not two.a.dead  # it did not see why


def phase(r: Replica) -> str:
    return r.a.breaker.phase(r.book.clock.monotonic())


async def test_a_probe_on_a_replica_that_did_not_see_the_key_refused_revives_nothing(
        pair: tuple[Replica, Replica]) -> None:
    one, two = pair
    await opened_by(one, two, REFUSED)
    two.book.probe_result(two.a, ok=True)  # e.g. a public listing: it shows nothing of the key
    await two.sup.drain()
    assert phase(two) == OPEN
    assert not await two.book.admit_trial(two.a)
    assert await one.shared.sync_once()
    assert phase(one) == OPEN and not await one.book.admit_trial(one.a)


async def test_a_probe_that_shows_the_key_accepted_revives_it_for_every_replica_with_one_trial(
        pair: tuple[Replica, Replica]) -> None:
    one, two = pair
    await opened_by(one, two, REFUSED)
    two.book.probe_result(two.a, ok=True, shows=frozenset({"auth"}))
    await two.sup.drain()
    assert phase(two) == HALF_OPEN
    assert await one.shared.sync_once()
    assert phase(one) == HALF_OPEN  # not a whole cooldown later
    assert [await one.book.admit_trial(one.a), await two.book.admit_trial(two.a)] == [True, False]


async def test_a_probe_revives_a_deployment_opened_by_timeouts_on_another_replica(
        pair: tuple[Replica, Replica]) -> None:
    one, two = pair
    await opened_by(one, two, DOWN)
    two.book.probe_result(two.a, ok=True)
    await two.sup.drain()
    assert phase(two) == HALF_OPEN
    assert await two.book.admit_trial(two.a)
    two.book.record(two.a, Outcome(ok=True, failure=False), trial=True)
    await two.sup.drain()
    assert await one.shared.sync_once()
    assert phase(one) == CLOSED
