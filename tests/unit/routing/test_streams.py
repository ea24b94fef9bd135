"""A stream is handed on at its first chunk with content: opening chunks that say nothing yet (the role, an
empty text: OpenAI's first chunk, Anthropic's message_start) are held, so a failure right after them still
falls back and a first-token limit waits for a token."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigw import errors
from aigw.routing.attempts import timeouts_for
from aigw.routing.breaker import CLOSED, OPEN
from aigw.routing.router import RouteRequest
from aigw.routing.streams import HEAD_MAX, says_nothing
from aigw.types import JSON
from tests.unit.routing.fakes import Clock, build, deployment

BODY = {"model": "a", "messages": [{"role": "user", "content": "hi"}]}


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> JSON:
    return {"object": "chat.completion.chunk", "model": "a-0", **extra,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]}


ROLE = chunk({"role": "assistant", "content": "", "refusal": None})  # OpenAI's first chunk; message_start's


def opens_then(*rest: JSON | errors.GatewayError | float) -> Any:
    """A stream_chat that sends the role chunk, then each of ``rest``: a chunk, an error raised, or a pause."""

    async def stream_chat(body: JSON, call: object) -> AsyncIterator[JSON]:
        yield ROLE
        for item in rest:
            if isinstance(item, errors.GatewayError):
                raise item
            if isinstance(item, float):
                await asyncio.sleep(item)
            else:
                yield item

    return stream_chat


async def collect(chunks: AsyncIterator[JSON]) -> list[JSON]:
    return [c async for c in chunks]


@pytest.mark.parametrize("shape", [ROLE, chunk({"role": "assistant"}), chunk({"content": ""}),
                                   chunk({"role": "assistant", "content": None, "tool_calls": None}),
                                   {"object": "text_completion", "choices": [{"index": 0, "text": ""}]}])
def test_an_opening_chunk_says_nothing(shape: JSON) -> None:
    assert says_nothing(shape)


@pytest.mark.parametrize("shape", [chunk({"content": "Hi"}), chunk({"reasoning_content": "hm"}),
                                   chunk({"tool_calls": [{"index": 0, "id": "c", "function": {"name": "f"}}]}),
                                   chunk({}, "stop"), {"object": "chat.completion.chunk", "choices": [],
                                                       "usage": {"total_tokens": 3}},
                                   {"object": "text_completion", "choices": [{"index": 0, "text": "Hi"}]},
                                   chunk({"role": "assistant", "content": ""}, usage={"total_tokens": 3})])
def test_a_chunk_with_content_a_finish_or_usage_says_something(shape: JSON) -> None:
    assert not says_nothing(shape)


async def test_a_failure_right_after_the_opening_chunk_falls_back() -> None:
    # Anthropic sends message_start at once, then may fail with an overloaded_error event before any token
    router, p = build({"a": [{}], "b": [{}]}, routing={"a": {"fallbacks": ["b"], "num_retries": 0}})
    p["a#0"].stream_chat = opens_then(errors.Unavailable("Overloaded"))  # type: ignore[method-assign]
    chunks, served = await router.open_stream(RouteRequest(model="a", body=dict(BODY)))
    got = await collect(chunks)
    assert served.model == "b" and served.fallbacks == ["b"]
    assert {c["model"] for c in got} == {"b-0"}  # nothing of the failed attempt reaches the client
    assert router.book.state("a#0").last_error == "unavailable"


async def test_the_first_token_limit_waits_for_a_token_not_the_opening_chunk() -> None:
    router, p = build({"a": [{"first_token_timeout_s": 0.05}], "b": [{}]},
                      routing={"a": {"fallbacks": ["b"], "num_retries": 0}})
    p["a#0"].stream_chat = opens_then(1.0, chunk({"content": "late"}))  # type: ignore[method-assign]
    chunks, served = await router.open_stream(RouteRequest(model="a", body=dict(BODY)))
    await collect(chunks)
    assert served.model == "b"
    assert router.book.state("a#0").last_error == "timeout"


async def test_the_held_chunks_come_first_and_a_failure_after_content_ends_the_stream() -> None:
    router, p = build({"a": [{}], "b": [{}]}, routing={"a": {"fallbacks": ["b"]}})
    p["a#0"].stream_chat = opens_then(0.01, chunk({"content": "Hi"}), errors.UpstreamError("cut"))  # type: ignore[method-assign]
    chunks, served = await router.open_stream(RouteRequest(model="a", body=dict(BODY)))
    seen: list[JSON] = []
    with pytest.raises(errors.UpstreamError, match="cut"):
        async for c in chunks:
            seen.append(c)
    assert seen == [ROLE, chunk({"content": "Hi"})]
    assert served.model == "a" and served.first_token_s is not None and served.first_token_s >= 0.01


async def test_an_answer_without_content_is_passed_on_whole() -> None:
    router, p = build({"a": [{}]})
    usage = {"object": "chat.completion.chunk", "choices": [], "usage": {"total_tokens": 4}}
    p["a#0"].stream_chat = opens_then(chunk({}, "stop"), usage)  # type: ignore[method-assign]
    chunks, _ = await router.open_stream(RouteRequest(model="a", body=dict(BODY)))
    assert await collect(chunks) == [ROLE, chunk({}, "stop"), usage]
    p["a#0"].stream_chat = opens_then()  # type: ignore[method-assign]  # the role, then the end
    chunks, _ = await router.open_stream(RouteRequest(model="a", body=dict(BODY)))
    assert await collect(chunks) == [ROLE]


async def test_only_a_bounded_number_of_opening_chunks_is_held() -> None:
    router, p = build({"a": [{}], "b": [{}]}, routing={"a": {"fallbacks": ["b"]}})
    p["a#0"].stream_chat = opens_then(*[ROLE] * (HEAD_MAX + 5), errors.UpstreamError("cut"))  # type: ignore[method-assign]
    chunks, served = await router.open_stream(RouteRequest(model="a", body=dict(BODY)))
    assert served.model == "a"  # handed on after HEAD_MAX of them: the failure after is the stream's
    with pytest.raises(errors.UpstreamError):
        await collect(chunks)


def half_open() -> tuple[Clock, Any, Any, Any]:
    """A one-deployment model whose breaker has just turned half-open: the next call is its trial."""
    clock = Clock()
    router, p = build({"a": [{}]}, routing={"a": {"num_retries": 0}}, breaker={"failures": 1, "cooldown_s": 10},
                      clock=clock)
    s = router.book.state("a#0")
    s.breaker.trip(clock.monotonic())
    clock.advance(10)
    return clock, router, p, s


async def test_a_streamed_half_open_trial_closes_the_breaker_at_its_first_content() -> None:
    # the upstream answered: a long stream must not keep every other request off the deployment (503s for a
    # one-deployment model) until its last chunk
    clock, router, p, s = half_open()
    p["a#0"].stream_chat = opens_then(chunk({"content": "Hi"}), 0.05, chunk({}, "stop"))  # type: ignore[method-assign]
    trial, _ = await router.open_stream(RouteRequest(model="a", body=dict(BODY)))
    assert s.breaker.phase(clock.monotonic()) == CLOSED
    other = asyncio.ensure_future(router.complete(RouteRequest(model="a", body=dict(BODY))))
    assert len(await collect(trial)) == 3
    await other  # served while the trial still streamed, not refused
    assert s.breaker.phase(clock.monotonic()) == CLOSED and s.breaker.trials == 0 and s.local_inflight == 0


async def test_a_streamed_trial_that_breaks_after_its_first_content_counts_as_a_failure() -> None:
    clock, router, p, s = half_open()
    p["a#0"].stream_chat = opens_then(chunk({"content": "Hi"}), errors.UpstreamError("cut"))  # type: ignore[method-assign]
    trial, _ = await router.open_stream(RouteRequest(model="a", body=dict(BODY)))
    with pytest.raises(errors.UpstreamError):
        await collect(trial)
    assert s.breaker.phase(clock.monotonic()) == OPEN and s.breaker.trials == 0


async def test_a_stream_that_stalls_between_chunks_ends_with_a_timeout_at_its_chunk_limit() -> None:
    router, p = build({"a": [{"chunk_timeout_s": 0.05}]}, breaker={"failures": 1})
    p["a#0"].stream_chat = opens_then(chunk({"content": "Hi"}), 0.02, chunk({"content": " there"}),  # type: ignore[method-assign]
                                      5.0, chunk({"content": "never"}))
    chunks, _ = await router.open_stream(RouteRequest(model="a", body=dict(BODY)))
    seen: list[JSON] = []
    started = time.monotonic()
    with pytest.raises(errors.UpstreamTimeout, match=r"nothing for 0\.05 s"):
        async for c in chunks:
            seen.append(c)
    assert time.monotonic() - started < 1  # not the stalled upstream's 5 s, nor the request's 600
    assert seen == [ROLE, chunk({"content": "Hi"}), chunk({"content": " there"})]  # pauses under the limit pass
    s = router.book.state("a#0")
    assert s.last_error == "timeout" and s.local_inflight == 0
    assert s.breaker.phase(time.monotonic()) == OPEN  # a stalled upstream counts against its deployment


async def test_the_chunk_limit_counts_waits_for_the_upstream_not_a_slow_reader() -> None:
    # the consumer (a slow client) takes longer than the limit between reads: the upstream is not stalled
    router, p = build({"a": [{}]}, routing={"a": {"chunk_timeout_s": 0.03}})
    p["a#0"].stream_chat = opens_then(*[chunk({"content": f"c{i}"}) for i in range(4)])  # type: ignore[method-assign]
    chunks, _ = await router.open_stream(RouteRequest(model="a", body=dict(BODY)))
    seen: list[JSON] = []
    async for c in chunks:
        seen.append(c)
        await asyncio.sleep(0.06)
    assert len(seen) == 5 and router.book.state("a#0").last_error == ""


@pytest.mark.parametrize(("deployment_s", "model_s", "expected"), [
    (None, None, None), (0.5, None, 0.5), (None, 0.2, 0.2), (0.5, 0.2, 0.2), (0.1, 0.2, 0.1)])
def test_the_chunk_limit_is_the_smaller_of_the_deployment_and_the_model(
        deployment_s: float | None, model_s: float | None, expected: float | None) -> None:
    d = deployment("a", 0, chunk_timeout_s=deployment_s)
    assert timeouts_for(d, 600.0, None, model_s).chunk == expected


@pytest.mark.parametrize("whose", ["deployment", "request"])
async def test_a_stream_cut_by_its_whole_time_says_which_limit_ended_it(whose: str) -> None:
    # a deployment's timeout_s bounds each attempt's whole stream: an operator whose long answers end must be sent
    # to that setting, not to the request's timeout (x-aigw-timeout, routing.<model>.timeout_s) that was not it
    extra = {"timeout_s": 0.2} if whose == "deployment" else {}
    router, p = build({"a": [extra]}, breaker={"enabled": False})
    p["a#0"].stream_chat = opens_then(chunk({"content": "Hi"}), *[0.05, chunk({"content": "."})] * 40)  # type: ignore[method-assign]
    deadline = None if whose == "deployment" else 0.2
    chunks, _ = await router.open_stream(RouteRequest(model="a", body=dict(BODY), deadline_s=deadline))
    with pytest.raises(errors.UpstreamTimeout) as exc:
        await collect(chunks)
    if whose == "deployment":
        assert "timeout_s" in str(exc.value) and "0.2 s" in str(exc.value) and "request" not in str(exc.value)
    else:
        assert "request's timeout" in str(exc.value) and "timeout_s" not in str(exc.value)
