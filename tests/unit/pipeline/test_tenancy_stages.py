"""The limits, budget and accounting stages on their own: store outages, local counts, cache savings."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigw import errors
from aigw.accounting.ledger import Ledger
from aigw.accounting.pricing import PriceBook
from aigw.accounting.tokens import TokenCounter
from aigw.config.models import Deployment, GatewayConfig, Prices
from aigw.config.tenancy import LedgerConfig, TenancyConfig
from aigw.http.key_lookup import principal_for
from aigw.pipeline.context import RequestContext
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.route import RouteTerminal
from aigw.pipeline.stages import accounting, budget, limits
from aigw.pipeline.tenancy import SERVICE, TenancyServices, key_scopes, measure
from aigw.routing.attempts import Served
from aigw.stores.base import ApiKey, Grant, Limits, Project, Tenant
from aigw.stores.failures import StoreSkipped
from aigw.stores.memory import MemoryGate, MemoryRateLimiter
from aigw.stores.memory_budgets import MemoryBudgets
from aigw.stores.redis.client import make_redis
from aigw.stores.redis.counters import RedisCounters
from aigw.types import JSON
from tests.support.clock import ManualClock

MOCK = Deployment(name="mock", provider="mock", id="mock#0",
                  prices=Prices(input_per_mtok=1000, output_per_mtok=2000))


class Sink:
    def __init__(self) -> None:
        self.rows: list[Any] = []

    async def write(self, records: list[Any]) -> int:
        self.rows += records
        return len(records)


def _services(gate: Any = None, **cfg: Any) -> TenancyServices:
    limiter, budgets = MemoryRateLimiter(), MemoryBudgets()
    return TenancyServices(config=TenancyConfig(**cfg), limiter=gate or limiter, budgets=gate or budgets,
                           gate=gate or MemoryGate(limiter, budgets), prices=PriceBook([MOCK]),
                           tokens=TokenCounter(), ledger=Ledger(Sink(), LedgerConfig()))


def _deps(svc: TenancyServices) -> StageDeps:
    deps = StageDeps(config=GatewayConfig(models=[MOCK]))
    deps.services[SERVICE] = svc
    return deps


def _ctx(key_limits: Limits = Limits(), body: JSON | None = None, **kw: Any) -> RequestContext:
    grant = Grant(ApiKey(id="k1", tenant_id="t1", project_id="p1", key_hash="h", prefix="sk-aigw-abcd",
                         limits=key_limits), Project(id="p1", tenant_id="t1", name="p"), Tenant(id="t1", name="t"))
    body = body or {"model": "mock", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 10}
    return RequestContext(request_id="req_1", api="openai", endpoint="chat", body=body, model="mock",
                          principal=principal_for(grant), **kw)


class Broken:
    """A store whose every call fails, like Redis behind a dead socket."""

    def __getattr__(self, name: str) -> Any:
        async def fail(*args: Any, **kwargs: Any) -> Any:
            raise ConnectionError("store is down")
        return fail


async def test_limits_fail_open_by_default_and_closed_when_configured() -> None:
    ctx = _ctx(Limits(rpm=1))
    open_stage = limits.build(_deps(_services(gate=Broken())))
    assert open_stage is not None and await open_stage.on_request(ctx) is None
    closed = limits.build(_deps(_services(gate=Broken(), limits_on_store_error="closed")))
    assert closed is not None
    with pytest.raises(errors.Unavailable) as refused:
        await closed.on_request(_ctx(Limits(rpm=1)))
    assert refused.value.code == "store_unavailable"  # told apart from an upstream that is unavailable


async def test_budgets_fail_closed_by_default() -> None:
    stage = budget.build(_deps(_services(gate=Broken())))
    assert stage is not None
    with pytest.raises(errors.Unavailable) as refused:
        await stage.on_request(_ctx(Limits(budget_usd=1.0)))
    assert refused.value.code == "store_unavailable"
    lenient = budget.build(_deps(_services(gate=Broken(), budget_on_store_error="open")))
    assert lenient is not None and await lenient.on_request(_ctx(Limits(budget_usd=1.0))) is None


async def test_a_limits_or_budget_store_outage_counts_in_the_store_errors_metric(
        caplog: pytest.LogCaptureFixture) -> None:
    from aigw.observability.metrics import Metrics
    svc = _services(gate=Broken(), budget_on_store_error="open")
    svc.metrics = Metrics(models=["mock"])
    stages = [limits.build(_deps(svc)), budget.build(_deps(svc))]
    with caplog.at_level("WARNING", logger="aigw.tenancy"):
        for _ in range(3):
            ctx = _ctx(Limits(rpm=5, budget_usd=1.0))
            for stage in stages:
                assert stage is not None and await stage.on_request(ctx) is None
            for stage in reversed(stages):
                assert stage is not None
                await stage.on_finish(ctx)
    text = svc.metrics.render().decode()
    assert 'aigw_store_errors_total{operation="enter",store="limits"} 3.0' in text
    assert 'aigw_store_errors_total{operation="leave",store="limits"} 3.0' in text
    # an outage fails every request: the log says so once per store, not once per request
    warned = [r.getMessage().split()[0] for r in caplog.records if "store unavailable" in r.getMessage()]
    assert sorted(warned) == sorted(set(warned))


class Skipping:
    """A gate in its skip window: every step raises ``StoreSkipped`` at once (and is recorded)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    async def enter(self, *args: Any) -> Any:
        self.calls.append("enter")
        raise StoreSkipped("Redis failed moments ago")

    async def leave(self, *args: Any) -> Any:
        self.calls.append("leave")
        raise StoreSkipped("Redis failed moments ago")


