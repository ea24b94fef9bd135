"""The budget stage's alert log line names the tenant (and the request) whose key, project or tenant crossed a
threshold: a key or project id alone does not say whose budget it is."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from aigw.accounting.pricing import PriceBook
from aigw.accounting.tokens import TokenCounter
from aigw.config.models import Deployment, GatewayConfig, LongContextPrices, Prices, TierPrices
from aigw.observability.metrics import Metrics
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stages import budget
from aigw.pipeline.tenancy import ESTIMATE, SERVICE, measure
from aigw.stores.base import Limits
from tests.unit.pipeline.test_tenancy_stages import MOCK, _ctx, _deps, _services


async def test_a_budget_alert_log_line_carries_the_tenant_and_the_request(caplog: pytest.LogCaptureFixture) -> None:
    stage = budget.build(_deps(_services()))
    assert stage is not None
    ctx = _ctx(Limits(budget_usd=0.05, budget_period="total"))  # key k1 of project p1, tenant t1
    await stage.on_request(ctx)
    ctx.served_by, ctx.usage = MOCK, {"prompt_tokens": 10, "completion_tokens": 10}  # $0.03: over 50 %
    with caplog.at_level(logging.WARNING, logger="aigw.budget"):
        await stage.on_finish(ctx)
    alerts = [r.getMessage() for r in caplog.records if r.getMessage().startswith("budget alert")]
    assert alerts, caplog.text
    assert all("t1" in line and ctx.request_id in line for line in alerts), alerts


@pytest.mark.parametrize("fields", [{"max_tokens": 2000, "max_completion_tokens": 10},
                                    {"max_tokens": 10, "max_completion_tokens": 2000}])
def test_with_both_max_token_fields_the_worst_case_takes_the_larger(fields: dict[str, int]) -> None:
    # an openai_compatible deployment with quirks {max_tokens_field: max_tokens} sends max_tokens only, so a
    # reservation of max_completion_tokens' 10 tokens let a 2000-token answer run against the budget
    stage = budget.build(_deps(_services()))
    assert isinstance(stage, budget.BudgetStage)
    body = {"model": "mock", "messages": [{"role": "user", "content": "hello"}], **fields}
    one = {"model": "mock", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 2000}
    assert stage.worst_case_nano(_ctx(body=body)) == stage.worst_case_nano(_ctx(body=one))


@pytest.mark.parametrize(("fields", "answers"), [
    ({"prompt": ["a", "b", "c", "d"]}, 4),  # one completion per prompt of the list
    ({"prompt": [[1, 2], [3, 4], [5, 6]], "n": 2}, 6),  # token arrays too, n for each
    ({"prompt": "a", "best_of": 5}, 5),  # best_of answers are generated (and billed), n returned
    ({"prompt": ["a", "b"], "n": 2, "best_of": 3}, 6),
    ({"prompt": [1, 2, 3]}, 1),  # one token array is one prompt
])
def test_a_legacy_completion_reserves_every_answer_it_may_generate(fields: dict[str, object], answers: int) -> None:
    # the worst case counted max_tokens x n: ten prompts at max_tokens 100 reserved 100 output tokens, and
    # a call that honoured max_tokens could overrun the budget tenfold
    stage = budget.build(_deps(_services()))
    assert isinstance(stage, budget.BudgetStage)

    def worst(body: dict[str, object]) -> int:
        ctx = _ctx(body={"model": "mock", "max_tokens": 100, **body})
        ctx.endpoint = "completions"
        ctx.state[ESTIMATE] = 0  # the prompt aside: only the output part is compared
        return stage.worst_case_nano(ctx)

    assert worst(fields) == answers * worst({"prompt": "a"})


@pytest.mark.parametrize(("endpoint", "advice"), [("chat", "lower max_tokens"), ("embeddings", "fewer or shorter")])
async def test_a_budget_refusal_says_how_to_fit_in_the_endpoints_terms(endpoint: str, advice: str) -> None:
    from aigw import errors

    stage = budget.build(_deps(_services()))
    assert stage is not None
    body = {"model": "mock", "input": "x" * 4000} if endpoint == "embeddings" else None
    ctx = _ctx(Limits(budget_usd=0.000001, budget_period="total"), body=body)
    ctx.endpoint = endpoint  # type: ignore[assignment]
    with pytest.raises(errors.BudgetExceeded) as refused:
        await stage.on_request(ctx)
    assert advice in str(refused.value) and ("max_tokens" in str(refused.value)) == (endpoint == "chat")


async def test_each_budget_alert_counts_in_the_events_metric() -> None:
    # aigw_events_total ("notable events by name (alerts, ...)") stayed empty: an alert without a webhook was a
    # log line only, with nothing to graph or page on
    svc = _services()
    metrics = svc.metrics = Metrics()  # as app.py sets it
    stage = budget.build(_deps(svc))
    assert stage is not None
    ctx = _ctx(Limits(budget_usd=0.05, budget_period="total"))
    await stage.on_request(ctx)
    ctx.served_by, ctx.usage = MOCK, {"prompt_tokens": 10, "completion_tokens": 10}  # $0.03: over 50 %
    await stage.on_finish(ctx)
    assert metrics.registry.get_sample_value("aigw_events_total", {"event": "budget_alert"}) == 1


LONG = Deployment(name="mock", provider="mock", id="mock#0", prices=Prices(
    input_per_mtok=1000, output_per_mtok=2000, tiers={"priority": TierPrices(scale=2)},
    long_context=LongContextPrices(above_input_tokens=100, input_per_mtok=2000, output_per_mtok=3000)))


def _long_stage() -> budget.BudgetStage:
    svc = _services()
    svc.prices = PriceBook([LONG])
    deps = StageDeps(config=GatewayConfig(models=[LONG]))
    deps.services[SERVICE] = svc
    stage = budget.build(deps)
    assert isinstance(stage, budget.BudgetStage)
    return stage


def _worst(stage: budget.BudgetStage, prompt: int, **body: object) -> int:
    ctx = _ctx(body={"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, **body})
    ctx.state[ESTIMATE] = prompt
    return stage.worst_case_nano(ctx)


def test_a_prompt_estimate_over_the_threshold_reserves_the_whole_request_at_long_context_rates() -> None:
    # reserved at the short rates, a long prompt settled at twice its reservation: a budget overrun by more
    # than the one request's estimate error
    stage = _long_stage()
    assert _worst(stage, 100) == (100 * 1000 + 10 * 2000) * 1000  # at the threshold: short rates
    assert _worst(stage, 101) == (101 * 2000 + 10 * 3000) * 1000  # one over: every token at long rates


@pytest.mark.parametrize("tier", ["priority", "fast"])
def test_asking_for_priority_reserves_at_priority_rates_and_flex_at_standard_ones(tier: str) -> None:
    stage = _long_stage()
    assert _worst(stage, 50, service_tier=tier) == 2 * _worst(stage, 50)
    assert _worst(stage, 101, service_tier=tier) == 2 * _worst(stage, 101)  # priority of the long rates
    assert _worst(stage, 50, service_tier="flex") == _worst(stage, 50)  # served by flex or not, never more


def test_made_up_model_names_do_not_grow_the_worst_case_memo() -> None:
    # every name a client sends was remembered for good: a leak of one entry per made-up model (each a 404 later)
    stage = budget.build(_deps(_services()))
    assert isinstance(stage, budget.BudgetStage)
    for i in range(budget._MEMO_EXTRA + 500):
        stage.worst_case_nano(_ctx(body={"model": f"made-up-{i}", "messages": [{"role": "user", "content": "hi"}]}))
    assert len(stage._rates) <= stage._rates_cap
    assert stage.worst_case_nano(_ctx(body={"model": "mock", "messages": [{"role": "user", "content": "hi"}]})) > 0


def test_a_model_a_configured_rule_may_route_to_a_dearer_one_is_reserved_at_the_dearer_rates() -> None:
    # the rules run after the reservation: reserved at the asked model's rates, a route to a dearer model
    # settled above it on every such call, and concurrent ones could overrun a budget by more than one call
    cheap = Deployment(name="mock", provider="mock", id="mock#0", prices=Prices(input_per_mtok=1000,
                                                                                output_per_mtok=2000))
    dear = Deployment(name="big", provider="mock", id="big#0", prices=Prices(input_per_mtok=3000,
                                                                             output_per_mtok=9000))
    rules = {"rules": [{"name": "hard", "match": {"model": "mock", "keywords": ["prove"]}, "route": "big"}]}

    def stage_for(guardrails: dict[str, Any] | None) -> budget.BudgetStage:
        svc = _services()
        svc.prices = PriceBook([cheap, dear])
        deps = StageDeps(config=GatewayConfig(models=[cheap, dear], guardrails=guardrails))
        deps.services[SERVICE] = svc
        built = budget.build(deps)
        assert isinstance(built, budget.BudgetStage)
        return built

    routed, plain = stage_for(rules), stage_for(None)
    assert _worst(routed, 50) == (50 * 3000 + 10 * 9000) * 1000  # at big's rates, whichever way the rule goes
    assert _worst(plain, 50) == (50 * 1000 + 10 * 2000) * 1000


def test_a_route_in_a_keys_own_rules_is_reserved_at_the_dearer_rates() -> None:
    # a key's metadata may carry rules that route to a dearer model; they were not known when the rates were
    # worked out, so such calls settled above their reservation and concurrent ones could overrun a budget
    from aigw.http.key_lookup import principal_for
    from aigw.stores.base import ApiKey, Grant, Project, Tenant

    cheap = Deployment(name="mock", provider="mock", id="mock#0", prices=Prices(input_per_mtok=1000,
                                                                                output_per_mtok=2000))
    dear = Deployment(name="big", provider="mock", id="big#0", prices=Prices(input_per_mtok=3000,
                                                                             output_per_mtok=9000))
    svc = _services()
    svc.prices = PriceBook([cheap, dear])
    config = GatewayConfig(models=[cheap, dear], guardrails={"rules": [
        {"name": "ping", "match": {"keywords": ["ping"]}, "respond": "pong"}]})  # rules are on, none routes
    deps = StageDeps(config=config)
    deps.services[SERVICE] = svc
    stage = budget.build(deps)
    assert isinstance(stage, budget.BudgetStage)

    def worst(metadata: dict[str, Any]) -> int:
        key = ApiKey(id="k1", tenant_id="t1", project_id="p1", key_hash="h", prefix="sk-aigw-abcd", metadata=metadata)
        ctx = _ctx(body={"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10})
        ctx.principal = principal_for(Grant(key, Project(id="p1", tenant_id="t1", name="p"), Tenant(id="t1", name="t")))
        ctx.state[ESTIMATE] = 50
        return stage.worst_case_nano(ctx)

    routes = {"guardrails": {"rules": [{"name": "hard", "match": {"keywords": ["prove"]}, "route": "big"}]}}
    assert worst(routes) == (50 * 3000 + 10 * 9000) * 1000  # at big's rates, whichever way the rule goes
    assert worst({"team": "x"}) == worst({"guardrails": {"pii": {"mode": "block"}}}) == (50 * 1000 + 10 * 2000) * 1000


@pytest.mark.parametrize("chain", ["fallbacks", "context_window_fallbacks", "content_policy_fallbacks"])
def test_a_model_whose_fallback_chain_reaches_a_dearer_one_is_reserved_at_the_dearer_rates(chain: str) -> None:
    # a primary's outage sends every call down the chain: reserved at the asked model's rates, each such call
    # settled above its reservation, and calls in flight together could overrun a budget by more than one call
    from aigw.config.models import ModelRouting
    from aigw.routing.router import Router, Target
    from tests.unit.routing.fakes import Scripted

    cheap = Deployment(name="mock", provider="mock", id="mock#0", prices=Prices(input_per_mtok=1000,
                                                                                output_per_mtok=2000))
    dear = Deployment(name="big", provider="mock", id="big#0", prices=Prices(input_per_mtok=3000,
                                                                             output_per_mtok=9000))
    mid = Deployment(name="mid", provider="mock", id="mid#0", prices=Prices(input_per_mtok=500, output_per_mtok=500))

    def stage_for(routing: dict[str, ModelRouting], guardrails: dict[str, Any] | None = None) -> budget.BudgetStage:
        svc = _services()
        svc.prices = PriceBook([cheap, dear, mid])
        router = Router([Target(d, Scripted(d.model)) for d in (cheap, dear, mid)], routing=routing)
        deps = StageDeps(config=GatewayConfig(models=[cheap, dear, mid], guardrails=guardrails), router=router)
        deps.services[SERVICE] = svc
        built = budget.build(deps)
        assert isinstance(built, budget.BudgetStage)
        return built

    falls_back = stage_for({"mock": ModelRouting.model_validate({chain: ["big"]})})
    assert _worst(falls_back, 50) == (50 * 3000 + 10 * 9000) * 1000  # at big's rates
    assert _worst(stage_for({}), 50) == (50 * 1000 + 10 * 2000) * 1000
    # the chain is flat: a fallback's own fallbacks are not followed, so big's chain back to mock changes nothing
    assert _worst(stage_for({"big": ModelRouting(fallbacks=["mock"])}), 50) == (50 * 1000 + 10 * 2000) * 1000
    # a rule may route to mid, whose own chain ends at big: the routed call is served under mid's policy
    rules = {"rules": [{"name": "hard", "match": {"model": "mock", "keywords": ["prove"]}, "route": "mid"}]}
    assert _worst(stage_for({"mid": ModelRouting(fallbacks=["big"])}, rules), 50) == (50 * 3000 + 10 * 9000) * 1000


async def test_a_retrys_lease_is_released_after_the_request_settles_both_calls() -> None:
    """Released first, the retry's room was free before the settle counted its cost: concurrent calls could
    reserve it meanwhile and together overrun the budget."""
    svc = _services()
    stage = budget.build(_deps(svc))
    assert isinstance(stage, budget.BudgetStage)
    ctx = _ctx(Limits(budget_usd=10.0, budget_period="total"))
    await stage.on_request(ctx)
    assert await stage.reserve_more(ctx, ctx.body) == ""  # reserved
    order: list[int] = []
    leave = svc.gate.leave

    async def recorded(*args: Any) -> Any:
        order.append(args[6])  # the actual cost: the request's both calls, the retry's lease 0
        return await leave(*args)
    svc.gate.leave = recorded  # type: ignore[method-assign]
    ctx.served_by, ctx.usage = MOCK, {"prompt_tokens": 10, "completion_tokens": 10}
    await stage.on_finish(ctx)
    assert len(order) == 2 and order[0] > 0 and order[1] == 0, order


@pytest.mark.parametrize(("policy", "why"), [("closed", budget.NOT_CHECKED), ("open", "")])
async def test_a_retry_the_budget_store_cannot_check_says_so(policy: str, why: str) -> None:
    """Under the closed policy a retry the store cannot reserve is not made, and the format error says the
    budget could not be checked, not that it cannot cover the call; under open it goes ahead."""
    svc = _services()
    svc.config.budget_on_store_error = policy  # type: ignore[assignment]
    stage = budget.build(_deps(svc))
    assert isinstance(stage, budget.BudgetStage)
    ctx = _ctx(Limits(budget_usd=10.0, budget_period="total"))
    await stage.on_request(ctx)

    async def down(*args: Any) -> Any:
        raise ConnectionError("redis is away")
    svc.gate.enter = down  # type: ignore[method-assign]
    assert await stage.reserve_more(ctx, ctx.body) == why


def _vision_stage(*deployments: Deployment, routing: dict[str, Any] | None = None) -> budget.BudgetStage:
    from aigw.config.models import ModelRouting
    from aigw.routing.router import Router, Target
    from tests.unit.routing.fakes import Scripted

    svc = _services()
    svc.prices = PriceBook(list(deployments))
    policies = {k: ModelRouting.model_validate(v) for k, v in (routing or {}).items()}
    router = Router([Target(d, Scripted(d.model)) for d in deployments], routing=policies)
    deps = StageDeps(config=GatewayConfig(models=list(deployments)), router=router)
    deps.services[SERVICE] = svc
    stage = budget.build(deps)
    assert isinstance(stage, budget.BudgetStage)
    return stage


def _vision(model: str, upstream: str) -> Deployment:
    return Deployment(name=model, provider="mock", model=upstream, id=f"{model}#0",
                      prices=Prices(input_per_mtok=1000, output_per_mtok=1000))


@pytest.mark.parametrize("detail", ["high", "low"])
def test_a_gpt_4o_mini_deployment_reserves_its_images_at_the_mini_bound(detail: str) -> None:
    # gpt-4o-mini bills an image at up to 2,833 + 8 x 5,667 tokens: reserved at the common 4,800 (85 low), a
    # vision call settled ~10x above its reservation and concurrent ones could overrun a budget by many calls
    from tests.support.media import image_part

    def worst(stage: budget.BudgetStage, model: str, *parts: dict[str, object]) -> int:
        content = [{"type": "text", "text": "What is in this picture?"}, *parts]
        ctx = _ctx(body={"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 10})
        ctx.model = model
        return stage.worst_case_nano(ctx)

    image = image_part("https://example.com/cat.png", detail)
    mini, big = _vision("mini", "gpt-4o-mini-2024-07-18"), _vision("big", "gpt-4o")
    plain = _vision_stage(mini, big)
    bound, common = (2_833, 85) if detail == "low" else (48_169, 4_800)  # tokens, at $1,000 a million
    assert worst(plain, "mini", image, image) - worst(plain, "mini", image) == bound * 1_000_000
    assert worst(plain, "big", image, image) - worst(plain, "big", image) == common * 1_000_000
    assert worst(plain, "mini") == worst(plain, "big")  # text only: unchanged
    # a model whose fallback chain ends at a gpt-4o-mini deployment reserves at its bound too
    falls_back = _vision_stage(mini, big, routing={"big": {"fallbacks": ["mini"]}})
    assert worst(falls_back, "big", image) == worst(plain, "mini", image)


@pytest.mark.parametrize(("nano", "text"), [(0, "0.0000"), (1000, "0.000001"), (24_600, "0.000025"),
                                            (99_999, "0.0001"), (2_500_000, "0.0025"), (20 * 10**9, "20.0000"),
                                            (7, "0.000000007")])
def test_money_in_a_refusal_never_reads_zero_when_it_is_not(nano: int, text: str) -> None:
    assert budget.usd(nano) == text


async def test_a_small_budgets_refusal_shows_its_figures() -> None:
    # "$0.0000 of $0.0000 used ...; $0.0000 left, and this request may cost up to $0.0000": a refusal that
    # said nothing an operator could act on
    from aigw import errors

    stage = budget.build(_deps(_services()))
    assert stage is not None
    with pytest.raises(errors.BudgetExceeded) as refused:
        await stage.on_request(_ctx(Limits(budget_usd=0.000001, budget_period="total")))
    assert "of $0.000001 used" in str(refused.value) and "$0.000001 left" in str(refused.value)
    assert "up to $0.0000 " not in str(refused.value)


FUNCTIONS = [{"name": f"tool_{i}", "description": "Looks a thing up in the catalogue by its many fields. " * 8,
              "parameters": {"type": "object", "properties": {f"field_{j}": {"type": "string", "description":
                                                                             "one field of the record " * 4}
                                                                for j in range(8)}}} for i in range(10)]


@pytest.mark.parametrize("extra", [
    {"functions": FUNCTIONS},  # the legacy form of tools, still accepted by OpenAI and passed on as is
    {"response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": FUNCTIONS[0]["parameters"]}}},
])
def test_definitions_sent_outside_tools_count_in_the_prompt_estimate(extra: dict[str, object]) -> None:
    # the upstream bills these as prompt tokens (thousands here), but the reservation and the tpm estimate
    # counted none of them: every such call settled above its reservation, several in flight overran the budget
    from aigw.accounting.tokens import upper_estimate

    base = {"model": "mock", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10}
    as_tools = {**base, "tools": [{"type": "function", "function": f} for f in FUNCTIONS]}
    defined = json.dumps(extra, separators=(",", ":"))
    assert upper_estimate({**base, **extra}) - upper_estimate(base) >= len(defined) // 4
    if "functions" in extra:  # billed as tools are, were the upstream's usage missing
        assert TokenCounter().count_prompt({**base, **extra}, "gpt-4o") >= TokenCounter().count_prompt(as_tools,
                                                                                                        "gpt-4o") // 2


@pytest.mark.parametrize(("ttl", "usage_field"), [("1h", "cache_write_1h_tokens"), ("5m", "cache_write_tokens")])
async def test_a_prompt_written_to_the_cache_settles_within_its_reservation(ttl: str, usage_field: str) -> None:
    # Anthropic bills a prompt written to its cache at 1.25x input (5 min) or 2x input (1 h): reserved at the
    # plain input rate, a cached prompt of code settled above its reservation, so calls in flight together
    # could overrun a budget by more than one call
    stage = budget.build(_deps(_services()))
    assert isinstance(stage, budget.BudgetStage)
    code = "def f(x):{return[x*2for(x)in(range(9))if(x%3)]}\n" * 400  # dense code: few bytes per token
    part = {"type": "text", "text": code, "cache_control": {"type": "ephemeral", "ttl": ttl}}
    ctx = _ctx(Limits(budget_usd=100.0, budget_period="total"),
               body={"model": "mock", "messages": [{"role": "user", "content": [part]}], "max_tokens": 16})
    await stage.on_request(ctx)
    reserved = ctx.state[budget.BUDGET_DONE][1]
    prompt = TokenCounter().count_prompt(ctx.body, "claude-sonnet-4-5")
    written = {"cache_write_tokens": prompt, **({usage_field: prompt} if usage_field != "cache_write_tokens" else {})}
    ctx.served_by, ctx.usage = MOCK, {"prompt_tokens": prompt, "completion_tokens": 16,
                                      "prompt_tokens_details": written}
    assert measure(ctx, stage.svc).cost_nano <= reserved
