"""Limits, budgets and the spend ledger as a client and an operator see them (embedded mode)."""

from __future__ import annotations

import asyncio
import csv
import datetime as dt
import io
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest
from aiohttp import web
from click.testing import CliRunner

from aigw.cli.admin_client import AdminClient, AdminError
from aigw.cli.main import cli
from aigw.durations import parse_go_duration
from tests.integration.tenancy_support import MASTER, chat_body, gateway_config, key_spend, setup_key
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import start_aiohttp_app
from tests.support.writer_processes import writer_processes

REFUSED_ONCE: set[str] = set()  # ids whose first alert delivery the receiver answers 503 (then accepts)
REJECTED: set[str] = set()  # ids whose alerts the receiver answers 400 (a refusal: not worth a retry)
TRIED: list[dict[str, Any]] = []  # every delivery the receiver got, accepted or not


@pytest.fixture(scope="module")
def hook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    seen: list[dict[str, Any]] = []

    async def receive(request: web.Request) -> web.Response:
        event = await request.json()
        TRIED.append(event)
        if event["id"] in REFUSED_ONCE:
            REFUSED_ONCE.discard(event["id"])
            return web.Response(status=503)
        if event["id"] in REJECTED:
            return web.Response(status=400)
        seen.append(event)
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/alerts", receive)
    server = start_aiohttp_app(app, "alert-hook")
    yield server.url + "/alerts", seen
    server.stop()


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("spend") / "gw.db"


@pytest.fixture(scope="module")
def gw(db_path: Path, hook: tuple[str, list[dict[str, Any]]]) -> Iterator[RunningGateway]:
    cfg = gateway_config(db_path)
    cfg["tenancy"]["alert_webhook"] = hook[0]
    with running_gateway(cfg) as g:
        yield g


@pytest.fixture
def admin(gw: RunningGateway) -> AdminClient:
    return AdminClient(gw.url, MASTER)


def _client(gw: RunningGateway, key: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=retries)


def test_rpm_refusal_is_a_429_with_retry_after_and_ratelimit_headers(gw: RunningGateway, admin: AdminClient) -> None:
    key = setup_key(admin, "rpm-co", rpm=2)
    client = _client(gw, key["key"])
    first = client.chat.completions.with_raw_response.create(**chat_body())
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    client.chat.completions.create(**chat_body())
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**chat_body())
    headers = err.value.response.headers
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-remaining-requests"] == "0"
    assert err.value.code == "rate_limit_exceeded"


PROSE = ("The quarterly report shows that revenue grew in every region, led by strong demand for the new product "
         "line, while costs, including logistics and marketing, rose more slowly than expected. ")


def test_a_prompt_under_the_tpm_cap_runs_though_the_quick_estimate_says_it_is_over(
        gw: RunningGateway, admin: AdminClient) -> None:
    key = setup_key(admin, "tpm-co", tpm=1000)
    client = _client(gw, key["key"])
    fits = PROSE * 20  # ~700 tokens; the byte estimate says ~1,330
    answer = client.chat.completions.with_raw_response.create(**chat_body(fits))
    assert answer.headers["x-ratelimit-limit-tokens"] == "1000"
    # OpenAI's duration format: this call's tokens leave the window in a minute ("59.734s", or "1m0s")
    reset = parse_go_duration(answer.headers["x-ratelimit-reset-tokens"])
    assert reset is not None and 58 < reset <= 60


def test_a_prompt_over_the_tpm_cap_is_refused_for_good_and_sdks_do_not_retry(
        gw: RunningGateway, admin: AdminClient) -> None:
    key = setup_key(admin, "tpm-big-co", tpm=1000)
    client = _client(gw, key["key"], retries=2)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(**chat_body(PROSE * 40))  # ~1,400 tokens by the tokenizer too
    headers = err.value.response.headers
    assert headers["x-should-retry"] == "false" and "retry-after" not in headers
    assert headers["x-ratelimit-limit-tokens"] == "1000"
    assert err.value.code == "rate_limit_exceeded"
    assert "Request too large for key on tokens per minute: limit 1000" in err.value.message
    assert key_spend(admin, key["id"], requests=1)["errors"] == 1  # one refusal: the SDK did not retry
    client.chat.completions.create(**chat_body("a short one"))  # and the key still works