@pytest.mark.parametrize("policy", ["open", "closed"])
async def test_a_skipped_store_step_applies_the_policies_and_leaves_nothing_to_settle(policy: str) -> None:
    from aigw.observability.metrics import Metrics
    gate = Skipping()
    svc = _services(gate=gate, budget_on_store_error=policy)
    svc.metrics = Metrics(models=["mock"])
    stages = [limits.build(_deps(svc)), budget.build(_deps(svc))]
    for key_limits in (Limits(rpm=5, budget_usd=1.0), Limits(budget_usd=1.0)):  # joint step; budget's own
        ctx = _ctx(key_limits)
        try:
            for stage in stages:
                assert stage is not None and await stage.on_request(ctx) is None
            assert policy == "open"
        except errors.Unavailable:
            assert policy == "closed"
        for stage in reversed(stages):
            assert stage is not None
            await stage.on_finish(ctx)
    assert gate.calls == ["enter", "enter"]  # one step each, never a second reservation nor a settle
    text = svc.metrics.render().decode()
    assert 'aigw_store_errors_total{operation="enter_skipped",store="limits"} 1.0' in text
    assert 'aigw_store_errors_total{operation="enter_skipped",store="budget"} 1.0' in text


def test_a_second_store_outage_is_logged_though_the_count_runs_on(caplog: pytest.LogCaptureFixture) -> None:
    now = [0.0]
    svc = _services()
    svc.monotonic = lambda: now[0]
    with caplog.at_level("WARNING", logger="aigw.tenancy"):
        for _ in range(5):  # the first outage: logged once
            svc.store_error("limits", ConnectionError("down"))
            now[0] += 0.01
        now[0] += 3600.0  # an hour later, a second short one
        for _ in range(5):
            svc.store_error("limits", ConnectionError("down again"))
            now[0] += 0.01
    warned = [r.getMessage() for r in caplog.records if "store unavailable" in r.getMessage()]
    assert len(warned) == 2 and "down again" in warned[1]


