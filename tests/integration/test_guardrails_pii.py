"""PII through the gateway, with the official SDKs: redacted upstream, restored answers, block, records."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest

from aigw.cli.admin_client import AdminClient
from tests.integration.conftest import Upstreams
from tests.integration.guardrails_support import (
    CARD,
    EMAIL,
    MASTER,
    ScriptedUpstream,
    ask,
    gateway_config,
    logged,
    metric_lines,
    scripted,  # noqa: F401  (fixture)
    scripted_server,  # noqa: F401  (fixture)
)
from tests.integration.tenancy_support import setup_key
from tests.support.gateway import RunningGateway, running_gateway

QUESTION = f"Please write to {EMAIL} about card {CARD}."


@pytest.fixture(scope="module")
def gw(upstreams: Upstreams, scripted_server: ScriptedUpstream,  # noqa: F811
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    cfg = gateway_config(upstreams, scripted_server, tmp_path_factory.mktemp("pii") / "gw.db",
                         {"pii": {"mode": "redact"}})
    cfg["models"].append({**cfg["models"][0], "name": "oai-block"})
    cfg["routing"]["oai-block"] = {"guardrails": {"pii": {"mode": "block"}}}
    cfg["models"].append({**cfg["models"][0], "name": "oai-flag"})
    cfg["routing"]["oai-flag"] = {"guardrails": {"pii": {"mode": "flag"}}}
    with running_gateway(cfg) as gw:
        yield gw


def upstream_body(ups: Upstreams, model: str) -> str:
    fake = ups.openai if model == "oai" else ups.anthropic
    return orjson.dumps(fake.traffic.last.body).decode()


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("model", ["oai", "claude"])
def test_placeholders_go_upstream_and_the_answer_comes_back_restored(
        gw: RunningGateway, ups: Upstreams, model: str, api: str, stream: bool) -> None:
    answer = ask(api, gw, model, QUESTION, stream)
    assert EMAIL in answer and CARD in answer  # the upstream echoed placeholders; the client sees originals
    sent = upstream_body(ups, model)
    assert EMAIL not in sent and "4111" not in sent
    assert "<EMAIL_1>" in sent and "<CREDIT_CARD_1>" in sent


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_placeholder_split_across_chunks_is_restored(gw: RunningGateway, scripted: ScriptedUpstream,  # noqa: F811
                                                       api: str) -> None:
    scripted.chunk_size = 2  # "<EMAIL_1>" reaches the gateway in five pieces
    answer = ask(api, gw, "scripted", f"mail {EMAIL} today", stream=True)
    assert answer == f"Echo: mail {EMAIL} today"
    assert scripted.bodies[-1]["messages"][-1]["content"] == "mail <EMAIL_1> today"


def test_block_is_a_400_with_the_kinds_and_nothing_goes_upstream(gw: RunningGateway, ups: Upstreams) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        ask("openai", gw, "oai-block", QUESTION, stream=False)
    body = err.value.body
    assert isinstance(body, dict)
    assert "email" in body["message"] and "credit_card" in body["message"]
    assert EMAIL not in body["message"] and "4111" not in body["message"]
    with pytest.raises(anthropic.BadRequestError) as aerr:
        ask("anthropic", gw, "oai-block", QUESTION, stream=True)
    assert aerr.value.status_code == 400 and "credit_card" in str(aerr.value) and EMAIL not in str(aerr.value)
    assert ups.openai.traffic.requests == 0


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_flag_sends_the_original_and_records_the_kinds(gw: RunningGateway, ups: Upstreams, api: str) -> None:
    rid = "req_flag_" + uuid.uuid4().hex[:8]
    answer = ask(api, gw, "oai-flag", QUESTION, stream=True, extra_headers={"x-request-id": rid})
    assert EMAIL in answer and EMAIL in upstream_body(ups, "oai")
    verdict = logged(gw, rid)["guardrails"]["pii"]
    assert verdict["action"] == "flag" and verdict["counts"] == {"credit_card": 1, "email": 1}


def test_the_request_log_and_metrics_carry_kinds_and_counts_never_values(gw: RunningGateway, ups: Upstreams) -> None:
    rid = "req_pii_" + uuid.uuid4().hex[:8]
    ask("openai", gw, "oai", QUESTION, stream=False, extra_headers={"x-request-id": rid})
    record = logged(gw, rid)
    assert record["guardrails"]["pii"] == {"action": "redact", "reasons": ["pii:credit_card", "pii:email"],
                                           "counts": {"credit_card": 1, "email": 1}, "score": 1.0}
    assert EMAIL not in orjson.dumps(record).decode()
    lines = metric_lines(gw, "aigw_guardrail_verdicts_total")
    assert any('model="oai"' in x and 'stage="pii"' in x and 'action="redact"' in x for x in lines)


def test_a_keys_metadata_sets_its_own_mode(gw: RunningGateway, ups: Upstreams) -> None:
    admin = AdminClient(gw.url, MASTER)
    key: dict[str, Any] = setup_key(admin, "pii-tenant", metadata={"guardrails": {"pii": {"mode": "block"}}})
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="oai", messages=[{"role": "user", "content": QUESTION}])
    answer = client.chat.completions.create(model="oai", messages=[{"role": "user", "content": "no personal data"}])
    assert answer.choices[0].message.content


def test_the_cache_holds_placeholders_and_a_hit_is_restored_with_this_requests_values(
        upstreams: Upstreams, scripted_server: ScriptedUpstream,  # noqa: F811
        tmp_path: Any) -> None:
    scripted_server.reset()
    cfg = gateway_config(upstreams, scripted_server, tmp_path / "gw.db", {"pii": {"mode": "redact"}},
                         cache={"mode": "exact"})
    with running_gateway(cfg) as gw:
        first = ask("openai", gw, "scripted", "mail alice@example.com today", stream=False)
        raw = oai_raw(gw, "mail bob@example.net today")
    assert first == "Echo: mail alice@example.com today"
    assert raw.headers["x-aigw-cache"] == "hit"  # same redacted request: "mail <EMAIL_1> today"
    assert raw.parse().choices[0].message.content == "Echo: mail bob@example.net today"
    assert len(scripted_server.bodies) == 1
    scripted_server.reset()


def oai_raw(gw: RunningGateway, text: str) -> Any:
    return openai.OpenAI(base_url=gw.v1, api_key=MASTER, max_retries=0).chat.completions.with_raw_response.create(
        model="scripted", messages=[{"role": "user", "content": text}])
