"""A client's own whole-request limit (``x-aigw-timeout``, body ``timeout``) ends its request, not the
deployment's health: the breaker counts only timeouts the operator's limits set."""

from __future__ import annotations

import pytest

from aigw import errors
from aigw.routing.breaker import CLOSED, OPEN
from aigw.routing.router import Router, RouteRequest
from tests.unit.routing.fakes import Clock, Step, build

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def req(**kw: object) -> RouteRequest:
    return RouteRequest(model="m", body=dict(BODY), **kw)  # type: ignore[arg-type]


async def call(router: Router, stream: bool, **kw: object) -> None:
    if stream:
        chunks, _ = await router.open_stream(req(**kw))
        async for _ in chunks:
            pass
    else:
        await router.complete(req(**kw))


@pytest.mark.parametrize("stream", [False, True])
async def test_clients_with_a_short_timeout_do_not_open_the_breaker_of_a_healthy_deployment(stream: bool) -> None:
    clock = Clock()
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 0}}, breaker={"failures": 2}, clock=clock)
    p["m#0"].always = Step(delay=0.2)  # healthy, only slower than these clients are willing to wait
    for _ in range(3):
        with pytest.raises(errors.UpstreamTimeout):
            await call(router, stream, deadline_s=0.02)
    assert router.book.state("m#0").breaker.phase(clock.monotonic()) == CLOSED
    await call(router, stream)  # so a patient client is served, not refused with a 503 for the cooldown


@pytest.mark.parametrize("stream", [False, True])
async def test_a_stream_cut_by_the_clients_timeout_mid_way_does_not_count_against_the_deployment(
        stream: bool) -> None:
    clock = Clock()
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 0}}, breaker={"failures": 1}, clock=clock)
    p["m#0"].always = Step(chunk_delay=0.05)
    with pytest.raises(errors.UpstreamTimeout):
        await call(router, stream, deadline_s=0.08)
    assert router.book.state("m#0").breaker.phase(clock.monotonic()) == CLOSED


@pytest.mark.parametrize(("stream", "limit"), [(False, {"timeout_s": 0.02}), (True, {"timeout_s": 0.02}),
                                               (True, {"first_token_timeout_s": 0.02})])
async def test_the_operators_own_timeouts_still_count_when_the_client_also_has_one(
        stream: bool, limit: dict[str, float]) -> None:
    clock = Clock()
    router, p = build({"m": [limit]}, routing={"m": {"num_retries": 0}}, breaker={"failures": 1}, clock=clock)
    p["m#0"].always = Step(stall=True)
    with pytest.raises(errors.UpstreamTimeout):
        await call(router, stream, deadline_s=5)
    assert router.book.state("m#0").breaker.phase(clock.monotonic()) == OPEN


async def test_the_models_timeout_still_counts_when_the_clients_is_longer() -> None:
    clock = Clock()
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 0, "timeout_s": 0.02}}, breaker={"failures": 1},
                      clock=clock)
    p["m#0"].always = Step(stall=True)
    with pytest.raises(errors.UpstreamTimeout):
        await router.complete(req(deadline_s=5))
    assert router.book.state("m#0").breaker.phase(clock.monotonic()) == OPEN


async def test_the_timeout_error_names_the_clients_limit_as_it_gave_it() -> None:
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 0}})
    p["m#0"].always = Step(stall=True)
    with pytest.raises(errors.UpstreamTimeout) as exc:
        await router.complete(req(deadline_s=0.019996))  # what is left of 0.02 s after the stages
    assert str(exc.value) == "no upstream answered within the request's 0.02 s timeout (1 attempt)"