async def test_a_real_redis_outage_follows_the_policy() -> None:
    dead = make_redis("redis://127.0.0.1:1/0", socket_timeout_s=0.1)  # nothing listens on port 1
    try:
        svc = _services(gate=RedisCounters(dead, "x:"))
        stage = limits.build(_deps(svc))
        assert stage is not None and await stage.on_request(_ctx(Limits(rpm=5))) is None
        assert svc.counters == {"limits": 1}
        guard = budget.build(_deps(svc))
        assert guard is not None
        with pytest.raises(errors.Unavailable):
            await guard.on_request(_ctx(Limits(budget_usd=5.0)))
    finally:
        await dead.aclose()


async def test_the_reservation_is_the_worst_case_and_settles_to_the_real_cost() -> None:
    svc = _services()
    stage = budget.build(_deps(svc))
    assert isinstance(stage, budget.BudgetStage)
    ctx = _ctx(Limits(budget_usd=1.0, budget_period="total"))
    worst = stage.worst_case_nano(ctx)
    assert worst >= 10 * 2000 * 1000  # 10 completion tokens at $2000 per million, plus the prompt
    await stage.on_request(ctx)
    scope = key_scopes(ctx, "budget")[0]
    assert await svc.budgets.spent(scope, 0) == worst
    ctx.served_by = MOCK
    ctx.usage = {"prompt_tokens": 4, "completion_tokens": 3}
    await stage.on_finish(ctx)
    assert await svc.budgets.spent(scope, 0) == 4 * 1_000_000 + 3 * 2_000_000


async def _cut_stream(svc: TenancyServices, deltas: list[JSON], cut: errors.GatewayError) -> RequestContext:
    """A stream through the accounting stage that ``cut`` ends after ``deltas``; its context, finished."""
    stage = accounting.build(_deps(svc))
    assert stage is not None
    ctx = _ctx(stream=True)

    async def chunks() -> AsyncIterator[JSON]:
        for delta in deltas:
            yield {"choices": [{"index": 0, "delta": delta}]}
        raise cut

    ctx.served_by = MOCK
    with pytest.raises(errors.GatewayError) as err:
        async for _ in stage.on_stream(ctx, chunks()):
            pass
    ctx.error = err.value
    return ctx


async def test_a_cut_stream_without_usage_is_charged_by_a_local_count() -> None:
    svc = _services()
    words = ("Hello", " there", " friend")
    ctx = await _cut_stream(svc, [{"content": w} for w in words], errors.UpstreamError("connection reset"))
    m = measure(ctx, svc)
    assert m.source == "local" and m.tokens.completion == 3 and m.tokens.prompt > 0
    assert m.cost_nano == m.tokens.prompt * 1_000_000 + 3 * 2_000_000
    row = accounting.AccountingStage(svc, svc_clock()).record_for(ctx)
    assert (row.status, row.error_kind, row.usage_source, row.stream) == (502, "upstream_error", "local", True)


async def test_a_cut_stream_whose_start_said_its_input_is_charged_that_input_not_a_fresh_prompt() -> None:
    """Anthropic's message_start tells the input split up front (cache reads and writes): a stream cut afterwards was
    charged its whole prompt, counted locally, as fresh input (a cached prompt up to 10x its price)."""
    from aigw.schema.anthropic import PRIVATE_KEY, START_USAGE

    svc = _services()
    start = {"prompt_tokens": 5000, "completion_tokens": 1,
             "prompt_tokens_details": {"cached_tokens": 4000, "cache_write_tokens": 900}}
    stage = accounting.build(_deps(svc))
    assert stage is not None
    ctx = _ctx(stream=True)

    async def chunks() -> AsyncIterator[JSON]:
        yield {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}],
               PRIVATE_KEY: {START_USAGE: start}}
        for w in ("Hello", " there", " friend"):
            yield {"choices": [{"index": 0, "delta": {"content": w}}]}
        raise errors.UpstreamError("connection reset")

    ctx.served_by = MOCK
    with pytest.raises(errors.GatewayError) as err:
        async for _ in stage.on_stream(ctx, chunks()):
            pass
    ctx.error = err.value
    t = measure(ctx, svc).tokens
    assert (t.fresh_input, t.cached_input, t.cache_write, t.output) == (100, 4000, 900, 3)


