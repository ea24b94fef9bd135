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
from aigw.pipeline.tenancy import ESTIMATE, SERVICE
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


LONG_ANSWERS = Deployment(name="writer", provider="mock", id="writer#0", max_output_tokens=32_000,
                          prices=Prices(input_per_mtok=1, output_per_mtok=10))


def _unbounded_ctx(limits: Limits, model: str = "writer") -> RequestContext:
    ctx = _ctx(limits, body={"model": model, "messages": [{"role": "user", "content": "write a book"}]})
    ctx.model = model
    return ctx


async def test_calls_without_max_tokens_reserve_the_models_output_cap_so_a_burst_cannot_overrun() -> None:
    # a call without max_tokens reserved 4,096 output tokens whatever the model: ten such calls to a model that
    # writes up to 32,000 were admitted against a budget of two, and settled at five times that budget
    stage = _stage(LONG_ANSWERS)
    answer = 32_000 * 10_000  # nano-dollars of one full answer
    limits = Limits(budget_usd=2.5 * answer / NANO, budget_period="total")
    ctxs = [_unbounded_ctx(limits) for _ in range(10)]
    admitted = []
    for ctx, outcome in zip(ctxs, await asyncio.gather(*(stage.on_request(c) for c in ctxs),
                                                        return_exceptions=True), strict=True):
        if outcome is None:
            admitted.append(ctx)
        else:
            assert isinstance(outcome, errors.BudgetExceeded) and outcome.code == "budget_exceeded"
    assert len(admitted) == 2
    for ctx in admitted:  # each writes to the model's cap
        ctx.served_by, ctx.usage = LONG_ANSWERS, {"prompt_tokens": 10, "completion_tokens": 32_000}
        await stage.on_finish(ctx)
    assert await stage.svc.budgets.spent(stage.plan(ctxs[0])[0][0], 0.0) <= limits.budget_usd * NANO  # type: ignore[operator]


async def test_a_model_with_a_small_output_cap_is_not_refused_for_tokens_it_cannot_write() -> None:
    # reserved at 4,096 output tokens, a call to a model that writes at most 1,000 was refused with room for it
    small = LONG_ANSWERS.model_copy(update={"name": "brief", "id": "brief#0", "max_output_tokens": 1_000})
    stage = _stage(small)
    ctx = _unbounded_ctx(Limits(budget_usd=0.02, budget_period="total"), "brief")  # 1,000 x $10/M = $0.01
    assert await stage.on_request(ctx) is None
    # asking for more than every deployment can write reserves what they can write
    asked = _unbounded_ctx(Limits(), "brief")
    asked.body["max_tokens"] = 50_000
    assert stage.worst_case_nano(asked) == stage.worst_case_nano(ctx)


def test_the_cap_applies_only_when_every_deployment_that_may_serve_the_model_has_one() -> None:
    uncapped = LONG_ANSWERS.model_copy(update={"id": "writer#1", "max_output_tokens": None})
    small = LONG_ANSWERS.model_copy(update={"max_output_tokens": 1_000})
    both = _stage(small, uncapped)  # one deployment unknown: the configured default (4,096) or more
    default = _stage(uncapped)
    assert both.worst_case_nano(_unbounded_ctx(Limits())) == default.worst_case_nano(_unbounded_ctx(Limits()))
    bigger = _stage(LONG_ANSWERS, uncapped)  # a known cap above the default is reserved all the same
    assert bigger.worst_case_nano(_unbounded_ctx(Limits())) == _stage(LONG_ANSWERS).worst_case_nano(
        _unbounded_ctx(Limits()))


# $1 / $10 per million: a reasoning call's worst case is mostly its output
CLAUDE = Deployment(name="claude", provider="anthropic", model="claude-sonnet-4-5", id="claude#0",
                    prices=Prices(input_per_mtok=1, output_per_mtok=10))
GPT = Deployment(name="gpt", provider="openai", model="gpt-4o", id="gpt#0", prices=Prices(input_per_mtok=1,
                                                                                          output_per_mtok=10))