def test_calls_refused_before_the_pipeline_are_in_the_ledger_too(gw: RunningGateway, admin: AdminClient) -> None:
    key = setup_key(admin, "refused-co", models=["mock"])
    client = _client(gw, key["key"])
    with pytest.raises(openai.PermissionDeniedError):
        client.chat.completions.create(**{**chat_body(), "model": "mock-slow"})  # a model the key may not use
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="mock", messages=[{"role": "nobody", "content": "hi"}])
    client.chat.completions.create(**chat_body())
    row = key_spend(admin, key["id"], requests=3)
    assert (row["requests"], row["errors"]) == (3, 2)


def test_a_budget_added_mid_window_counts_what_the_window_spent_already(gw: RunningGateway,
                                                                         admin: AdminClient) -> None:
    key = setup_key(admin, "late-budget-co", project="runaway")
    client = _client(gw, key["key"])
    for _ in range(3):
        client.chat.completions.create(**chat_body("spend", max_tokens=20))
    spent = key_spend(admin, key["id"], requests=3)["cost_usd"]
    assert spent > 0
    admin.patch(f"/admin/projects/{key['project_id']}", {"budget_usd": spent / 2, "budget_period": "daily"})
    with pytest.raises(openai.RateLimitError) as refused:  # over budget already: refused at once
        client.chat.completions.create(**chat_body("spend", max_tokens=20))
    assert refused.value.code == "budget_exceeded" and "Budget exceeded for project" in refused.value.message


def test_a_budget_change_that_could_not_be_seeded_is_a_503_and_repeating_it_applies_it(
        gw: RunningGateway, admin: AdminClient) -> None:
    key = setup_key(admin, "seed-fail-co", project="runaway")
    client = _client(gw, key["key"])
    for _ in range(3):
        client.chat.completions.create(**chat_body("spend", max_tokens=20))
    spent = key_spend(admin, key["id"], requests=3)["cost_usd"]
    budgets = gw.app.state["deps"].services["tenancy"].budgets
    seed = budgets.seed

    async def store_down(spent: Any) -> None:
        raise ConnectionError("store away")

    change = {"budget_usd": spent / 2, "budget_period": "daily"}
    budgets.seed = store_down
    try:
        with pytest.raises(AdminError) as failed:
            admin.patch(f"/admin/projects/{key['project_id']}", change)
        assert failed.value.status == 503 and "repeat the call" in str(failed.value)
    finally:
        budgets.seed = seed
    admin.patch(f"/admin/projects/{key['project_id']}", change)  # the same values again: seeded this time
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**chat_body("spend", max_tokens=20))
    assert refused.value.code == "budget_exceeded"


def test_a_project_limit_covers_all_its_keys(gw: RunningGateway, admin: AdminClient) -> None:
    k1 = setup_key(admin, "proj-limit-co", project="shared")
    admin.patch(f"/admin/projects/{k1['project_id']}", {"rpm": 3})
    k2 = setup_key(admin, "proj-limit-co", project="shared")
    ok = 0
    for i in range(6):
        try:
            _client(gw, (k1 if i % 2 else k2)["key"]).chat.completions.create(**chat_body())
            ok += 1
        except openai.RateLimitError:
            pass
    assert ok == 3