async def test_a_cut_stream_that_was_refusing_is_charged_for_the_refusal() -> None:
    # a model's refusal streams as ``delta.refusal`` and is billed as output: a cut stream counted none of it
    svc = _services()
    words = ("I'm sorry", ", but I", " can't help", " with that.")
    ctx = await _cut_stream(svc, [{"role": "assistant", "refusal": ""}] + [{"refusal": w} for w in words],
                            errors.UpstreamError("connection reset"))
    m = measure(ctx, svc)
    assert m.source == "local" and m.tokens.completion == svc.tokens.count_text("".join(words)) > 0


async def test_a_cut_stream_of_a_legacy_function_call_is_charged_for_its_arguments() -> None:
    # the functions API streams ``delta.function_call``: a cut stream counted none of its arguments
    svc = _services()
    pieces = ('{"city"', ': "Par', 'is"}')
    deltas: list[JSON] = [{"role": "assistant", "function_call": {"name": "weather", "arguments": ""}}]
    ctx = await _cut_stream(svc, deltas + [{"function_call": {"arguments": p}} for p in pieces],
                            errors.UpstreamError("connection reset"))
    m = measure(ctx, svc)
    assert m.source == "local" and m.tokens.completion == svc.tokens.count_text("".join(pieces)) > 0


async def test_a_cut_stream_of_reasoning_named_reasoning_is_charged_for_it() -> None:
    # OpenRouter, Groq and newer vLLM stream their thinking as ``delta.reasoning`` (billed as output)
    svc = _services()
    pieces = ("Six", " times", " seven", " is forty-two.")
    ctx = await _cut_stream(svc, [{"reasoning": p} for p in pieces], errors.UpstreamError("connection reset"))
    m = measure(ctx, svc)
    assert m.tokens.reasoning == svc.tokens.count_text("".join(pieces)) > 0


async def test_a_cache_hit_costs_nothing_and_reports_the_saving() -> None:
    svc = _services()
    ctx = _ctx(handled_by="cache", usage={"prompt_tokens": 10, "completion_tokens": 10})
    m = measure(ctx, svc)
    assert m.cost_nano == 0 and m.cost_saved_nano == 10 * 1_000_000 + 10 * 2_000_000


async def test_a_refusal_before_the_upstream_costs_nothing() -> None:
    svc = _services()
    ctx = _ctx(error=errors.RateLimited("slow down"))
    assert measure(ctx, svc).cost_nano == 0 and measure(ctx, svc).source == "none"


def svc_clock() -> Any:
    from aigw.types import SystemClock

    return SystemClock()


async def test_rate_limits_and_budget_share_one_store_call_each_way() -> None:
    calls: list[str] = []

    class Counting(MemoryGate):
        async def enter(self, *a: Any, **k: Any) -> Any:
            calls.append("enter")
            return await super().enter(*a, **k)

        async def leave(self, *a: Any, **k: Any) -> Any:
            calls.append("leave")
            return await super().leave(*a, **k)

    svc = _services(gate=Counting(MemoryRateLimiter(), MemoryBudgets()))
    deps = _deps(svc)
    gate_stage, guard = limits.build(deps), budget.build(deps)
    assert gate_stage is not None and guard is not None
    ctx = _ctx(Limits(rpm=10, budget_usd=1.0, budget_period="total"))
    ctx.served_by, ctx.usage = MOCK, {"prompt_tokens": 4, "completion_tokens": 3}
    for stage in (gate_stage, guard):
        await stage.on_request(ctx)
    for stage in (gate_stage, guard):
        await stage.on_finish(ctx)
    assert calls == ["enter", "leave"]
    scope = key_scopes(ctx, "budget")[0]
    assert await svc.gate.budgets.spent(scope, 0) == 4 * 1_000_000 + 3 * 2_000_000  # type: ignore[attr-defined]
    poor = _ctx(Limits(rpm=10, budget_usd=0.000001, budget_period="total"))
    await gate_stage.on_request(poor)  # the rate is taken, the budget refusal is left to the budget stage
    with pytest.raises(errors.BudgetExceeded):
        await guard.on_request(poor)