def _thinking_worst(stage: budget.BudgetStage, model: str = "claude", metadata: dict[str, Any] | None = None,
                    **body: object) -> int:
    """The worst case of a 50-token prompt to ``model`` (output tokens x $10/M + $1/M a prompt token)."""
    ctx = _ctx(body={"model": model, "messages": [{"role": "user", "content": "think"}], **body})
    ctx.model = model
    if metadata is not None:
        from aigw.http.key_lookup import principal_for
        from aigw.stores.base import ApiKey, Grant, Project, Tenant

        key = ApiKey(id="k1", tenant_id="t1", project_id="p1", key_hash="h", prefix="sk-aigw-abcd", metadata=metadata)
        ctx.principal = principal_for(Grant(key, Project(id="p1", tenant_id="t1", name="p"), Tenant(id="t1", name="t")))
    ctx.state[ESTIMATE] = 50
    return stage.worst_case_nano(ctx)


def _nano(out: int) -> int:
    return (50 * 1 + out * 10) * 1000


@pytest.mark.parametrize(("effort", "out"), [("high", 16384 + 4096), ("medium", 4096 + 4096), ("low", 1024 + 4096),
                                             ("minimal", 4096), ("none", 4096)])
def test_a_reasoning_call_without_max_tokens_reserves_the_max_tokens_a_thinking_deployment_is_sent(
        effort: str, out: int) -> None:
    # the Anthropic adapter sends the thinking budget on top of its 4,096: reserved at 4,096 alone, concurrent
    # reasoning calls to a key with a small budget were admitted together and settled far above it
    stage = _stage(CLAUDE)
    assert _thinking_worst(stage, reasoning_effort=effort) == _nano(out)
    assert _thinking_worst(stage) == _nano(4096)  # without an effort: as before
    assert _thinking_worst(stage, reasoning_effort=effort, max_tokens=3000) == _nano(3000)  # the client's max


def test_deployments_that_do_not_think_reserve_a_reasoning_call_as_before() -> None:
    old = CLAUDE.model_copy(update={"model": "claude-3-5-haiku-20241022"})  # refused: reasoning_effort
    for deployment in (GPT.model_copy(update={"name": "claude"}), old):
        assert _thinking_worst(_stage(deployment), reasoning_effort="high") == _nano(4096)


def test_an_output_cap_bounds_the_thinking_reservation_and_a_larger_one_wins() -> None:
    capped = CLAUDE.model_copy(update={"max_output_tokens": 8192})  # the upstream writes no more (a 400 above)
    assert _thinking_worst(_stage(capped), reasoning_effort="high") == _nano(8192)
    roomy = CLAUDE.model_copy(update={"max_output_tokens": 64_000})  # a call without max_tokens reserves the cap
    assert _thinking_worst(_stage(roomy), reasoning_effort="high") == _nano(64_000)
    # a deployment without a cap beside it: the cap no longer bounds the thinking deployment's max_tokens
    assert _thinking_worst(_stage(capped, GPT.model_copy(update={"name": "claude", "id": "claude#1"})),
                           reasoning_effort="high") == _nano(16384 + 4096)


def test_a_model_that_may_reach_a_thinking_deployment_reserves_its_max_tokens() -> None:
    from aigw.config.models import ModelRouting
    from aigw.routing.router import Router, Target
    from tests.unit.routing.fakes import Scripted

    def stage_for(routing: dict[str, ModelRouting], guardrails: dict[str, Any] | None = None) -> budget.BudgetStage:
        svc = _services()
        svc.prices = PriceBook([GPT, CLAUDE])
        router = Router([Target(d, Scripted(d.model)) for d in (GPT, CLAUDE)], routing=routing)
        deps = StageDeps(config=GatewayConfig(models=[GPT, CLAUDE], guardrails=guardrails), router=router)
        deps.services[SERVICE] = svc
        built = budget.build(deps)
        assert isinstance(built, budget.BudgetStage)
        return built

    high = _nano(16384 + 4096)
    assert _thinking_worst(stage_for({}), "gpt", reasoning_effort="high") == _nano(4096)
    # gpt's outage sends its calls down the chain to claude, which thinks
    falls_back = stage_for({"gpt": ModelRouting(fallbacks=["claude"])})
    assert _thinking_worst(falls_back, "gpt", reasoning_effort="high") == high
    # a configured rule, or a key's own, may route gpt's call to claude after the reservation
    route = [{"name": "deep", "match": {"model": "gpt", "keywords": ["prove"]}, "route": "claude"}]
    assert _thinking_worst(stage_for({}, {"rules": route}), "gpt", reasoning_effort="high") == high
    ruled = stage_for({}, {"rules": [{"name": "ping", "match": {"keywords": ["ping"]}, "respond": "pong"}]})
    assert _thinking_worst(ruled, "gpt", {"team": "x"}, reasoning_effort="high") == _nano(4096)
    assert _thinking_worst(ruled, "gpt", {"guardrails": {"rules": route}}, reasoning_effort="high") == high