@pytest.mark.parametrize("request_ids", ["own", "one repeated"])
def test_parallel_limit_refuses_the_call_over_the_cap(gw: RunningGateway, admin: AdminClient,
                                                      request_ids: str) -> None:
    key = setup_key(admin, "par-co", max_parallel=2)
    client = openai.AsyncOpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
    # a client that sends one x-request-id on every call still gets one in-flight place per call
    headers = {"x-request-id": "req-same-for-all"} if request_ids == "one repeated" else None

    async def one() -> str:
        try:  # mock-slow takes 300 ms: the three calls overlap
            await client.chat.completions.create(**{**chat_body(), "model": "mock-slow"}, extra_headers=headers)
            return "ok"
        except openai.RateLimitError:
            return "429"

    async def run() -> list[str]:
        try:
            return await asyncio.gather(one(), one(), one())
        finally:
            await client.close()

    assert sorted(asyncio.run(run())) == ["429", "ok", "ok"]


def test_spend_is_charged_exactly_and_reported_from_the_rollups(gw: RunningGateway, admin: AdminClient) -> None:
    key = setup_key(admin, "bill-co")
    client = _client(gw, key["key"])
    costs = []
    for text in ("one", "two two", "three three three"):
        usage = client.chat.completions.create(**chat_body(text)).usage
        assert usage is not None
        costs.append(usage.prompt_tokens * 1000e-6 + usage.completion_tokens * 2000e-6)
    row = key_spend(admin, key["id"], requests=3)
    assert row["cost_usd"] == pytest.approx(sum(costs), abs=1e-9)
    assert row["key_prefix"] == key["prefix"]
    by_model = admin.get("/admin/spend", group_by="model", tenant="bill-co")["data"]
    assert [(r["model"], r["requests"]) for r in by_model] == [("mock", 3)]
    by_day = admin.get("/admin/spend", group_by="day", tenant="bill-co")["data"]
    assert len(by_day) == 1 and by_day[0]["cost_usd"] == pytest.approx(sum(costs), abs=1e-9)


def test_the_cli_writes_the_report_as_csv(gw: RunningGateway, admin: AdminClient) -> None:
    key = setup_key(admin, "csv-co")
    for text in ("one", "two two"):
        _client(gw, key["key"]).chat.completions.create(**chat_body(text))
    row = key_spend(admin, key["id"], requests=2)
    env = {"AIGW_URL": gw.url, "AIGW_MASTER_KEY": MASTER}
    result = CliRunner().invoke(cli, ["spend", "--group-by", "key", "--tenant", "csv-co", "--csv"], env=env)
    assert result.exit_code == 0, result.output
    table = CliRunner().invoke(cli, ["spend", "--group-by", "key", "--tenant", "csv-co"], env=env)
    assert "cache_hits" in table.output.splitlines()[1]  # the header row shows the cache's figures too
    [parsed] = list(csv.DictReader(io.StringIO(result.output)))
    assert list(parsed)[:3] == ["key", "key_prefix", "key_name"]
    assert parsed["key"] == key["id"] and parsed["requests"] == "2"
    assert parsed["cost_usd"] == f"{row['cost_usd']:.9f}" and "e-" not in parsed["cost_usd"]
    both = CliRunner().invoke(cli, ["spend", "--csv", "--json"], env=env)
    assert both.exit_code == 2 and "choose one" in both.output
    req = urllib.request.Request(gw.url + "/admin/spend?group_by=day&tenant=csv-co&format=csv",
                                 headers={"authorization": f"Bearer {MASTER}"})
    with urllib.request.urlopen(req, timeout=5) as r:  # what curl and a BI tool get
        assert r.headers["content-type"] == "text/csv; charset=utf-8"
        assert r.headers["content-disposition"] == 'attachment; filename="spend-by-day.csv"'
        text = r.read().decode()
    assert text.startswith("day,requests,errors,cache_hits,") and text.count("\r\n") == 2
    with pytest.raises(AdminError) as bad:
        admin.get("/admin/spend", format="xml")
    assert bad.value.status == 400 and "format" in bad.value.message