async def test_the_ledger_row_is_the_records_row() -> None:
    from aigw.stores.sql_ledger import as_row

    svc = _services()
    ctx = _ctx(handled_by="cache", usage={"prompt_tokens": 10, "completion_tokens": 10})
    stage = accounting.AccountingStage(svc, svc_clock())
    row, rec = stage.row_for(ctx), stage.record_for(ctx)
    same = as_row(rec)
    assert len(row) == len(same)
    assert row[1] == same[1] and row[5:21] == same[5:21] and row[24:] == same[24:]  # not the id, not the clock
    assert rec.cache_hit is True and rec.cost_nano == 0 and rec.cost_saved_nano > 0


@pytest.mark.parametrize("rpm", [100, None], ids=["with rate limits", "budget alone"])
async def test_calls_across_midnight_settle_in_the_day_they_reserved_in(rpm: int | None) -> None:
    midnight = 1_800_000_000.0 - 1_800_000_000.0 % 86400
    clock = ManualClock(midnight - 1)
    limiter, budgets = MemoryRateLimiter(clock), MemoryBudgets()
    svc = TenancyServices(config=TenancyConfig(), limiter=limiter, budgets=budgets,
                          gate=MemoryGate(limiter, budgets), prices=PriceBook([MOCK]), tokens=TokenCounter())
    deps = StageDeps(config=GatewayConfig(models=[MOCK]), clock=clock)
    deps.services[SERVICE] = svc
    stages = [s for s in (limits.build(deps), budget.build(deps)) if s is not None]
    key = Limits(rpm=rpm, budget_usd=1.0, budget_period="daily")
    calls = [_ctx(key) for _ in range(10)]
    for ctx in calls:
        for stage in stages:
            await stage.on_request(ctx)
    clock.t = midnight + 1
    for ctx in calls:
        ctx.served_by, ctx.usage = MOCK, {"prompt_tokens": 1, "completion_tokens": 0}  # $0.001 each
        for stage in stages:
            await stage.on_finish(ctx)
    scope = key_scopes(calls[0], "budget")[0]
    assert await budgets.spent(scope, midnight - 1) == 10 * 1_000_000
    assert await budgets.spent(scope, midnight + 1) == 0  # not -$0.x, which would admit more than $1


class RanThenTimedOut:
    """A gate whose steps run in the store but whose answers are lost (a Redis reply after the timeout)."""

    def __init__(self, gate: MemoryGate, fail: str) -> None:
        self.gate, self.fail = gate, fail

    async def enter(self, *args: Any) -> Any:
        answer = await self.gate.enter(*args)
        if self.fail == "enter":
            raise TimeoutError("no reply in time")
        return answer

    async def leave(self, *args: Any) -> Any:
        answer = await self.gate.leave(*args)
        if self.fail == "leave":
            raise TimeoutError("no reply in time")
        return answer


