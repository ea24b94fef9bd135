"""What a deployment embedder hands its ``bill``: every call the upstream took, answered or cut short.

The router is a stand-in that plays one outcome: an answer after a try cut short, or an error (the cache's own
timeout is a cancel) after a cut try; each cut try is billed as its prompt, under the status that ended it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aigw import errors
from aigw.config.models import Deployment
from aigw.pipeline.side_calls import CACHE_EMBEDDING, SideCall
from aigw.pipeline.stages.cache_semantic import DeploymentEmbedder
from aigw.routing.attempts import Served
from aigw.routing.router import RouteRequest

VEC = Deployment(name="vec", provider="openai_compatible", model="text-embedding-3-small", id="vec#0")
ANSWER = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.6, 0.8]}],
          "usage": {"prompt_tokens": 4, "total_tokens": 4}}


class OneOutcome:
    """``complete`` as the router does it: ``req.served`` set first, a cut try noted, then ``outcome``."""

    def __init__(self, outcome: BaseException | None, cut: int = 1) -> None:
        self.outcome = outcome
        self.cut = cut

    async def complete(self, req: RouteRequest) -> tuple[dict[str, Any], Served]:
        served = req.served = Served(model=req.model)
        for _ in range(self.cut):
            served.cut_short(VEC)
        if self.outcome is not None:
            raise self.outcome
        served.deployment = VEC
        return ANSWER, served


async def embed(outcome: BaseException | None, cut: int = 1) -> tuple[Any, list[SideCall]]:
    billed: list[SideCall] = []
    embedder = DeploymentEmbedder(OneOutcome(outcome, cut), "vec")  # type: ignore[arg-type]
    try:
        return await embedder.embed("what is the capital of France?", bill=billed.append), billed
    except BaseException as exc:
        return exc, billed


async def test_an_answer_after_a_cut_try_bills_both() -> None:
    vector, billed = await embed(None)
    assert vector is not None and [(c.status, c.kind, c.usage is None) for c in billed] == \
        [(502, "upstream_error", True), (200, "", False)]
    assert all(c.endpoint == CACHE_EMBEDDING and c.deployment is VEC and c.text for c in billed)


@pytest.mark.parametrize(("outcome", "status", "kind"), [
    (asyncio.CancelledError(), 504, "timeout"),  # the cache stopped waiting (``embed_timeout_ms``)
    (errors.UpstreamTimeout("late"), 504, "timeout"),
    (errors.UpstreamError("broken", status=500), 500, "upstream_error"),
])
async def test_a_failed_embedding_bills_its_cut_tries_and_fails(outcome: BaseException, status: int,
                                                                 kind: str) -> None:
    raised, billed = await embed(outcome, cut=2)
    assert raised is outcome
    assert [(c.status, c.kind, c.usage) for c in billed] == [(status, kind, None)] * 2


async def test_a_refused_text_is_no_failure_and_a_try_it_cut_is_billed() -> None:
    vector, billed = await embed(errors.ContextLengthExceeded("too long"))
    assert vector is None and [(c.status, c.usage) for c in billed] == [(400, None)]


async def test_nothing_cut_nothing_extra_billed() -> None:
    vector, billed = await embed(None, cut=0)
    assert vector is not None and [c.status for c in billed] == [200]
    _, failed = await embed(errors.UpstreamTimeout("late"), cut=0)
    assert failed == []
