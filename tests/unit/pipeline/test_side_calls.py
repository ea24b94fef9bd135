"""A call a stage made for a request (the semantic cache's embedding) is billed to the request's caller."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from aigw.accounting.ledger import Ledger
from aigw.accounting.pricing import PriceBook
from aigw.config.models import Deployment, Prices
from aigw.config.tenancy import LedgerConfig
from aigw.pipeline.context import RequestContext
from aigw.pipeline.side_calls import CACHE_EMBEDDING, SIDE_CALLS, SideCall, note
from aigw.pipeline.stages import accounting, budget, limits
from aigw.pipeline.stages.cache_semantic import DeploymentEmbedder, embedding
from aigw.pipeline.tenancy import TenancyServices, key_scopes
from aigw.routing.attempts import Served
from aigw.stores.base import Limits
from aigw.stores.sqlite.ledger_rows import COLUMNS
from aigw.types import JSON
from tests.unit.pipeline.test_tenancy_stages import MOCK, Sink, _ctx, _deps, _services

VEC = Deployment(name="vec", provider="openai", model="text-embedding-3-small", id="vec#0", modes=["embeddings"],
                 prices=Prices(input_per_mtok=100))
EMBED_NANO = 100 * 1000  # one token at $100 per million


def _svc() -> tuple[TenancyServices, Sink]:
    """The tenancy stage tests' services, with both deployments priced and a ledger writing to a sink."""
    svc, sink = _services(), Sink()
    svc.prices, svc.ledger = PriceBook([MOCK, VEC]), Ledger(sink, LedgerConfig())
    return svc, sink


async def _rows(svc: TenancyServices, sink: Sink) -> list[dict[str, Any]]:
    assert svc.ledger is not None
    await svc.ledger.flush_once()
    return [dict(zip(COLUMNS, row, strict=True)) for row in sink.rows]


async def _finish(svc: TenancyServices, sink: Sink, ctx: RequestContext, *stage_names: str
                  ) -> list[dict[str, Any]]:
    """Run ``stage_names`` (of limits, budget, accounting) in and out; the ledger rows written, as dicts."""
    mods = {"limits": limits, "budget": budget, "accounting": accounting}
    stages = [mods[n].build(_deps(svc)) for n in stage_names]
    for stage in stages:
        assert stage is not None
        await stage.on_request(ctx)
    if ctx.handled_by == "":
        ctx.served_by, ctx.usage = MOCK, {"prompt_tokens": 4, "completion_tokens": 3}
    note(ctx, SideCall(CACHE_EMBEDDING, "vec", VEC, {"prompt_tokens": 7, "total_tokens": 7}, "hello"))
    for stage in stages:
        await stage.on_finish(ctx)  # type: ignore[union-attr]
    return await _rows(svc, sink)


@pytest.mark.parametrize("rpm", [100, None], ids=["settled with the rate limits", "budget alone"])
async def test_a_cache_hit_pays_for_its_embedding_in_budget_tpm_and_ledger(rpm: int | None) -> None:
    svc, sink = _svc()
    ctx = _ctx(Limits(rpm=rpm, tpm=1000 if rpm else None, budget_usd=1.0, budget_period="total"),
               handled_by="cache", usage={"prompt_tokens": 10, "completion_tokens": 10})
    rows = await _finish(svc, sink, ctx, "limits", "budget", "accounting")
    assert await svc.budgets.spent(key_scopes(ctx, "budget")[0], 0) == 7 * EMBED_NANO  # the hit itself is free
    if rpm:
        (left,) = await svc.gate.peek(key_scopes(ctx, "rate"))
        assert left.remaining_tokens == 1000 - 7  # the hit's own tokens are not counted, its embedding's are
    chat, embed = rows
    assert (chat["endpoint"], chat["cost_nano"], chat["cache_hit"]) == ("chat", 0, 1)
    assert embed["id"] == chat["id"] + ".1" and embed["request_id"] == "req_1.1"
    assert (embed["endpoint"], embed["model"], embed["deployment_id"], embed["provider"]) == \
        (CACHE_EMBEDDING, "vec", "vec#0", "openai")
    assert (embed["prompt_tokens"], embed["completion_tokens"], embed["cost_nano"], embed["cost_saved_nano"]) == \
        (7, 0, 7 * EMBED_NANO, 0)
    assert (embed["status"], embed["cache_hit"], embed["usage_source"]) == (200, 0, "provider")
    same = ("day", "tenant_id", "project_id", "key_id", "key_prefix", "ts_start")
    assert {c: embed[c] for c in same} == {c: chat[c] for c in same}


async def test_a_miss_pays_for_its_answer_and_its_embedding() -> None:
    svc, sink = _svc()
    ctx = _ctx(Limits(budget_usd=1.0, budget_period="total"))
    rows = await _finish(svc, sink, ctx, "budget", "accounting")
    answer = 4 * 1_000_000 + 3 * 2_000_000
    assert await svc.budgets.spent(key_scopes(ctx, "budget")[0], 0) == answer + 7 * EMBED_NANO
    assert [(r["endpoint"], r["cost_nano"]) for r in rows] == [("chat", answer), (CACHE_EMBEDDING, 7 * EMBED_NANO)]


async def test_an_embedding_without_usage_is_billed_by_a_local_count() -> None:
    svc, sink = _svc()
    ctx = _ctx()
    note(ctx, SideCall(CACHE_EMBEDDING, "vec", VEC, None, "one two three"))
    stage = accounting.build(_deps(svc))
    assert stage is not None
    await stage.on_finish(ctx)
    _, embed = await _rows(svc, sink)
    assert (embed["prompt_tokens"], embed["usage_source"]) == (3, "local")
    assert embed["cost_nano"] == 3 * EMBED_NANO


async def test_only_an_embedding_deployment_bills_the_request() -> None:
    class Router:
        async def complete(self, request: Any) -> tuple[JSON, Served]:
            assert request.body["input"] == ["hi there"]
            return ({"data": [{"embedding": [3.0, 4.0]}], "usage": {"prompt_tokens": 2, "total_tokens": 2}},
                    Served(deployment=VEC, model="vec", upstream_s=0.01))

    ctx = _ctx()
    vector = await embedding(DeploymentEmbedder(Router(), "vec"), "hi there", ctx)()  # type: ignore[arg-type]
    assert vector is not None and np.allclose(vector, [0.6, 0.8])
    (call,) = ctx.state[SIDE_CALLS]
    assert (call.endpoint, call.model, call.deployment, call.usage) == \
        (CACHE_EMBEDDING, "vec", VEC, {"prompt_tokens": 2, "total_tokens": 2})

    class Local:  # the shipped local model: costs nothing
        async def embed(self, text: str) -> Any:
            return np.asarray([1.0, 0.0], dtype=np.float32)

    other = _ctx()
    assert await embedding(Local(), "hi there", other)() is not None
    assert SIDE_CALLS not in other.state