@pytest.mark.parametrize("rpm", [100, None], ids=["with rate limits", "budget alone"])
@pytest.mark.parametrize("policy", ["open", "closed"])
@pytest.mark.parametrize("fail", ["enter", "leave"])
async def test_a_step_whose_answer_was_lost_is_never_repeated(fail: str, policy: str, rpm: int | None) -> None:
    limiter, budgets = MemoryRateLimiter(), MemoryBudgets()
    svc = _services(gate=RanThenTimedOut(MemoryGate(limiter, budgets), fail), budget_on_store_error=policy)
    svc.budgets = budgets
    stages = [s for s in (limits.build(_deps(svc)), budget.build(_deps(svc))) if s is not None]
    ctx = _ctx(Limits(rpm=rpm, budget_usd=1.0, budget_period="total"))
    refused = False
    try:
        for stage in stages:
            await stage.on_request(ctx)
    except errors.Unavailable:  # the budget could not be checked (fail closed): no upstream call
        refused = True
    if not refused:
        ctx.served_by, ctx.usage = MOCK, {"prompt_tokens": 1, "completion_tokens": 0}
    for stage in stages:
        await stage.on_finish(ctx)
    assert refused == (fail == "enter" and policy == "closed")
    # the lost enter reserved all the same: no second reservation, and the call's settle found its lease and
    # replaced it by the real cost ($0 for a refused call); the lost leave settled once, not twice
    assert await budgets.spent(key_scopes(ctx, "budget")[0], 0) == (0 if refused else 1_000_000)


class LostReplies:
    """A gate whose enter runs in the store but whose answers never come back, and no leave either (a
    replica killed with the call in flight)."""

    def __init__(self, gate: MemoryGate) -> None:
        self.gate = gate

    async def enter(self, *args: Any) -> Any:
        await self.gate.enter(*args)
        raise TimeoutError("no reply in time")

    async def leave(self, *args: Any) -> Any:
        raise TimeoutError("no reply in time")


async def test_a_reservation_never_settled_stops_counting_after_the_lease_time() -> None:
    clock = ManualClock(1_800_000_000.0)
    limiter, budgets = MemoryRateLimiter(clock, 660), MemoryBudgets(660)
    svc = _services(gate=LostReplies(MemoryGate(limiter, budgets)), budget_on_store_error="open")
    svc.budgets = budgets
    deps = StageDeps(config=GatewayConfig(models=[MOCK]), clock=clock)
    deps.services[SERVICE] = svc
    stages = [s for s in (limits.build(deps), budget.build(deps)) if s is not None]
    ctx = _ctx(Limits(rpm=100, budget_usd=1.0, budget_period="total"))
    for stage in stages:
        await stage.on_request(ctx)
    for stage in stages:
        await stage.on_finish(ctx)
    scope = key_scopes(ctx, "budget")[0]
    worst = budget.BudgetStage(svc, clock, {}).worst_case_nano(ctx)
    assert await budgets.spent(scope, clock.t) == worst  # errs on the side of refusing, for a while
    clock.t += 661
    assert await budgets.spent(scope, clock.t) == 0


class NoUsageRouter:
    """An upstream that answers without ``usage`` (some OpenAI-compatible servers do), or with one it cannot be
    billed by (null counts, a completion count alone: some servers and proxies)."""

    def __init__(self, usage: JSON | None = None) -> None:
        self.usage = usage

    async def complete(self, req: Any) -> tuple[JSON, Any]:
        body = {"id": "c1", "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop", "message": {
            "role": "assistant", "content": "Hello there friend", "reasoning_content": "They greet me"}}]}
        if self.usage is not None:
            body["usage"] = self.usage
        return body, Served(deployment=MOCK, model="mock", attempts=1)


@pytest.mark.parametrize("usage", [None, {"prompt_tokens": None, "completion_tokens": None, "total_tokens": None},
                                   {"completion_tokens": 6}], ids=["none", "nulls", "completion-only"])
async def test_an_answer_without_usage_is_charged_for_its_completion_by_a_local_count(usage: JSON | None) -> None:
    svc = _services()
    ctx = _ctx()
    await RouteTerminal(NoUsageRouter(usage)).handle(ctx)  # type: ignore[arg-type]
    m = measure(ctx, svc)
    assert m.source == "local" and m.tokens.output == 3 and m.tokens.reasoning == 3 and m.tokens.prompt > 0
    assert m.cost_nano == m.tokens.prompt * 1_000_000 + 6 * 2_000_000