def test_the_cli_warns_when_the_csv_was_cut_and_filters_by_model(gw: RunningGateway, admin: AdminClient) -> None:
    key = setup_key(admin, "cut-co")
    client = _client(gw, key["key"])
    for model in ("mock", "mock-large"):
        client.chat.completions.create(**{**chat_body("one"), "model": model})
    key_spend(admin, key["id"], requests=2)
    env = {"AIGW_URL": gw.url, "AIGW_MASTER_KEY": MASTER}
    cut = CliRunner().invoke(cli, ["spend", "--group-by", "model", "--tenant", "cut-co", "--csv", "--limit", "1"],
                             env=env)
    assert cut.exit_code == 0, cut.output
    assert len(list(csv.DictReader(io.StringIO(cut.stdout)))) == 1
    assert "warning: more rows than the CSV holds" in cut.stderr
    mock = CliRunner().invoke(cli, ["spend", "--group-by", "model", "--tenant", "cut-co", "--csv", "--model",
                                    "mock"], env=env)
    assert mock.exit_code == 0 and mock.stderr == "", mock.output
    assert [r["model"] for r in csv.DictReader(io.StringIO(mock.stdout))] == ["mock"]
    with pytest.raises(AdminError) as typo:
        admin.get("/admin/spend", tenant="cut-co", **{"from": "2026-11-01"})
    assert typo.value.status == 400 and typo.value.body["error"]["param"] == "from"


def test_streams_are_charged_even_when_the_client_did_not_ask_for_usage(gw: RunningGateway,
                                                                       admin: AdminClient) -> None:
    key = setup_key(admin, "stream-co")
    client = _client(gw, key["key"])
    chunks = list(client.chat.completions.create(**chat_body("stream me"), stream=True))
    assert all(c.usage is None for c in chunks)  # hidden from the client, still read by the gateway
    row = key_spend(admin, key["id"], requests=1)
    assert row["completion_tokens"] > 0 and row["cost_usd"] > 0


def test_anthropic_clients_use_the_same_keys_and_budgets(gw: RunningGateway, admin: AdminClient) -> None:
    key = setup_key(admin, "anthropic-co", models=["mock"])
    client = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0)
    message = client.messages.create(model="mock", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert message.usage.output_tokens > 0
    assert key_spend(admin, key["id"], requests=1)["cost_usd"] > 0
    with pytest.raises(anthropic.PermissionDeniedError):  # count_tokens keeps to the key's models too
        client.messages.count_tokens(model="mock-slow", messages=[{"role": "user", "content": "hi"}])


def test_anthropic_clients_get_anthropics_rate_limit_headers_and_request_id(gw: RunningGateway,
                                                                            admin: AdminClient) -> None:
    """Anthropic's SDK and tools read ``anthropic-ratelimit-*`` (resets as RFC 3339 times) and ``request-id``."""
    key = setup_key(admin, "anthropic-rl", rpm=2, tpm=100_000, models=["mock"])
    client = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0)
    ask = {"model": "mock", "max_tokens": 20, "messages": [{"role": "user", "content": "hi"}]}
    raw = client.messages.with_raw_response.create(**ask)  # type: ignore[arg-type]
    h = raw.headers
    assert (h["anthropic-ratelimit-requests-limit"], h["anthropic-ratelimit-requests-remaining"]) == ("2", "1")
    assert int(h["anthropic-ratelimit-tokens-limit"]) == 100_000
    assert 0 < int(h["anthropic-ratelimit-tokens-remaining"]) < 100_000
    for kind in ("requests", "tokens"):  # this call's request and tokens leave the window in a minute
        reset = dt.datetime.fromisoformat(h[f"anthropic-ratelimit-{kind}-reset"].replace("Z", "+00:00"))
        assert 0 <= (reset - dt.datetime.now(dt.UTC)).total_seconds() <= 61
    assert not any("input-tokens" in name or "output-tokens" in name for name in h)  # no separate limits
    assert raw.parse()._request_id == h["x-request-id"]
    client.messages.create(**ask)  # type: ignore[arg-type]
    with pytest.raises(anthropic.RateLimitError) as err:  # the refusal carries them too
        client.messages.create(**ask)  # type: ignore[arg-type]
    refused = err.value.response.headers
    assert refused["anthropic-ratelimit-requests-remaining"] == "0"
    assert int(refused["anthropic-ratelimit-tokens-remaining"]) > 0
    tokens_back = dt.datetime.fromisoformat(refused["anthropic-ratelimit-tokens-reset"].replace("Z", "+00:00"))
    assert abs((tokens_back - dt.datetime.now(dt.UTC)).total_seconds()) <= 2  # tokens would fit now
    assert err.value.request_id == err.value.response.headers["x-request-id"]


