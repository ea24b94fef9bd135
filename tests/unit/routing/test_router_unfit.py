"""A deployment whose adapter refuses the request up front (a 400 before any upstream call: the request is one
its provider cannot take) leaves it to its siblings, then the fallbacks: no upstream call, no attempt, no retry
budget spent, nothing for its breaker, and never called again for that request."""

from __future__ import annotations

from typing import Any

import pytest

from aigw import errors
from aigw.routing.breaker import CLOSED, HALF_OPEN
from aigw.routing.router import RouteRequest
from tests.unit.routing.fakes import Clock, Step, build

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
FIRST_THEN_SECOND = {"m": [{"weight": 1e6}, {"weight": 1e-6}]}


def refusal(message: str = "messages.0.content.0: only Anthropic models read this") -> Step:
    return Step(error=errors.InvalidRequest(message, param="messages.0.content.0"), sent=False)


async def served_once(router: Any, stream: bool, model: str = "m") -> Any:
    if stream:
        chunks, served = await router.open_stream(RouteRequest(model=model, body=dict(BODY)))
        async for _ in chunks:
            pass
        return served
    return (await router.complete(RouteRequest(model=model, body=dict(BODY))))[1]


@pytest.mark.parametrize("stream", [False, True])
async def test_a_sibling_serves_what_the_first_refuses_up_front_at_no_cost(stream: bool) -> None:
    router, p = build(FIRST_THEN_SECOND, routing={"m": {"num_retries": 0}}, breaker={"failures": 1})
    p["m#0"].always = refusal()
    for _ in range(3):
        served = await served_once(router, stream)
        assert served.deployment is not None and served.deployment.id == "m#1"
        assert (served.attempts, served.retries) == (1, 0)  # the refusal was no upstream call, no retry
    s = router.book.state("m#0")
    assert s.breaker.phase(router.clock.monotonic()) == CLOSED and s.error_rate(router.clock.monotonic()) == (0, 0)
    assert not s.last_error and s.local_inflight == 0
    assert p["m#0"].calls == 3  # once a request, never again within it


@pytest.mark.parametrize("stream", [False, True])
async def test_refused_everywhere_the_client_gets_the_first_refusal_and_nothing_is_retried(stream: bool) -> None:
    router, p = build({"m": [{"weight": 1e6}, {"weight": 1e-6}], "backup": [{}]},
                      routing={"m": {"num_retries": 3, "fallbacks": ["backup"]}})
    p["m#0"].always = refusal("first")
    p["m#1"].always = p["backup#0"].always = refusal("later")
    with pytest.raises(errors.InvalidRequest, match="first"):
        await served_once(router, stream)
    assert p["m#0"].calls == p["m#1"].calls == p["backup#0"].calls == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_a_fallback_serves_what_every_deployment_of_the_model_refuses(stream: bool) -> None:
    router, p = build({"m": [{}, {}], "backup": [{}]}, routing={"m": {"num_retries": 0, "fallbacks": ["backup"]}})
    p["m#0"].always = p["m#1"].always = refusal()
    served = await served_once(router, stream)
    assert served.deployment is not None and served.deployment.id == "backup#0" and served.model == "backup"
    assert served.attempts == 1


async def test_when_the_one_that_could_take_it_fails_the_client_gets_that_failure() -> None:
    router, p = build(FIRST_THEN_SECOND, routing={"m": {"num_retries": 1}}, breaker={"enabled": False})
    p["m#0"].always = refusal()
    p["m#1"].always = Step(error=errors.Unavailable("down"))
    with pytest.raises(errors.Unavailable):
        await served_once(router, False)
    assert (p["m#0"].calls, p["m#1"].calls) == (1, 2)  # the retry budget went to the one that can take it


async def test_an_upstreams_own_400_still_ends_the_request() -> None:
    router, p = build(FIRST_THEN_SECOND)
    p["m#0"].always = Step(error=errors.InvalidRequest("the upstream says no"), refused=True)
    with pytest.raises(errors.InvalidRequest, match="the upstream says no"):
        await served_once(router, False)
    assert p["m#1"].calls == 0


async def test_a_half_open_trial_refused_up_front_is_given_back_and_settles_nothing() -> None:
    clock = Clock()
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 0}},
                      breaker={"failures": 1, "cooldown_s": 10}, clock=clock)
    p["m#0"].push(Step(error=errors.Unavailable("down")))
    with pytest.raises(errors.Unavailable):
        await served_once(router, False)
    clock.advance(11)
    p["m#0"].push(refusal())
    with pytest.raises(errors.InvalidRequest):
        await served_once(router, False)
    s = router.book.state("m#0")
    assert s.breaker.trials == 0 and s.breaker.phase(clock.monotonic()) == HALF_OPEN  # the next call is the trial
    assert (await served_once(router, False)).deployment.id == "m#0"
    assert s.breaker.phase(clock.monotonic()) == CLOSED
