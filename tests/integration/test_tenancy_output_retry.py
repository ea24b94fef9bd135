"""An output check's ``json_schema: retry`` under a budget: the second upstream call is reserved before it is
made (concurrent retries cannot overrun the budget), each call is billed at the deployment that served it,
and a retry that fails leaves the first call billed once and no reservation behind."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from aigw.accounting.tokens import LOCAL_COUNTER, upper_estimate
from aigw.cli.admin_client import AdminClient
from aigw.pipeline.tenancy import SERVICE, TenancyServices
from aigw.stores.base import NANO, Limits, Scope
from aigw.types import JSON
from tests.integration.tenancy_support import MASTER, gateway_config, setup_key
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import RunningServer, start_aiohttp_app

SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
          "additionalProperties": False}
FORMAT: Any = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}}
CHEAP = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}
PRICEY = {"input_per_mtok": 10000.0, "output_per_mtok": 20000.0}
PROMPT_TOKENS = 5  # what the upstream reports for every call (the gateway's estimate is higher)
MAX_TOKENS = 50  # every call answers this many tokens: the reservation's output part is exact
SLOW_RETRY_S = 3.0


def cost_nano(price: dict[str, float]) -> int:
    """One call's cost at ``price`` (usd per million tokens = 1000 nano-dollars per token)."""
    return round((PROMPT_TOKENS * price["input_per_mtok"] + MAX_TOKENS * price["output_per_mtok"]) * 1000)


class JsonUpstream:
    """An OpenAI-compatible upstream per path prefix (``/<name>/v1``): a first call gets JSON that does not
    match the schema, the gateway's retry (its last message names the errors) gets valid JSON, or a 500
    from the deployments named in ``fail_retries``. Answers take ``delay_s``, so concurrent calls overlap."""

    def __init__(self, delay_s: float = 0.2) -> None:
        self.delay_s = delay_s
        self.fail_retries = {"flaky"}
        self.slow_retries = {"slow"}  # their retries take SLOW_RETRY_S
        self.no_usage = {"bare"}  # they report no usage (a compatible server that counts nothing)
        self.calls: list[tuple[str, bool]] = []  # (deployment path, a retry)
        self.bodies: list[JSON] = []  # every request's body, in order
        app = web.Application()
        app.router.add_post("/{dep}/v1/chat/completions", self.chat)
        self.server: RunningServer = start_aiohttp_app(app, "json-upstream")

    def base(self, dep: str) -> str:
        return f"{self.server.url}/{dep}/v1"

    async def chat(self, request: web.Request) -> web.Response:
        dep = request.match_info["dep"]
        body = await request.json()
        retry = "did not satisfy" in str(body["messages"][-1].get("content"))
        self.calls.append((dep, retry))
        self.bodies.append(body)
        await asyncio.sleep(SLOW_RETRY_S if retry and dep in self.slow_retries else self.delay_s)
        if retry and dep in self.fail_retries:
            return web.json_response({"error": {"message": "boom", "type": "server_error"}}, status=500)
        text = '{"a": 1}' if retry else '{"a": "one"}'
        out = body.get("max_tokens") or MAX_TOKENS
        answer: JSON = {
            "id": "chatcmpl-json", "object": "chat.completion", "created": 1, "model": body["model"],
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        }
        if dep not in self.no_usage:
            answer["usage"] = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": out,
                               "total_tokens": PROMPT_TOKENS + out}
        return web.json_response(answer)


@pytest.fixture(scope="module")
def upstream() -> Iterator[JsonUpstream]:
    up = JsonUpstream()
    yield up
    up.server.stop()