def test_a_tiny_budget_is_named_to_the_tenth_of_a_cent_in_its_refusal(gw: RunningGateway,
                                                                     admin: AdminClient) -> None:
    key = setup_key(admin, "tiny-budget-co", budget_usd=0.001, budget_period="daily")
    client = _client(gw, key["key"])
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**chat_body("spend", max_tokens=20))
    assert "of $0.0010 used" in refused.value.message  # not "of $0.00"


def test_an_exhausted_budget_is_refused_before_the_upstream_and_sdks_do_not_retry(
        gw: RunningGateway, admin: AdminClient, hook: tuple[str, list[dict[str, Any]]]) -> None:
    key = setup_key(admin, "budget-co", budget_usd=0.25, budget_period="daily")
    client = _client(gw, key["key"], retries=2)  # the SDK would retry a plain 429
    refused = None
    for _ in range(20):
        try:
            client.chat.completions.create(**chat_body("spend", max_tokens=20))
        except openai.RateLimitError as err:
            refused = err
            break
    assert refused is not None and refused.code == "budget_exceeded"
    assert refused.response.headers["x-should-retry"] == "false"
    assert "Budget exceeded for key" in refused.message
    time.sleep(0.3)
    row = key_spend(admin, key["id"], requests=1)
    assert row["cost_usd"] <= 0.25
    assert row["errors"] == 1  # one refusal recorded, not three: the SDK did not retry
    alerts = [a for a in hook[1] if a["id"] == key["id"]]
    assert sorted(a["threshold"] for a in alerts) == [0.5, 0.8]  # each once


def test_an_alert_webhook_that_failed_is_tried_again_with_the_same_event_id(
        gw: RunningGateway, admin: AdminClient, hook: tuple[str, list[dict[str, Any]]]) -> None:
    key = setup_key(admin, "flaky-hook-co", budget_usd=0.25, budget_period="daily")
    REFUSED_ONCE.add(key["id"])
    client = _client(gw, key["key"])
    for _ in range(20):  # until 50 % is crossed (the delivery is off the request path: it may come later)
        try:
            client.chat.completions.create(**chat_body("spend", max_tokens=20))
        except openai.RateLimitError:  # spent before the first try arrived, on a busy machine
            break
        if any(t["id"] == key["id"] for t in TRIED):
            break
    deadline = time.monotonic() + 5  # the second try follows the first by 1 s
    while not any(a["id"] == key["id"] and a["threshold"] == 0.5 for a in hook[1]):  # the 80 % one may come first
        assert time.monotonic() < deadline, f"not delivered: {[t for t in TRIED if t['id'] == key['id']]}"
        time.sleep(0.05)
    tries = [t for t in TRIED if t["id"] == key["id"] and t["threshold"] == 0.5]
    assert len(tries) == 2 and tries[0]["event_id"] == tries[1]["event_id"]  # a receiver can drop a repeat
    assert tries[0]["event_id"].startswith("evt_")


