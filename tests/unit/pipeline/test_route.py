"""The pipeline's route terminal: what it hands the router."""

from __future__ import annotations

import time

import pytest

from aigw import errors
from aigw.pipeline.context import RequestContext
from aigw.pipeline.route import RouteTerminal
from tests.unit.routing.fakes import Step, build


def _ctx(deadline_s: float, spent_s: float) -> RequestContext:
    ctx = RequestContext(request_id="r", api="openai", endpoint="chat", model="m", deadline_s=deadline_s,
                         body={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    ctx.started -= spent_s  # what the stages before the router took (a semantic cache's embedding, a slow store)
    return ctx


async def test_the_clients_timeout_counts_from_the_requests_arrival_not_from_the_router() -> None:
    router, p = build({"m": [{}]}, routing={"m": {"num_retries": 0}})
    p["m#0"].always = Step(delay=1.0)
    started = time.monotonic()
    with pytest.raises(errors.UpstreamTimeout):
        await RouteTerminal(router).handle(_ctx(1.3, spent_s=1.0))
    assert time.monotonic() - started < 0.6  # 0.3 s were left of the client's 1.3 s, not 1.3 s more


async def test_a_timeout_spent_before_the_router_calls_no_upstream() -> None:
    router, p = build({"m": [{}]})
    with pytest.raises(errors.UpstreamTimeout):
        await RouteTerminal(router).handle(_ctx(1.0, spent_s=1.5))
    assert p["m#0"].calls == 0