def _config(db: Path, up: JsonUpstream, **extra: Any) -> dict[str, Any]:
    def model(name: str, dep: str, prices: dict[str, float]) -> dict[str, Any]:
        return {"name": name, "provider": "openai_compatible", "model": "json-1", "api_base": up.base(dep),
                "prices": prices}

    cfg = gateway_config(db, **extra)
    cfg["models"] = [model("j", "a", CHEAP), model("j-flaky", "flaky", CHEAP), model("j-pricey", "b", PRICEY),
                     model("j-solo", "flaky", CHEAP),
                     model("j-slow", "slow", CHEAP), model("j-bare", "bare", CHEAP)]
    cfg["routing"] = {"*": {"num_retries": 0}, "j-flaky": {"num_retries": 0, "fallbacks": ["j-pricey"]}}
    cfg["circuit_breaker"] = {"enabled": False}
    cfg["guardrails"] = {"output": {"json_schema": "retry"}}
    return cfg


def _body(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "give json"}], "max_tokens": MAX_TOKENS,
            "response_format": FORMAT}


def _rows(admin: AdminClient, key_id: str, n: int) -> list[dict[str, Any]]:
    """The key's ledger rows once all ``n`` are in (written off the request path)."""
    deadline = time.monotonic() + 5
    while True:
        rows: list[dict[str, Any]] = admin.get("/admin/requests", key_id=key_id)["data"]
        if len(rows) >= n:
            assert len(rows) == n, rows
            return rows
        assert time.monotonic() < deadline, f"{len(rows)} of {n} ledger rows for {key_id}"
        time.sleep(0.05)


def _counted(gw: RunningGateway, key_id: str, budget_usd: float) -> int:
    """What the key's budget counters hold (settled spend plus live reservations) in today's window."""
    svc = gw.app.state["deps"].services[SERVICE]
    assert isinstance(svc, TenancyServices)
    scope = Scope("key", key_id, Limits(budget_usd=budget_usd, budget_period="daily"))
    return int(gw.call(svc.budgets.spent(scope, time.time())))


@pytest.mark.parametrize("store", ["memory", "redis"])
def test_concurrent_retries_are_reserved_and_cannot_overrun_the_budget(
        tmp_path: Path, upstream: JsonUpstream, store: str, request: pytest.FixtureRequest) -> None:
    extra: dict[str, Any] = {}
    key_fields: dict[str, Any] = {}
    if store == "redis":  # with a rate limit too: the reservation and its settle ride in the limits' store call
        url, prefix = request.getfixturevalue("redis_isolated")
        extra = {"redis_url": url, "redis_prefix": prefix}
        key_fields = {"rpm": 1000}
    # the gateway's worst case of a first call (its prompt estimate, the schema included, and max_tokens): all
    # eight first calls fit, and about two retries beside them
    first = (upper_estimate(_body("j")) * CHEAP["input_per_mtok"] + MAX_TOKENS * CHEAP["output_per_mtok"]) / 1e6
    budget = round(10.5 * first, 4)
    with running_gateway(_config(tmp_path / "gw.db", upstream, **extra)) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, f"retry-{store}", budget_usd=budget, budget_period="daily", **key_fields)
        client = openai.AsyncOpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)

        async def one() -> str:
            try:
                answer = await client.chat.completions.create(**_body("j"))
            except openai.APIStatusError as err:
                return f"{err.status_code} {err.message}"
            return answer.choices[0].message.content or ""

        async def burst() -> list[str]:
            try:
                return await asyncio.gather(*(one() for _ in range(8)))
            finally:
                await client.close()

        answers = asyncio.run(burst())
        rows = _rows(admin, key["id"], len(answers))
        spent = sum(round(r["cost_usd"] * NANO) for r in rows)
        # each call at most its reservation: the budget holds (the promise allows one call's difference more)
        assert spent <= round(budget * NANO), (spent, answers)
        assert spent == _counted(gw, key["id"], budget), "a reservation was left behind, or a cost not settled"
        retried = [a for a in answers if a == '{"a": 1}']
        refused = [a for a in answers if "not asked again: the budget cannot cover" in a]
        assert retried and refused, answers  # some retries fit beside the others' reservations, some did not
        assert all(a.startswith("400 ") for a in refused)
        assert spent == cost_nano(CHEAP) * (2 * len(retried) + len(refused)), (spent, answers)