def test_an_alert_webhook_that_refuses_the_event_is_not_tried_again(gw: RunningGateway, admin: AdminClient,
                                                                     caplog: pytest.LogCaptureFixture) -> None:
    key = setup_key(admin, "rejecting-hook-co", budget_usd=0.25, budget_period="daily")
    REJECTED.add(key["id"])
    client = _client(gw, key["key"])
    with caplog.at_level("WARNING", logger="aigw.tenancy"):
        for _ in range(20):  # until 50 % is crossed (the delivery is off the request path: it may come later)
            try:
                client.chat.completions.create(**chat_body("spend", max_tokens=20))
            except openai.RateLimitError:  # spent before the delivery arrived, on a busy machine
                break
            if any(t["id"] == key["id"] for t in TRIED):
                break
        deadline = time.monotonic() + 5
        while not any(t["id"] == key["id"] for t in TRIED):
            assert time.monotonic() < deadline, "the alert was never delivered"
            time.sleep(0.05)
        time.sleep(1.5)  # past the first retry's wait: none came
    assert len([t for t in TRIED if t["id"] == key["id"] and t["threshold"] == 0.5]) == 1
    assert "answered 400; not retried" in caplog.text and key["id"] in caplog.text


def test_a_budget_lowered_below_its_spend_alerts_at_once_and_refuses_the_next_call(
        gw: RunningGateway, admin: AdminClient, hook: tuple[str, list[dict[str, Any]]]) -> None:
    """No call will cross a threshold the change itself passed: without an alert at the change, a budget
    lowered below its spend would refuse every call and never say 100 %."""
    key = setup_key(admin, "lowered-co", budget_usd=10.0, budget_period="daily")
    client = _client(gw, key["key"])
    for _ in range(3):
        client.chat.completions.create(**chat_body("spend", max_tokens=20))
    spent = key_spend(admin, key["id"], requests=3)["cost_usd"]  # in the rollups: what the change is measured against
    lowered = admin.patch(f"/admin/keys/{key['id']}", {"budget_usd": round(spent * 0.9, 6)})
    assert lowered["budget_usd"] < spent
    deadline = time.monotonic() + 5
    while len([a for a in hook[1] if a["id"] == key["id"]]) < 3:
        assert time.monotonic() < deadline, [a for a in hook[1] if a["id"] == key["id"]]
        time.sleep(0.05)
    alerts = [a for a in hook[1] if a["id"] == key["id"]]
    assert sorted(a["threshold"] for a in alerts) == [0.5, 0.8, 1.0]
    assert all(a["budget_usd"] == lowered["budget_usd"] and a["tenant_id"] == key["tenant_id"] for a in alerts)
    with pytest.raises(openai.RateLimitError) as refused:
        client.chat.completions.create(**chat_body("spend", max_tokens=20))
    assert refused.value.code == "budget_exceeded"
    admin.patch(f"/admin/keys/{key['id']}", {"budget_usd": lowered["budget_usd"]})  # the same budget again
    time.sleep(0.2)
    assert len([a for a in hook[1] if a["id"] == key["id"]]) == 3  # nothing new: it alerted already


def test_budgets_survive_a_restart_and_402_is_configurable(db_path: Path, gw: RunningGateway) -> None:
    key = setup_key(AdminClient(gw.url, MASTER), "restart-co", budget_usd=0.2, budget_period="total")
    spent = 0
    for _ in range(10):
        try:
            _client(gw, key["key"]).chat.completions.create(**chat_body("x"))
            spent += 1
        except openai.RateLimitError:
            break
    time.sleep(0.3)  # the ledger flushes every 50 ms here
    cfg = gateway_config(db_path, pipeline=None)
    cfg["tenancy"]["budget_status"] = 402
    with running_gateway(cfg) as again:
        with pytest.raises(openai.APIStatusError) as err:
            _client(again, key["key"]).chat.completions.create(**chat_body("x"))
        assert err.value.status_code == 402 and spent >= 1


