"""The router end to end over scripted in-process providers: retries, fallbacks, timeouts, breakers."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from aigw import errors
from aigw.routing.breaker import CLOSED, HALF_OPEN, OPEN
from aigw.routing.router import RouteRequest
from tests.unit.routing.fakes import Clock, Step, build

BODY = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def req(model: str = "m", **kw: object) -> RouteRequest:
    return RouteRequest(model=model, body=dict(BODY), **kw)  # type: ignore[arg-type]


async def served_once(router: Any, stream: bool) -> Any:
    """One request through ``router``, streamed (read to its end) or not: who served it."""
    if stream:
        chunks, served = await router.open_stream(req())
        async for _ in chunks:
            pass
        return served
    return (await router.complete(req()))[1]


async def test_a_retry_goes_to_another_deployment_first() -> None:
    router, p = build({"m": [{}, {}]}, breaker={"enabled": False})
    p["m#0"].always = Step(error=errors.Unavailable("down"))
    retried = 0
    for _ in range(40):
        body, served = await router.complete(req())
        assert served.deployment is not None and served.deployment.id == "m#1"
        assert served.attempts == 1 + served.retries <= 2  # never back to m#0 while m#1 is untried
        retried += served.retries
    assert retried == p["m#0"].calls > 0
    assert body["choices"][0]["message"]["content"] == "hi"


async def test_retries_stop_at_num_retries_and_the_upstream_error_reaches_the_caller() -> None:
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 3}}, breaker={"enabled": False})
    p["m#0"].always = Step(error=errors.UpstreamError("boom"))
    with pytest.raises(errors.UpstreamError, match="boom"):
        await router.complete(req())
    assert p["m#0"].calls == 4


@pytest.mark.parametrize("err", [errors.InvalidRequest("bad"), errors.NotFound("gone")])
async def test_non_retryable_errors_are_not_retried(err: errors.GatewayError) -> None:
    router, p = build({"m": [{}, {}]})
    p["m#0"].always = p["m#1"].always = Step(error=err)
    with pytest.raises(type(err)):
        await router.complete(req())
    assert p["m#0"].calls + p["m#1"].calls == 1


def upstream_auth() -> errors.AuthError:
    return errors.AuthError("Incorrect API key provided", status=502, code="upstream_auth")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_deployment_whose_key_the_upstream_refuses_leaves_the_request_to_its_siblings(stream: bool) -> None:
    # our key for m#0 was revoked (a rotation): that says nothing of the client's request, and m#1 has its own key
    router, p = build({"m": [{"weight": 1e6}, {"weight": 1e-6}]}, breaker={"failures": 50})
    p["m#0"].always = Step(error=upstream_auth())
    for _ in range(5):
        served = await served_once(router, stream)
        assert served.deployment is not None and served.deployment.id == "m#1"
    assert p["m#0"].calls == 5  # once a request: never twice, calling it again cannot help


async def test_an_upstream_auth_failure_with_no_sibling_is_not_retried_and_the_fallback_answers() -> None:
    router, p = build({"m": [{}], "backup": [{}]}, routing={"m": {"num_retries": 3, "fallbacks": ["backup"]}})
    p["m#0"].always = Step(error=upstream_auth())
    _, served = await router.complete(req())
    assert served.model == "backup" and p["m#0"].calls == 1
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 3}})
    p["m#0"].always = Step(error=upstream_auth())
    with pytest.raises(errors.AuthError) as exc:
        await router.complete(req())
    assert exc.value.status == 502 and p["m#0"].calls == 1


async def test_a_half_open_trial_refused_for_our_key_still_serves_its_client() -> None:
    # docs: the trial is the first attempt of a real request, whose client is served by a retry if it fails
    clock = Clock()
    router, p = build({"m": [{"weight": 1e6}, {"weight": 1e-6}]}, breaker={"failures": 1, "cooldown_s": 10},
                      clock=clock)
    p["m#0"].always = Step(error=upstream_auth())
    await router.complete(req())  # m#0 refuses our key: its breaker opens, m#1 answers
    assert router.book.state("m#0").breaker.phase(clock.monotonic()) == OPEN
    clock.advance(11)
    _, served = await router.complete(req())  # the half-open trial fails the same way
    assert served.deployment is not None and served.deployment.id == "m#1"
    assert p["m#0"].calls == 2


def out_of_quota() -> errors.QuotaExceeded:
    return errors.QuotaExceeded("You exceeded your current quota", code="insufficient_quota")


@pytest.mark.parametrize("stream", [False, True])
async def test_a_deployment_out_of_quota_is_called_once_and_the_fallback_answers(stream: bool) -> None:
    router, p = build({"m": [{}, {}], "backup": [{}]}, routing={"m": {"num_retries": 3, "fallbacks": ["backup"]}},
                      breaker={"enabled": False})
    p["m#0"].always = p["m#1"].always = Step(error=out_of_quota())
    if stream:
        chunks, served = await router.open_stream(req())
        assert [c async for c in chunks]
    else:
        _, served = await router.complete(req())
    assert (p["m#0"].calls, p["m#1"].calls, p["backup#0"].calls) == (1, 1, 1)
    assert served.model == "backup" and served.fallbacks == ["backup"]


async def test_out_of_quota_goes_to_a_sibling_deployment_without_waiting() -> None:
    router, p = build({"m": [{"weight": 1e6}, {"weight": 1e-6}]},
                      routing={"m": {"num_retries": 2, "backoff_s": 5}})
    p["m#0"].always = Step(error=out_of_quota())
    started = time.monotonic()
    _, served = await router.complete(req())
    assert served.deployment is not None and served.deployment.id == "m#1"
    assert (p["m#0"].calls, p["m#1"].calls) == (1, 1)
    assert time.monotonic() - started < 1


async def test_out_of_quota_everywhere_reaches_the_caller_after_one_call_per_deployment() -> None:
    router, p = build({"m": [{}, {}]}, routing={"m": {"num_retries": 5}}, breaker={"enabled": False})
    p["m#0"].always = p["m#1"].always = Step(error=out_of_quota())
    with pytest.raises(errors.QuotaExceeded) as caught:
        await router.complete(req())
    assert caught.value.status == 429 and caught.value.code == "insufficient_quota"
    assert (p["m#0"].calls, p["m#1"].calls) == (1, 1)


async def test_backoff_before_going_back_to_the_same_deployment() -> None:
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 2, "backoff_s": 0.04}})
    p["m#0"].push(Step(error=errors.Unavailable("x")), Step(error=errors.Unavailable("x")))
    started = time.monotonic()
    _, served = await router.complete(req())
    assert served.retries == 2
    assert time.monotonic() - started >= 0.02 + 0.04  # at least half of 0.04 and of 0.08


async def test_retry_after_is_honoured_before_retrying_the_same_deployment() -> None:
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 1}})
    p["m#0"].push(Step(error=errors.RateLimited("slow down", retry_after=0.2)))
    started = time.monotonic()
    _, served = await router.complete(req())
    assert time.monotonic() - started >= 0.2
    assert served.attempts == 2


async def test_a_retry_after_counts_from_when_the_upstream_said_it_not_from_the_retry() -> None:
    # m#0 asks for 0.6 s; the retry goes to m#1, which takes 0.6 s to fail: m#0's wait is over by then, and
    # going back to it must not wait another 0.6 s
    router, p = build({"m": [{"weight": 1e6}, {"weight": 1e-6}]}, routing={"m": {"num_retries": 2}})
    p["m#0"].push(Step(error=errors.RateLimited("slow down", retry_after=0.6)))
    p["m#1"].push(Step(delay=0.6, error=errors.Unavailable("down")))
    started = time.monotonic()
    _, served = await router.complete(req())
    took = time.monotonic() - started
    assert served.deployment is not None and served.deployment.id == "m#0"
    assert (p["m#0"].calls, p["m#1"].calls) == (2, 1)
    assert 0.6 <= took < 1.0


async def test_a_retry_after_of_zero_is_not_taken_for_a_missing_one() -> None:
    # "retry-after: 0" / "retry-after-ms: 0": the upstream says the window has room again; a 429 without one
    # cools its deployment for a second, one with 0 must not
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 1}})
    p["m#0"].push(Step(error=errors.RateLimited("slow down", retry_after=0.0)))
    started = time.monotonic()
    _, served = await router.complete(req())
    assert served.attempts == 2
    assert time.monotonic() - started < 0.5


async def test_a_retry_after_longer_than_we_wait_goes_back_to_the_caller_at_once() -> None:
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 3, "max_retry_after_s": 1}})
    p["m#0"].push(Step(error=errors.RateLimited("slow down", retry_after=30)))
    started = time.monotonic()
    with pytest.raises(errors.RateLimited) as exc:
        await router.complete(req())
    assert exc.value.retry_after == 30
    assert time.monotonic() - started < 0.5
    assert p["m#0"].calls == 1


async def test_a_deployment_cooling_for_a_retry_after_longer_than_we_wait_is_not_waited_out_by_later_requests() -> None:
    # the upstream asked for 100 s; the deployment cools for min(100, cooldown_s = 2) s. The request that met the 429
    # gets it at once (over max_retry_after_s); the next one must too, not sit out the 2 s cooling silently
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 2, "max_retry_after_s": 30}},
                      breaker={"cooldown_s": 2})
    p["m#0"].push(Step(error=errors.RateLimited("slow down", retry_after=100)))
    with pytest.raises(errors.RateLimited):
        await router.complete(req())
    started = time.monotonic()
    with pytest.raises(errors.RateLimited) as exc:
        await asyncio.wait_for(router.complete(req()), 5)
    assert time.monotonic() - started < 0.5
    assert exc.value.retry_after is not None and 0 < exc.value.retry_after <= 2
    assert p["m#0"].calls == 1


async def test_a_deployment_cooling_for_a_short_retry_after_is_waited_for_by_later_requests() -> None:
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 0, "max_retry_after_s": 30}})
    p["m#0"].push(Step(error=errors.RateLimited("slow down", retry_after=0.3)))
    with pytest.raises(errors.RateLimited):
        await router.complete(req())
    started = time.monotonic()
    await asyncio.wait_for(router.complete(req()), 5)
    assert time.monotonic() - started >= 0.25
    assert p["m#0"].calls == 2


@pytest.mark.parametrize("others_first", [True, False])
async def test_a_deployment_asking_for_a_wait_longer_than_we_wait_leaves_the_retries_to_its_siblings(
        others_first: bool) -> None:
    # m#0 answers 503 with Retry-After 60 (over max_retry_after_s): it is out for this request, but m#1, which
    # failed once without asking for a wait, is still worth a retry; the request must not give up on the model
    router, p = build({"m": [{"weight": 1e6}, {"weight": 1e-6}]},
                      routing={"m": {"num_retries": 2, "retry_other_deployments": others_first}},
                      breaker={"enabled": False})
    p["m#0"].always = Step(error=errors.Unavailable("overloaded", retry_after=60))
    p["m#1"].push(Step(error=errors.Unavailable("blip")))
    started = time.monotonic()
    _, served = await router.complete(req())
    assert served.deployment is not None and served.deployment.id == "m#1"
    assert (p["m#0"].calls, p["m#1"].calls) == (1, 2)
    assert time.monotonic() - started < 1


async def test_a_rate_limited_deployment_cools_and_others_take_its_traffic() -> None:
    router, p = build({"m": [{"weight": 1e6}, {"weight": 1e-6}]}, routing={"m": {"num_retries": 1}})
    p["m#0"].push(Step(error=errors.RateLimited("slow down", retry_after=5)))
    _, served = await router.complete(req())  # m#0 (picked first by weight) 429s, m#1 answers
    assert served.retries == 1
    for _ in range(10):
        await router.complete(req())
    assert (p["m#0"].calls, p["m#1"].calls) == (1, 11)  # m#0 cools for its Retry-After
    assert router.book.state("m#0").breaker.phase(time.monotonic()) == CLOSED  # a 429 is not sickness


async def test_fallback_chain_in_order_and_served_says_who_answered() -> None:
    router, p = build({"a": [{}], "b": [{}], "c": [{}]}, routing={"a": {"fallbacks": ["b", "c"], "num_retries": 0}})
    p["a#0"].always = Step(error=errors.Unavailable("a down"))
    p["b#0"].always = Step(error=errors.UpstreamTimeout("b slow"))
    body, served = await router.complete(req("a"))
    assert served.model == "c" and served.fallbacks == ["b", "c"]
    assert served.deployment is not None and served.deployment.id == "c#0"
    assert body["model"] == "c-0"
    assert (p["a#0"].calls, p["b#0"].calls, p["c#0"].calls) == (1, 3, 1)  # b retries by its own rules


@pytest.mark.parametrize("stream", [False, True])
async def test_a_fallback_outside_the_keys_models_is_skipped(stream: bool) -> None:
    router, p = build({"a": [{}], "b": [{}], "c": [{}]}, routing={"a": {"fallbacks": ["b", "c"], "num_retries": 0}})
    p["a#0"].always = Step(error=errors.Unavailable("a down"))
    call = router.open_stream if stream else router.complete
    _, served = await call(req("a", allowed=frozenset({"a", "c"})))  # the key may not use b
    assert served.model == "c" and served.fallbacks == ["c"] and p["b#0"].calls == 0
    p["c#0"].always = Step(error=errors.Unavailable("c down"))
    with pytest.raises(errors.Unavailable, match="c down"):
        await call(req("a", allowed=frozenset({"a", "c"})))
    assert p["b#0"].calls == 0


async def test_when_every_fallback_fails_the_last_error_is_raised() -> None:
    router, p = build({"a": [{}], "b": [{}]}, routing={"a": {"fallbacks": ["b"], "num_retries": 0}})
    p["a#0"].always = Step(error=errors.Unavailable("a down"))
    p["b#0"].always = Step(error=errors.UpstreamError("b broke"))
    with pytest.raises(errors.UpstreamError, match="b broke"):
        await router.complete(req("a"))


async def test_a_model_whose_upstream_says_retry_after_0_is_the_wait_the_caller_gets_over_a_fallbacks_longer_one(
) -> None:
    # every model of the chain rate limited: the caller is told the soonest wait. The asked model's upstream said
    # "retry-after: 0" (room again now) and the fallback's 30 s: the 0 was read as no wait at all, and the client
    # was told to come back in 30 s
    router, p = build({"a": [{}], "b": [{}]}, routing={"a": {"fallbacks": ["b"], "num_retries": 0}})
    p["a#0"].always = Step(error=errors.RateLimited("a full", retry_after=0.0))
    p["b#0"].always = Step(error=errors.RateLimited("b full", retry_after=30))
    with pytest.raises(errors.RateLimited) as refused:
        await router.complete(req("a"))
    assert refused.value.retry_after == 0.0 and refused.value.message == "a full"


async def test_a_refusal_of_the_gateways_own_for_a_fallback_names_the_model_the_client_asked_for() -> None:
    # `a` is down and its fallback `b` cools after its upstream asked for 30 s: the client, which asked for `a`,
    # was told "Every deployment of `b` is at its rate limit", a model it never named
    router, p = build({"a": [{}], "b": [{}]}, routing={"a": {"fallbacks": ["b"], "num_retries": 0},
                                                       "b": {"max_retry_after_s": 1}})
    p["a#0"].always = Step(error=errors.Unavailable("a down"))
    p["b#0"].always = Step(error=errors.RateLimited("b full", retry_after=30))
    with pytest.raises(errors.RateLimited, match="b full"):  # the upstream's own words, as it said them
        await router.complete(req("a"))
    with pytest.raises(errors.RateLimited) as refused:  # b cools: the gateway's own refusal
        await router.complete(req("a"))
    assert refused.value.message.startswith("Every deployment of `b` (the fallback of `a`) is at its rate limit")


async def test_context_length_goes_to_its_own_chain_not_the_general_one() -> None:
    router, p = build({"a": [{}], "big": [{}], "other": [{}]},
                      routing={"a": {"fallbacks": ["other"], "context_window_fallbacks": ["big"]}})
    p["a#0"].always = Step(error=errors.ContextLengthExceeded("too long"))
    _, served = await router.complete(req("a"))
    assert served.model == "big"
    assert (p["a#0"].calls, p["other#0"].calls) == (1, 0)


async def test_content_policy_goes_to_its_own_chain_and_without_one_is_final() -> None:
    router, p = build({"a": [{}], "safe": [{}], "other": [{}]},
                      routing={"a": {"fallbacks": ["other"], "content_policy_fallbacks": ["safe"]},
                               "other": {"fallbacks": ["safe"]}})
    p["a#0"].always = Step(error=errors.ContentPolicy("no"))
    _, served = await router.complete(req("a"))
    assert served.model == "safe"
    p["other#0"].always = Step(error=errors.ContentPolicy("no"))
    with pytest.raises(errors.ContentPolicy):
        await router.complete(req("other"))  # only content_policy_fallbacks fire on content_policy


async def test_a_fallback_that_cannot_serve_the_endpoint_is_skipped() -> None:
    router, p = build({"e": [{"modes": ["embeddings"]}], "a": [{}], "b": [{}]},
                      routing={"a": {"fallbacks": ["e", "b"], "num_retries": 0}})
    p["a#0"].always = Step(error=errors.Unavailable("down"))
    _, served = await router.complete(req("a"))
    assert served.model == "b" and served.fallbacks == ["b"]


async def test_whole_request_timeout_covers_every_attempt_and_is_a_timeout_error() -> None:
    router, p = build({"m": [{}, {}]}, routing={"m": {"timeout_s": 0.2, "num_retries": 5}})
    p["m#0"].always = p["m#1"].always = Step(stall=True)
    started = time.monotonic()
    with pytest.raises(errors.UpstreamTimeout) as exc:
        await router.complete(req())
    assert 0.15 < time.monotonic() - started < 0.6
    assert exc.value.status == 504


@pytest.mark.parametrize(("model_s", "request_s", "deployment_s", "expected"),
                         [(5.0, 0.2, 9.0, 0.2), (0.2, 5.0, 9.0, 0.2), (5.0, 9.0, 0.2, 0.2), (None, None, None, 600)])
async def test_the_smallest_timeout_wins(model_s: float | None, request_s: float | None,
                                         deployment_s: float | None, expected: float) -> None:
    extra = {"timeout_s": deployment_s} if deployment_s else {}
    routing = {"m": {"timeout_s": model_s}} if model_s else {}
    router, p = build({"m": [extra]}, routing=routing)
    await router.complete(req(deadline_s=request_s))
    assert p["m#0"].calls_log[0].timeouts.total == pytest.approx(expected, rel=0.01, abs=0.01)


async def test_a_deployment_timeout_is_retried_on_another_deployment() -> None:
    router, p = build({"m": [{"timeout_s": 0.1}, {"timeout_s": 0.1}]})
    p["m#0"].push(Step(stall=True))
    p["m#1"].push(Step(stall=True))
    _, served = await router.complete(req())
    assert served.attempts == 3  # two stalls, each cut at 0.1 s, then an answer


async def test_an_always_failing_deployment_is_isolated_and_callers_see_no_error() -> None:
    router, p = build({"m": [{}, {}]}, breaker={"failures": 3, "cooldown_s": 60})
    p["m#0"].always = Step(error=errors.Unavailable("down"))
    for _ in range(100):
        await router.complete(req())
    assert p["m#0"].calls == 3
    assert router.book.state("m#0").breaker.phase(time.monotonic()) == OPEN


async def test_all_open_fails_fast_with_503_and_retry_after() -> None:
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 0}}, breaker={"failures": 2, "cooldown_s": 30})
    p["m#0"].always = Step(error=errors.UpstreamError("down"))
    for _ in range(2):
        with pytest.raises(errors.UpstreamError):
            await router.complete(req())
    with pytest.raises(errors.Unavailable) as exc:
        await router.complete(req())
    assert exc.value.status == 503 and 29 <= (exc.value.retry_after or 0) <= 30
    assert p["m#0"].calls == 2


async def test_breaker_recovers_through_one_trial_after_the_cooldown() -> None:
    clock = Clock()
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 0}},
                      breaker={"failures": 1, "cooldown_s": 10}, clock=clock)
    s = router.book.state("m#0")
    p["m#0"].push(Step(error=errors.Unavailable("down")))
    with pytest.raises(errors.Unavailable):
        await router.complete(req())
    assert s.breaker.phase(clock.monotonic()) == OPEN
    clock.advance(10)
    assert s.breaker.phase(clock.monotonic()) == HALF_OPEN
    p["m#0"].push(Step(error=errors.Unavailable("still down")))
    with pytest.raises(errors.Unavailable, match="still down"):
        await router.complete(req())  # the trial failed: open again
    assert s.breaker.phase(clock.monotonic()) == OPEN
    clock.advance(10)
    await router.complete(req())  # healed: the trial succeeds and closes
    assert s.breaker.phase(clock.monotonic()) == CLOSED
    assert p["m#0"].calls == 3


async def test_half_open_lets_only_the_configured_number_of_trials_through() -> None:
    clock = Clock()
    router, p = build({"m": [{}, {}]}, breaker={"failures": 1, "cooldown_s": 10, "half_open_calls": 1},
                      clock=clock, routing={"m": {"num_retries": 0}})
    router.book.state("m#0").breaker.trip(clock.monotonic())
    clock.advance(10)
    p["m#0"].always = Step(delay=0.1)
    await asyncio.gather(*(router.complete(req()) for _ in range(10)))
    assert p["m#0"].calls == 1  # the trial; the other nine went to the healthy deployment
    assert p["m#1"].calls == 9
    assert router.book.state("m#0").breaker.phase(clock.monotonic()) == CLOSED


async def test_a_cancelled_call_says_nothing_about_the_upstream() -> None:
    router, p = build({"m": [{}]}, breaker={"failures": 1})
    p["m#0"].push(Step(stall=True))
    task = asyncio.ensure_future(router.complete(req()))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    s = router.book.state("m#0")
    assert s.breaker.phase(time.monotonic()) == CLOSED and s.local_inflight == 0


async def test_deployments_over_their_rpm_are_skipped_and_all_capped_is_429() -> None:
    router, p = build({"m": [{"rpm": 2}, {"rpm": 3}]}, routing={"m": {"num_retries": 0}})
    for _ in range(5):
        await router.complete(req())
    assert (p["m#0"].calls, p["m#1"].calls) == (2, 3)
    with pytest.raises(errors.RateLimited) as exc:
        await router.complete(req())
    assert exc.value.retry_after is not None


class ExactCaps:
    """A ``DeploymentGate`` with room for a set number of calls per deployment (as the shared store would say)."""

    def __init__(self, room: dict[str, int], wait: float = 7.0) -> None:
        self.room = room
        self.wait = wait
        self.asked: list[str] = []

    async def admit(self, deployment_id: str) -> float | None:
        self.asked.append(deployment_id)
        if self.room.get(deployment_id, 1) <= 0:
            return self.wait
        self.room[deployment_id] = self.room.get(deployment_id, 1) - 1
        return None


async def test_exact_caps_decide_which_deployment_is_called_and_all_full_is_429_with_their_wait() -> None:
    router, p = build({"m": [{"rpm": 1000}, {"rpm": 1000}]}, routing={"m": {"num_retries": 0}})
    caps = ExactCaps({"m#0": 1, "m#1": 2})  # other replicas used the rest of each cap
    for _ in range(3):
        await router.complete(req(caps=caps))
    assert (p["m#0"].calls, p["m#1"].calls) == (1, 2)  # this replica's own count (far under 1000) did not decide
    with pytest.raises(errors.RateLimited) as exc:
        await router.complete(req(caps=caps))
    assert exc.value.retry_after == 7.0
    assert (p["m#0"].calls, p["m#1"].calls) == (1, 2)  # a full deployment is never called


async def test_a_full_deployment_is_not_an_attempt_and_the_fallback_is_checked_too() -> None:
    router, p = build({"m": [{"rpm": 5}], "backup": [{"rpm": 5}]}, routing={"m": {"fallbacks": ["backup"]}})
    caps = ExactCaps({"m#0": 0, "backup#0": 1})
    _, served = await router.complete(req(caps=caps))
    assert served.model == "backup" and served.attempts == 1 and caps.asked == ["m#0", "backup#0"]
    with pytest.raises(errors.RateLimited):
        await router.complete(req(caps=caps))
    assert (p["m#0"].calls, p["backup#0"].calls) == (0, 1)


async def test_a_prompt_too_large_for_every_capped_deployment_is_refused_for_good_and_a_fallback_may_take_it() -> None:
    router, p = build({"m": [{"tpm": 50}, {"tpm": 50}], "big": [{}]}, routing={"m": {"num_retries": 0}})
    never = ExactCaps({"m#0": 0, "m#1": 0})
    never.wait = math.inf
    with pytest.raises(errors.TooLargeForLimit, match="too large") as exc:
        await router.complete(req(caps=never))
    assert exc.value.retry_after is None and not exc.value.retryable
    router, p = build({"m": [{"tpm": 50}], "big": [{}]}, routing={"m": {"fallbacks": ["big"]}})
    never = ExactCaps({"m#0": 0})
    never.wait = math.inf
    _, served = await router.complete(req(caps=never))
    assert served.model == "big" and p["m#0"].calls == 0


async def test_a_retry_that_cannot_wait_within_the_deadline_takes_nothing_from_the_caps() -> None:
    router, p = build({"m": [{"rpm": 5}, {"rpm": 5}]}, routing={"m": {"num_retries": 1, "timeout_s": 1}},
                      breaker={"enabled": False})
    p["m#0"].always = Step(error=errors.Unavailable("busy", retry_after=5.0))
    caps = ExactCaps({"m#1": 0})
    with pytest.raises(errors.Unavailable):
        await router.complete(req(caps=caps))
    assert p["m#0"].calls == 1
    assert caps.asked.count("m#0") == 1  # the retry would wait past the deadline: never taken, never called


async def test_a_half_open_trial_is_given_back_when_its_caps_refuse_or_cannot_be_checked() -> None:
    class Down:
        async def admit(self, deployment_id: str) -> float | None:
            raise errors.Unavailable("Rate limits cannot be checked right now; try again shortly.")

    clock = Clock()
    router, p = build({"m": [{"rpm": 5}]}, routing={"m": {"num_retries": 0}},
                      breaker={"failures": 1, "cooldown_s": 10}, clock=clock)
    s = router.book.state("m#0")
    p["m#0"].push(Step(error=errors.Unavailable("down")))
    with pytest.raises(errors.Unavailable):
        await router.complete(req())
    clock.advance(10)
    for caps in (ExactCaps({"m#0": 0}), Down()):
        with pytest.raises((errors.RateLimited, errors.Unavailable)):
            await router.complete(req(caps=caps))
        assert s.breaker.trials == 0 and s.breaker.phase(clock.monotonic()) == HALF_OPEN
    await router.complete(req(caps=ExactCaps({})))  # the trial is still there for a call that may go
    assert p["m#0"].calls == 2 and s.breaker.phase(clock.monotonic()) == CLOSED


async def test_deployments_over_their_tpm_are_skipped() -> None:
    router, p = build({"m": [{"tpm": 100}, {"tpm": 1000}]}, routing={"m": {"strategy": "most_quota"}})
    for _ in range(44):  # 10 tokens a call: m#0 loses 10% of its quota a call, m#1 1%
        await router.complete(req())
    assert 3 <= p["m#0"].calls <= 5  # most_quota shares load in proportion to the caps (1:10)
    router, p = build({"m": [{"tpm": 25}, {"tpm": 1000}]}, routing={"m": {"strategy": "weighted"}})
    for _ in range(40):
        await router.complete(req())
    assert p["m#0"].calls <= 3  # 3 calls = 30 tokens: over its 25


async def test_least_inflight_spreads_concurrent_slow_calls() -> None:
    router, p = build({"m": [{}, {}, {}]}, routing={"m": {"strategy": "least_inflight"}})
    for prov in p.values():
        prov.always = Step(delay=0.05)
    await asyncio.gather(*(router.complete(req()) for _ in range(9)))
    assert sorted(prov.max_inflight for prov in p.values()) == [3, 3, 3]


async def test_lowest_latency_learns_which_deployment_is_fast() -> None:
    router, p = build({"m": [{}, {}]}, routing={"m": {"strategy": "lowest_latency"}})
    p["m#0"].always = Step(delay=0.03)
    for _ in range(12):
        await router.complete(req())
    before = p["m#0"].calls
    for _ in range(10):
        await router.complete(req())
    assert p["m#0"].calls == before  # once both are measured, the slow one gets nothing


# -- streams ----------------------------------------------------------------------------


async def collect(chunks: object) -> list[dict[str, object]]:
    return [c async for c in chunks]  # type: ignore[attr-defined]


async def test_stream_failure_before_the_first_chunk_falls_back() -> None:
    router, p = build({"a": [{}], "b": [{}]}, routing={"a": {"fallbacks": ["b"], "num_retries": 0}})
    p["a#0"].push(Step(error=errors.Unavailable("down")))
    chunks, served = await router.open_stream(req("a"))
    got = await collect(chunks)
    assert served.model == "b" and got[0]["model"] == "b-0"
    assert served.first_token_s is not None


async def test_stream_failure_after_the_first_chunk_is_raised_from_the_stream_and_not_retried() -> None:
    router, p = build({"a": [{}], "b": [{}]}, routing={"a": {"fallbacks": ["b"]}}, breaker={"failures": 1})
    p["a#0"].push(Step(error=errors.UpstreamError("cut"), fail_after=2))
    chunks, _ = await router.open_stream(req("a"))
    seen = []
    with pytest.raises(errors.UpstreamError, match="cut"):
        async for c in chunks:
            seen.append(c)
    assert len(seen) == 2
    assert (p["a#0"].calls, p["b#0"].calls) == (1, 0)
    s = router.book.state("a#0")
    assert s.breaker.phase(time.monotonic()) == OPEN and s.local_inflight == 0  # the cut counted


async def test_a_stream_that_breaks_with_an_unexpected_error_after_the_first_chunk_counts_as_a_failure() -> None:
    # a chunk the adapter cannot translate, an exception no adapter mapped: the stream broke, the client did
    # not leave, so the breaker and the attempt metrics must hear of it, as for a whole answer
    router, p = build({"a": [{}]}, breaker={"failures": 1})
    outcomes: list[str] = []
    router.observe_attempts(lambda model, provider, deployment, outcome, seconds: outcomes.append(outcome))

    async def broken(body: object, call: object) -> Any:
        yield {"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": "x"}}]}
        raise KeyError("choices")

    p["a#0"].stream_chat = broken  # type: ignore[method-assign,assignment]
    chunks, _ = await router.open_stream(req("a"))
    with pytest.raises(errors.UpstreamError, match="KeyError"):
        await collect(chunks)
    s = router.book.state("a#0")
    assert outcomes == ["upstream_error"]
    assert s.breaker.phase(time.monotonic()) == OPEN and s.local_inflight == 0


async def test_stream_first_token_timeout_is_retried() -> None:
    router, p = build({"m": [{"first_token_timeout_s": 0.1}]}, routing={"m": {"num_retries": 1}})
    p["m#0"].push(Step(delay=5))
    started = time.monotonic()
    chunks, served = await router.open_stream(req())
    await collect(chunks)
    assert served.attempts == 2 and time.monotonic() - started < 1


async def test_stream_records_time_to_first_token_and_tokens() -> None:
    router, p = build({"m": [{"tpm": 1000}]})
    p["m#0"].push(Step(delay=0.02))
    chunks, _ = await router.open_stream(req())
    await collect(chunks)
    s = router.book.state("m#0")
    assert s.ttft_s is not None and s.ttft_s >= 0.02
    assert s.tpm.used(router.clock.now()) == 10
    assert s.local_inflight == 0


async def test_unknown_model_is_a_404_and_wrong_endpoint_a_400() -> None:
    router, _ = build({"m": [{}]})
    with pytest.raises(errors.NotFound):
        await router.complete(req("nope"))
    with pytest.raises(errors.InvalidRequest):
        await router.complete(RouteRequest(model="m", body={"model": "m", "input": "x"}, endpoint="embeddings"))


async def test_all_full_or_cooling_answers_the_shortest_wait_of_the_two() -> None:
    router, p = build({"m": [{"rpm": 5}, {"rpm": 5}]}, routing={"m": {"num_retries": 0, "max_retry_after_s": 1}})
    p["m#0"].push(Step(error=errors.RateLimited("slow down", retry_after=120)))
    caps = ExactCaps({"m#0": 5, "m#1": 0}, wait=7.0)  # m#1 is at its cap for 7 s more
    with pytest.raises(errors.RateLimited):
        await router.complete(req(caps=caps))  # m#0 answers 429: it cools for longer than we wait for
    with pytest.raises(errors.RateLimited) as exc:
        await router.complete(req(caps=caps))
    assert exc.value.retry_after == 7.0  # m#1 has room again first
    assert (p["m#0"].calls, p["m#1"].calls) == (1, 0)


async def test_a_chain_whose_models_are_all_full_answers_the_shortest_wait_of_them() -> None:
    class Waits:
        async def admit(self, deployment_id: str) -> float | None:
            return {"m#0": 10.0, "m#1": 12.0, "backup#0": 50.0}[deployment_id]

    router, p = build({"m": [{"rpm": 5}, {"rpm": 5}], "backup": [{"rpm": 5}]}, routing={"m": {"fallbacks": ["backup"]}})
    with pytest.raises(errors.RateLimited) as exc:
        await router.complete(req(caps=Waits()))
    assert exc.value.retry_after == 10.0 and "`m`" in str(exc.value)  # m has room first, not the fallback
    assert p["m#0"].calls == p["m#1"].calls == p["backup#0"].calls == 0


async def _half_open(router: object, clock: Clock) -> None:
    with pytest.raises(errors.Unavailable):
        await router.complete(req())  # type: ignore[attr-defined]
    clock.advance(11)


async def _half_open_router() -> tuple[Any, dict[str, Any], Clock, Any]:
    """One deployment whose breaker opened on a failure and is half-open now: its next call is the trial."""
    clock = Clock()
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 0}},
                      breaker={"failures": 1, "cooldown_s": 10}, clock=clock)
    p["m#0"].push(Step(error=errors.Unavailable("down")))
    await _half_open(router, clock)
    return router, p, clock, router.book.state("m#0")


async def test_a_stream_closed_before_its_first_read_ends_its_call_and_gives_back_its_trial() -> None:
    router, _, clock, s = await _half_open_router()
    chunks, _ = await router.open_stream(req())  # the half-open trial: its first content closed the breaker
    await chunks.aclose()  # the client left before a chunk was sent: an unstarted generator ran no finally
    assert s.local_inflight == 0  # least_inflight no longer counts a call that ended
    assert s.breaker.trials == 0 and s.breaker.phase(clock.monotonic()) == CLOSED
    chunks, _ = await router.open_stream(req())
    assert [c async for c in chunks]
    assert s.breaker.phase(clock.monotonic()) == CLOSED


async def test_a_stream_the_adapter_refuses_as_it_is_opened_ends_its_call_and_gives_back_its_trial() -> None:
    router, p, clock, s = await _half_open_router()

    def refuse(body: object, call: object) -> None:  # e.g. an adapter shaping the body before its generator
        raise errors.InvalidRequest("cannot send this body to the upstream")

    p["m#0"].stream_chat = refuse  # type: ignore[method-assign,assignment]
    with pytest.raises(errors.InvalidRequest):
        await router.open_stream(req())
    assert s.local_inflight == 0
    # refused before any upstream call: that says nothing of the upstream, so the next call is the trial
    assert s.breaker.trials == 0 and s.breaker.phase(clock.monotonic()) == HALF_OPEN


@pytest.mark.parametrize("stream", [False, True])
async def test_lowest_latency_stops_choosing_a_deployment_that_only_times_out(stream: bool) -> None:
    # never an answer, so never a latency from an answer: it counted as unmeasured, and unmeasured goes first,
    # so every request waited out its timeout there before its retry went to the one that answers
    router, p = build({"m": [{"timeout_s": 0.05, "first_token_timeout_s": 0.05}, {}]},
                      routing={"m": {"strategy": "lowest_latency", "num_retries": 1}}, breaker={"enabled": False})
    p["m#0"].always = Step(stall=True)
    for _ in range(10):
        served = await served_once(router, stream)
        assert served.deployment is not None and served.deployment.id == "m#1"
    assert p["m#0"].calls == 1  # measured once, at its timeout: slower than the one that answers


async def test_all_full_answers_a_short_wait_as_it_is_not_rounded_up_to_a_second() -> None:
    # the exact caps free in 0.2 s: retry-after-ms said 1000 while x-ratelimit-reset said 0.2 s, and the SDKs
    # slept up to 0.8 s more than needed
    router, _ = build({"m": [{"rpm": 5}]}, routing={"m": {"num_retries": 0}})
    with pytest.raises(errors.RateLimited) as exc:
        await router.complete(req(caps=ExactCaps({"m#0": 0}, wait=0.2)))
    assert exc.value.retry_after == 0.2


async def test_a_deployment_cooling_for_a_short_retry_after_says_that_wait_not_a_whole_second() -> None:
    clock = Clock()
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 0, "max_retry_after_s": 0.1}}, clock=clock)
    p["m#0"].push(Step(error=errors.RateLimited("slow down", retry_after=0.4)))
    with pytest.raises(errors.RateLimited):
        await router.complete(req())  # longer than the model waits for: the upstream's 429 goes back
    clock.advance(0.1)
    with pytest.raises(errors.RateLimited) as exc:
        await router.complete(req())  # the deployment still cools: refused by the gateway, with what is left
    assert exc.value.retry_after == pytest.approx(0.3)
    assert p["m#0"].calls == 1


async def test_an_open_breaker_closing_soon_says_its_wait_not_a_whole_second() -> None:
    clock = Clock()
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 0}},
                      breaker={"failures": 1, "cooldown_s": 0.5}, clock=clock)
    p["m#0"].push(Step(error=errors.Unavailable("down")))
    with pytest.raises(errors.Unavailable):
        await router.complete(req())
    clock.advance(0.2)
    with pytest.raises(errors.Unavailable) as exc:
        await router.complete(req())
    assert exc.value.retry_after == pytest.approx(0.3)


async def test_this_replicas_own_rpm_estimate_keeps_a_one_second_floor() -> None:
    # with replicas sharing their counts, the total adopted at the last sync does not roll over with the minute:
    # the replica has room again only at its next sync, so 50 ms would not be a promise it keeps
    clock = Clock()  # its wall time is at a whole minute
    router, _ = build({"m": [{"rpm": 1}]}, routing={"m": {"num_retries": 0}}, clock=clock)
    router.book.state("m#0").rpm.shared = 1.0  # as the shared-state sync sets it
    clock.advance(59.95)
    with pytest.raises(errors.RateLimited) as exc:
        await router.complete(req())
    assert exc.value.retry_after == 1.0
    clock.advance(0.1)  # the minute rolled over, the sync has not run yet: still full
    with pytest.raises(errors.RateLimited):
        await router.complete(req())
