"""The budget stage's alert log line names the tenant (and the request) whose key, project or tenant crossed a
threshold: a key or project id alone does not say whose budget it is."""

from __future__ import annotations

import logging

import pytest

from aigw.observability.metrics import Metrics
from aigw.pipeline.stages import budget
from aigw.pipeline.tenancy import ESTIMATE
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