@pytest.mark.parametrize("writer", ["process", "thread"])
def test_the_ledger_writer_is_a_background_process_or_the_database_thread(tmp_path: Path, writer: str) -> None:
    db = tmp_path / "gw.db"
    cfg = gateway_config(db)
    cfg["tenancy"]["ledger"]["writer"] = writer
    with running_gateway(cfg) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "writer-co")
        for _ in range(3):
            _client(gw, key["key"]).chat.completions.create(**chat_body())
        assert key_spend(admin, key["id"], requests=3)["requests"] == 3
        writers = writer_processes(db)
        assert len(writers) == (1 if writer == "process" else 0)
        with urllib.request.urlopen(gw.url + "/health/ready", timeout=5) as r:
            checks = json.loads(r.read())["checks"]
        ledger = checks["ledger"]
        assert checks["keys"]["status"] == "ok"  # the key-version poll answers
        assert ledger["status"] == "ok" and ledger["detail"].startswith("3 rows written")
        assert ("0 batches written by the database thread" in ledger["detail"]) == (writer == "process")
    assert not writer_processes(db)  # it ends with the gateway (after the drain)


def test_a_call_across_midnight_is_in_the_report_and_the_seed_of_the_day_its_budget_charged(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # reserved at 23:59:59 and answered after midnight: the daily counter charges Jan 31, so the report
    # and the counters seeded at a restart on Feb 1 must too; the ledger's day was the end's (Feb 1), so
    # a restart counted it in Feb 1 as well, twice in all
    from aigw.types import SystemClock

    offset = [0.0]
    monkeypatch.setattr(SystemClock, "now", lambda self: time.time() + offset[0])

    def at(iso: str) -> None:
        offset[0] = dt.datetime.fromisoformat(iso).replace(tzinfo=dt.UTC).timestamp() - time.time()

    cfg = gateway_config(tmp_path / "gw.db")
    cfg["models"].append({**cfg["models"][0], "name": "mock-2s", "latency_ms": 2000})
    at("2027-01-31T12:00:00")
    with running_gateway(cfg) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "midnight-co", budget_usd=0.1, budget_period="daily")
        at("2027-01-31T23:59:59")
        _client(gw, key["key"]).chat.completions.create(**{**chat_body(), "model": "mock-2s"})
        assert SystemClock().now() >= dt.datetime(2027, 2, 1, tzinfo=dt.UTC).timestamp()
        key_spend(admin, key["id"], requests=1)
        days = admin.get("/admin/spend", group_by="day", key=key["id"])["data"]
        assert [d["day"] for d in days] == ["2027-01-31"]
    at("2027-02-01T00:00:30")
    with running_gateway(cfg) as again:  # seeded from the ledger: Feb 1 has spent nothing
        for _ in range(2):  # each about $0.046 of the $0.10
            _client(again, key["key"]).chat.completions.create(**chat_body())


def test_a_call_refused_because_every_deployment_is_full_costs_the_key_nothing(tmp_path: Path) -> None:
    models = [{"name": "capped", "provider": "mock", "rpm": 1}, {"name": "capped", "provider": "mock", "rpm": 1},
              {"name": "mock", "provider": "mock"}]
    with running_gateway(gateway_config(tmp_path / "gw.db", models=models)) as gw:
        key = setup_key(AdminClient(gw.url, MASTER), "full-co", rpm=4)
        client = _client(gw, key["key"])
        for _ in range(2):
            client.chat.completions.create(**chat_body(model="capped"))
        for _ in range(3):  # both deployments full: refused before any upstream call, and given back to the key
            with pytest.raises(openai.RateLimitError, match="Every deployment"):
                client.chat.completions.create(**chat_body(model="capped"))
        raw = client.chat.completions.with_raw_response.create(**chat_body(model="mock"))
        assert raw.headers["x-ratelimit-remaining-requests"] == "1"  # 2 answered calls and this one
        client.chat.completions.create(**chat_body(model="mock"))
        with pytest.raises(openai.RateLimitError, match="key"):
            client.chat.completions.create(**chat_body(model="mock"))
