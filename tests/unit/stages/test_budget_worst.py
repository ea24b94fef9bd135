"""The budget's worst case covers every charge a settle may add: calls in flight together never overrun a
budget by more than one call's difference between its reservation and its real cost."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from aigw import errors
from aigw.accounting.pricing import PriceBook
from aigw.config.models import Deployment, GatewayConfig, Prices
from aigw.pipeline.context import RequestContext
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stages import budget
from aigw.pipeline.tenancy import SERVICE
from aigw.providers.anthropic.translate_response import to_canonical_usage
from aigw.stores.base import NANO, Limits, to_nano
from tests.unit.pipeline.test_tenancy_stages import _ctx, _services

SEARCHING = Deployment(name="claude", provider="anthropic", model="claude-x", id="claude#0",
                       prices=Prices(input_per_mtok=1, output_per_mtok=2, per_web_search=0.01))


def _stage(*models: Deployment, **cfg: Any) -> budget.BudgetStage:
    svc = _services(**cfg)
    svc.prices = PriceBook(list(models))
    deps = StageDeps(config=GatewayConfig(models=list(models)))
    deps.services[SERVICE] = svc
    stage = budget.build(deps)
    assert isinstance(stage, budget.BudgetStage)
    return stage


def _search_ctx(limits: Limits, max_uses: int | None) -> RequestContext:
    tool: dict[str, Any] = {"type": "web_search_20250305", "name": "web_search"}
    if max_uses is not None:
        tool["max_uses"] = max_uses
    body = {"model": "claude", "messages": [{"role": "user", "content": "news?"}], "max_tokens": 100,
            "_anthropic": {"server_tools": [tool]}}
    ctx = _ctx(limits, body=body)
    ctx.model = "claude"
    return ctx


async def _run(stage: budget.BudgetStage, ctxs: list[RequestContext], searches: int) -> tuple[int, int]:
    """Every call admitted together, then each settled at ``searches`` web searches: (admitted, settled nano)."""
    admitted = []
    for ctx, outcome in zip(ctxs, await asyncio.gather(*(stage.on_request(c) for c in ctxs),
                                                        return_exceptions=True), strict=True):
        if isinstance(outcome, errors.BudgetExceeded):
            assert outcome.code == "budget_exceeded" and outcome.status == 429
        else:
            assert outcome is None, outcome
            admitted.append(ctx)
    for ctx in admitted:
        ctx.served_by = SEARCHING
        ctx.usage = to_canonical_usage({"input_tokens": 10, "output_tokens": 100,  # as the adapter hands it on
                                        "server_tool_use": {"web_search_requests": searches}})
        await stage.on_finish(ctx)
    return len(admitted), await stage.svc.budgets.spent(ctxs[0].principal.extra["scopes"]["budget"][0], 0.0)


@pytest.mark.parametrize(("max_uses", "searches"), [(5, 5), (None, 10)])
async def test_calls_in_flight_that_may_search_the_web_cannot_together_overrun_the_budget(
        max_uses: int | None, searches: int) -> None:
    # the worst case left web searches out ($0.01 each on Anthropic): six calls of ~$0.0002 in tokens were all
    # admitted against $0.12 and settled at $0.30, an overrun of three calls' searches
    stage = _stage(SEARCHING)
    limits = Limits(budget_usd=0.12, budget_period="total")
    admitted, spent = await _run(stage, [_search_ctx(limits, max_uses) for _ in range(6)], searches)
    cost = to_nano(0.01) * searches + 10 * 1000 + 100 * 2000  # one call's searches and tokens
    assert admitted == 0.12 * NANO // cost
    assert spent == admitted * cost <= to_nano(0.12)


def test_a_model_without_a_search_price_reserves_nothing_for_searches() -> None:
    plain = SEARCHING.model_copy(update={"prices": Prices(input_per_mtok=1, output_per_mtok=2)})
    stage = _stage(plain)
    with_tool = stage.worst_case_nano(_search_ctx(Limits(), 5))
    ctx = _search_ctx(Limits(), 5)
    del ctx.body["_anthropic"]
    assert with_tool == stage.worst_case_nano(ctx)