async def test_an_answer_without_usage_that_a_guardrail_blocked_is_still_charged() -> None:
    # the upstream answered (and bills) though the client gets a 400 from the output checks
    svc = _services()
    ctx = _ctx()
    await RouteTerminal(NoUsageRouter()).handle(ctx)  # type: ignore[arg-type]
    ctx.error = errors.GuardrailBlocked("withheld", code="output_blocked")
    m = measure(ctx, svc)
    assert m.source == "local" and m.tokens.output == 3 and m.tokens.prompt > 0
    assert m.cost_nano == m.tokens.prompt * 1_000_000 + 6 * 2_000_000


async def test_a_stream_cut_while_thinking_is_charged_for_the_prompt_and_the_thinking() -> None:
    svc = _services()
    gone = errors.GatewayError("client disconnected", code="client_disconnected")
    ctx = await _cut_stream(svc, [{"reasoning_content": w} for w in ("Let", " me", " think")], gone)
    m = measure(ctx, svc)
    assert m.source == "local" and m.tokens.reasoning == 3 and m.tokens.output == 0 and m.tokens.prompt > 0


class FailingRouter:
    """Two calls reached upstreams, then the router gave up (a 503 from the last one)."""

    async def complete(self, req: Any) -> Any:
        req.served = Served(model="mock", attempts=2, retries=1, upstream_s=0.25)
        raise errors.Unavailable("upstream down")


async def test_a_failed_route_still_records_its_attempts_and_its_time_upstream() -> None:
    # the limits stage reads the attempts (a call that reached an upstream keeps its rpm), and the ledger's
    # upstream_ms / overhead_ms read the time: a failed call's overhead was its whole latency before
    ctx = _ctx()
    with pytest.raises(errors.Unavailable):
        await RouteTerminal(FailingRouter()).handle(ctx)  # type: ignore[arg-type]
    assert (ctx.attempts, ctx.retries, ctx.upstream_s) == (2, 1, 0.25)
    assert ctx.served_by is None


async def test_an_image_answered_without_usage_by_gpt_4o_mini_is_billed_at_its_tile_figures() -> None:
    # gpt-4o-mini bills a 1024x1024 image 2,833 + 4 x 5,667 tokens; the common formula's 765 billed ~3 % of it
    from aigw.pipeline.context import ANSWER_BODY
    from tests.support.media import data_url, image_part, png

    content = [{"type": "text", "text": "What is this?"}, image_part(data_url(png(1024, 1024)))]
    prompts: dict[str, int] = {}
    for upstream in ("gpt-4o-mini-2024-07-18", "gpt-4o"):
        ctx = _ctx(body={"model": "mock", "messages": [{"role": "user", "content": content}], "max_tokens": 10})
        ctx.served_by = Deployment(name="mock", provider="mock", model=upstream, id=f"{upstream}#0")
        ctx.state[ANSWER_BODY] = {"choices": [{"message": {"role": "assistant", "content": "a cat"}}]}
        prompts[upstream] = measure(ctx, _services()).tokens.prompt
    assert prompts["gpt-4o-mini-2024-07-18"] - prompts["gpt-4o"] == (2_833 + 4 * 5_667) - 765


async def test_a_stream_the_client_left_before_its_first_chunk_was_passed_on_bills_its_prompt() -> None:
    # the router hands a stream on once the upstream's first chunk came: the upstream took the call and bills it,
    # though the client left before the gateway passed that chunk on (nothing went through the stages)
    svc = _services()
    stage = accounting.build(_deps(svc))
    assert stage is not None
    ctx = _ctx(stream=True)

    async def chunks() -> AsyncIterator[JSON]:
        yield {"choices": [{"index": 0, "delta": {"content": "Hello"}}]}

    ctx.served_by = MOCK
    await stage.on_stream(ctx, chunks()).aclose()  # never iterated
    ctx.error = errors.GatewayError("client disconnected", code="client_disconnected")
    m = measure(ctx, svc)
    assert m.source == "local" and m.tokens.prompt > 0 and m.tokens.output == 0
    assert m.cost_nano == m.tokens.prompt * 1_000_000