def test_a_retry_served_by_a_fallback_is_billed_at_each_deployments_price(tmp_path: Path,
                                                                         upstream: JsonUpstream) -> None:
    with running_gateway(_config(tmp_path / "gw.db", upstream)) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "retry-prices", budget_usd=10.0, budget_period="daily")
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        raw = client.chat.completions.with_raw_response.create(**_body("j-flaky"))
        assert raw.parse().choices[0].message.content == '{"a": 1}'
        assert raw.headers["x-aigw-output-retries"] == "1"
        (row,) = _rows(admin, key["id"], 1)
        # the first call at the cheap deployment that served it, the retry at the pricey fallback's price
        assert round(row["cost_usd"] * NANO) == cost_nano(CHEAP) + cost_nano(PRICEY)
        # the row names the deployment of the answer sent (the retry's), its fallback, and both calls' tokens
        assert row["served_model"] == "j-pricey" and row["deployment"].startswith("j-pricey/")
        assert row["fallbacks"] == ["j-pricey"]
        assert (row["input_tokens"], row["output_tokens"]) == (2 * PROMPT_TOKENS, 2 * MAX_TOKENS)
        assert _counted(gw, key["id"], 10.0) == cost_nano(CHEAP) + cost_nano(PRICEY)


def test_a_retry_without_usage_bills_both_local_counts_and_tells_the_client_the_same(
        tmp_path: Path, upstream: JsonUpstream) -> None:
    """Neither call reported usage: the ledger bills both calls' local counts, and the client's usage is that sum
    (not the first answer's count alone, which the ledger kept once the client was told it)."""
    with running_gateway(_config(tmp_path / "gw.db", upstream)) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "retry-bare", budget_usd=10.0, budget_period="daily")
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        answer = client.chat.completions.create(**_body("j-bare"))
        assert answer.choices[0].message.content == '{"a": 1}' and answer.usage is not None
        (row,) = _rows(admin, key["id"], 1)
        one, two = LOCAL_COUNTER.count_text('{"a": "one"}'), LOCAL_COUNTER.count_text('{"a": 1}')
        assert row["output_tokens"] == one + two  # both answers billed
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (row["input_tokens"],
                                                                                 row["output_tokens"])


def test_a_retry_that_fails_upstream_bills_the_first_call_once_and_releases_the_reservations(
        tmp_path: Path, upstream: JsonUpstream) -> None:
    with running_gateway(_config(tmp_path / "gw.db", upstream)) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "retry-fails", budget_usd=10.0, budget_period="daily")
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(**_body("j-solo"))
        assert err.value.status_code >= 500
        (row,) = _rows(admin, key["id"], 1)
        assert round(row["cost_usd"] * NANO) == cost_nano(CHEAP)  # the first call's answer was billed, once
        assert row["status"] >= 500
        assert _counted(gw, key["id"], 10.0) == cost_nano(CHEAP)  # settled, and no lease left


def test_a_client_gone_during_the_retry_is_billed_both_calls(tmp_path: Path, upstream: JsonUpstream) -> None:
    with running_gateway(_config(tmp_path / "gw.db", upstream)) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "retry-gone", budget_usd=10.0, budget_period="daily")
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=1.0)
        with pytest.raises(openai.APITimeoutError):  # the client leaves while the retry's upstream call runs
            client.chat.completions.create(**_body("j-slow"))
        (row,) = _rows(admin, key["id"], 1)
        assert upstream.calls[-1] == ("slow", True)  # the retry did reach its upstream
        # the retry reported no usage (it never answered): its prompt is counted locally, at its deployment
        retry_prompt = LOCAL_COUNTER.count_prompt(upstream.bodies[-1], "json-1")
        assert row["status"] == 499
        assert (row["input_tokens"], row["output_tokens"]) == (PROMPT_TOKENS + retry_prompt, MAX_TOKENS)
        billed = cost_nano(CHEAP) + round(retry_prompt * CHEAP["input_per_mtok"] * 1000)
        assert round(row["cost_usd"] * NANO) == billed
        assert _counted(gw, key["id"], 10.0) == billed  # settled the same, and the retry's lease released