async def test_reasoning_calls_in_flight_together_cannot_overrun_a_small_budget() -> None:
    stage = _stage(CLAUDE)
    full = _nano(16384 + 4096)  # a call that thinks and answers to its max_tokens
    limits = Limits(budget_usd=2.5 * full / NANO, budget_period="total")
    ctxs = []
    for _ in range(6):
        ctx = _ctx(limits, body={"model": "claude", "messages": [{"role": "user", "content": "think"}],
                                 "reasoning_effort": "high"})
        ctx.model, ctx.state[ESTIMATE] = "claude", 50
        ctxs.append(ctx)
    outcomes = await asyncio.gather(*(stage.on_request(c) for c in ctxs), return_exceptions=True)
    admitted = [c for c, o in zip(ctxs, outcomes, strict=True) if o is None]
    assert all(isinstance(o, errors.BudgetExceeded) and o.code == "budget_exceeded" for o in outcomes if o is not None)
    assert len(admitted) == 2  # reserved at 4,096 output tokens, all six were admitted
    for ctx in admitted:
        ctx.served_by, ctx.usage = CLAUDE, {"prompt_tokens": 50, "completion_tokens": 16384 + 4096}
        await stage.on_finish(ctx)
    assert await stage.svc.budgets.spent(stage.plan(ctxs[0])[0][0], 0.0) == 2 * full <= limits.budget_usd * NANO  # type: ignore[operator]


OPUS = Deployment(name="opus", provider="anthropic", model="claude-opus-4-6", id="opus#0")  # the table's prices
AUDIO = Deployment(name="voice", provider="openai", model="gpt-4o-audio-preview", id="voice#0")


def _priced_ctx(model: str, **extra: Any) -> RequestContext:
    ctx = _ctx(Limits(), body={"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 100,
                               **extra})
    ctx.model = model
    ctx.state[ESTIMATE] = 10
    return ctx


def test_a_fast_mode_call_reserves_fast_mode_rates() -> None:
    """Claude's fast mode (``speed: "fast"``, kept for the Anthropic upstream) is billed at 6x on Opus 4.6: reserved
    at standard rates, concurrent fast calls each settled at up to six times their reservation."""
    stage = _stage(OPUS)
    standard = stage.worst_case_nano(_priced_ctx("opus"))
    fast = stage.worst_case_nano(_priced_ctx("opus", _anthropic={"speed": "fast"}))
    assert fast == 6 * standard


def test_a_model_billed_more_for_us_only_inference_reserves_that_rate() -> None:
    """US-only inference (the request's ``inference_geo`` or the workspace's default, which the gateway cannot see)
    is billed at 1.1x on Claude 4.6 and later: the reservation covers it."""
    stage = _stage(OPUS)
    assert stage.worst_case_nano(_priced_ctx("opus")) == round(1.1 * (10 * 5_000 + 100 * 25_000))


def test_an_audio_model_reserves_its_audio_rates() -> None:
    """An audio model bills audio tokens at their own rates (gpt-4o-audio-preview: 16x the text input, 8x the
    output): reserved at the text rates, an answer in audio settled at up to 8x its reservation."""
    stage = _stage(AUDIO)
    assert stage.worst_case_nano(_priced_ctx("voice")) == 10 * 40_000 + 100 * 80_000
