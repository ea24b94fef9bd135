"""The pipeline: pre-hooks in order, post-hooks reversed, short-circuits, finish always once."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from aigw import errors
from aigw.pipeline.context import Completed, RequestContext, Result, Streaming
from aigw.pipeline.pipeline import Pipeline
from aigw.pipeline.stage import Stage
from aigw.types import JSON


class Recorder(Stage):
    def __init__(self, name: str, log: list[str], answer: Result | None = None, reject: bool = False) -> None:
        self.name, self.log, self.answer, self.reject = name, log, answer, reject

    async def on_request(self, ctx: RequestContext) -> Result | None:
        self.log.append(f"{self.name}.request")
        if self.reject:
            raise errors.GuardrailBlocked("no")
        return self.answer

    async def on_response(self, ctx: RequestContext, body: JSON) -> JSON:
        self.log.append(f"{self.name}.response")
        return {**body, "seen": [*body.get("seen", []), self.name]}

    def on_stream(self, ctx: RequestContext, chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
        async def wrapped() -> AsyncIterator[JSON]:
            async for c in chunks:
                yield {**c, "by": [*c.get("by", []), self.name]}
        return wrapped()

    async def on_finish(self, ctx: RequestContext) -> None:
        self.log.append(f"{self.name}.finish")


class Upstream:
    def __init__(self, log: list[str]) -> None:
        self.log = log

    async def handle(self, ctx: RequestContext) -> Result:
        self.log.append("upstream")
        if ctx.stream:
            async def gen() -> AsyncIterator[JSON]:
                yield {"n": 1}
                yield {"n": 2}
            return Streaming(gen())
        return Completed({"answer": 1})


def ctx(stream: bool = False) -> RequestContext:
    return RequestContext(request_id="r", api="openai", endpoint="chat", body={}, model="m", stream=stream)


async def test_pre_hooks_in_order_post_hooks_reversed() -> None:
    log: list[str] = []
    p = Pipeline([Recorder("a", log), Recorder("b", log)], Upstream(log))
    result = await p.run(ctx())
    assert isinstance(result, Completed) and result.body["seen"] == ["b", "a"]
    assert log == ["a.request", "b.request", "upstream", "b.response", "a.response"]


async def test_a_stage_answering_skips_later_stages_and_the_upstream() -> None:
    log: list[str] = []
    p = Pipeline([Recorder("a", log), Recorder("cache", log, answer=Completed({"cached": True})),
                  Recorder("c", log)], Upstream(log))
    result = await p.run(ctx())
    assert isinstance(result, Completed) and result.body == {"cached": True, "seen": ["a"]}
    assert "upstream" not in log and "c.request" not in log


async def test_a_rejection_propagates_and_finish_still_runs_once() -> None:
    log: list[str] = []
    p = Pipeline([Recorder("a", log), Recorder("guard", log, reject=True)], Upstream(log))
    c = ctx()
    with pytest.raises(errors.GuardrailBlocked):
        await p.run(c)
    await p.finish(c)
    assert log.count("a.finish") == 1 and log.count("guard.finish") == 1 and "upstream" not in log


async def test_streams_are_wrapped_in_reverse_order() -> None:
    log: list[str] = []
    p = Pipeline([Recorder("a", log), Recorder("b", log)], Upstream(log))
    result = await p.run(ctx(stream=True))
    assert isinstance(result, Streaming)
    chunks = [c async for c in result.chunks]
    assert chunks == [{"n": 1, "by": ["b", "a"]}, {"n": 2, "by": ["b", "a"]}]


async def test_a_failing_finish_hook_does_not_break_the_others() -> None:
    log: list[str] = []

    class Broken(Stage):
        name = "broken"

        async def on_finish(self, ctx: RequestContext) -> None:
            raise RuntimeError("ledger down")

    p = Pipeline([Broken(), Recorder("a", log)], Upstream(log))
    await p.finish(ctx())
    assert log == ["a.finish"]


async def test_hooks_a_stage_does_not_define_are_not_called() -> None:
    class OnlyFinish(Stage):
        name = "only"

    p = Pipeline([OnlyFinish()], Upstream([]))
    assert p._pre == [] and p._finish == []


def test_a_pipeline_without_finish_hooks_says_so_and_callers_skip_finish() -> None:
    log: list[str] = []

    class OnlyRequest(Stage):
        name = "only"

        async def on_request(self, ctx: RequestContext) -> Result | None:
            return None

    assert not Pipeline([OnlyRequest()], Upstream(log)).finishes
    assert Pipeline([OnlyRequest(), Recorder("a", log)], Upstream(log)).finishes
