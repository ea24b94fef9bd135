"""Logs: one structured line per request, and no secret or prompt in any line under any error."""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import requests

from aigw.pipeline.stages.registry import STAGES
from tests.fakes import openai_faults as oai
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support.gateway import RunningGateway, running_gateway

MASTER = "sk-master-logs-test-000111222"
PROVIDER_KEY = "sk-provider-secret-9f8e7d6c5b4a"
HEADER_SECRET = "hdr-secret-token-31337abc"
PROMPT = "PROMPT-MARKER-qx7 please summarise my medical history"
ANSWER_MARKER = "qx7"  # the mock and the fake echo the prompt: the marker is in every answer too
FIELDS = {"request_id", "tenant_id", "project_id", "key_prefix", "model", "deployment", "status", "input_tokens",
          "output_tokens", "cost_usd", "latency_ms", "overhead_ms", "cache", "retries", "fallbacks"}


class Capture:
    def __init__(self) -> None:
        self.buf = io.StringIO()

    def lines(self) -> list[str]:
        return [line for line in self.buf.getvalue().splitlines() if line]

    def records(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.lines()]

    def requests(self, expect: int = 0) -> list[dict[str, Any]]:
        """The request lines; with ``expect``, wait (up to 3 s) until that many were written.

        A request's line is written just after its answer went out, so a test can get
        there first."""
        deadline = time.monotonic() + 3
        while True:
            found = [r for r in self.records() if r["logger"] == "aigw.request"]
            if len(found) >= expect or time.monotonic() > deadline:
                return found
            time.sleep(0.01)


@pytest.fixture
def logs() -> Iterator[Capture]:
    from aigw.observability.logging import configure

    root = logging.getLogger()
    saved = root.handlers[:], root.level
    cap = Capture()
    configure("debug", "json", stream=cap.buf)
    yield cap
    root.handlers[:], _ = saved[0], root.setLevel(saved[1])


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    f = FakeOpenAI(PROVIDER_KEY).start()
    yield f
    f.stop()


class Explode:
    """A stage whose bug raises an exception carrying a secret (as a careless library might)."""

    name = "test_explode"

    async def on_request(self, ctx: Any) -> None:
        if "x-test-explode" in ctx.headers:
            raise RuntimeError(f"connection string had {PROVIDER_KEY} and header {HEADER_SECRET}")


def gateway_config(fake: FakeOpenAI, tmp_path: Any, **obs: Any) -> dict[str, Any]:
    return {
        "server": {"master_key": MASTER},
        "database_url": f"sqlite:///{tmp_path}/gw.db",
        "models": [
            {"name": "oai", "provider": "openai", "model": "gpt-4o-mini", "api_base": fake.base_url,
             "api_key": PROVIDER_KEY, "headers": {"x-upstream-token": HEADER_SECRET}},
            {"name": "wrongkey", "provider": "openai", "model": "gpt-4o-mini", "api_base": fake.base_url,
             "api_key": "sk-not-the-right-one-123456"},
            {"name": "nowhere", "provider": "openai", "model": "gpt-4o-mini", "api_base": "http://127.0.0.1:9/v1",
             "api_key": PROVIDER_KEY},
            *[{"name": f"mock-{k}", "provider": "mock", "fail_rate": 1.0, "mock": {"fail_kind": k}}
              for k in ("upstream_error", "unavailable", "rate_limited", "timeout", "context_length_exceeded",
                        "content_policy")],
            {"name": "mock", "provider": "mock"},
        ],
        "routing": {"*": {"num_retries": 0}},
        "pipeline": ["observe", "test_explode"],
        "observability": obs,
    }


@pytest.fixture
def gw(fake: FakeOpenAI, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, logs: Capture) -> Iterator[RunningGateway]:
    monkeypatch.setitem(STAGES, "test_explode", "tests.integration.test_observability_logs:build_explode")
    with running_gateway(gateway_config(fake, tmp_path)) as gw:
        yield gw


def build_explode(deps: Any) -> Any:
    from aigw.pipeline.stage import Stage

    return type("ExplodeStage", (Explode, Stage), {})()


def call(gw: RunningGateway, model: str, key: str = MASTER, headers: dict[str, str] | None = None,
         **body: Any) -> requests.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": PROMPT}], **body}
    return requests.post(gw.v1 + "/chat/completions", json=payload, timeout=10,
                         headers={"Authorization": f"Bearer {key}", **(headers or {})})


def test_no_secret_or_prompt_in_any_log_line_under_any_error(gw: RunningGateway, fake: FakeOpenAI,
                                                             logs: Capture) -> None:
    statuses = [call(gw, "oai").status_code, call(gw, "oai", stream=True).status_code]
    statuses.append(call(gw, "oai", key="sk-wrong-client-key-55555").status_code)
    statuses.append(call(gw, "oai", key=MASTER[:-1]).status_code)
    for fault in (oai.server_error(500), oai.bad_auth(), oai.rate_limited(1), oai.context_length(),
                  oai.error(400, f"Invalid content: {PROMPT}"), Fault.non_json_body()):
        fake.faults.push(fault)
        statuses.append(call(gw, "oai").status_code)
    fake.faults.push(oai.stream_error(after=2))
    statuses.append(call(gw, "oai", stream=True).status_code)
    fake.faults.push(Fault.slow(headers=2.0))
    statuses.append(call(gw, "oai", headers={"x-aigw-timeout": "0.2"}).status_code)
    statuses.append(call(gw, "wrongkey").status_code)
    statuses.append(call(gw, "nowhere").status_code)
    statuses += [call(gw, f"mock-{k}").status_code for k in ("upstream_error", "unavailable", "rate_limited",
                                                             "timeout", "context_length_exceeded",
                                                             "content_policy")]
    statuses.append(call(gw, "mock", headers={"x-test-explode": "1"}).status_code)
    statuses.append(call(gw, "mock", stream=True, headers={"x-test-explode": "1"}).status_code)
    assert statuses.count(200) == 3 and {401, 429, 500, 502, 504} <= set(statuses)
    logs.requests(expect=len(statuses) - 2)  # every request but the two refused at auth has its line

    lines = logs.lines()
    assert len(lines) > 20
    for line in lines:
        orjson.loads(line)  # every line is one JSON object
        for secret in (MASTER, PROVIDER_KEY, HEADER_SECRET, "sk-wrong-client-key-55555", MASTER[:-1]):
            assert secret not in line, line
        assert ANSWER_MARKER not in line, line
    assert any("RuntimeError" in line for line in lines)  # the bug was logged, scrubbed


def test_one_request_line_per_request_with_its_metadata(gw: RunningGateway, logs: Capture) -> None:
    ok = call(gw, "oai", headers={"x-request-id": "req-log-1"})
    failed = call(gw, "mock-unavailable", headers={"x-request-id": "req-log-2"})
    assert ok.status_code == 200 and failed.status_code == 503
    lines = {r["request_id"]: r for r in logs.requests(expect=2)}
    assert set(lines) == {"req-log-1", "req-log-2"}
    good, bad = lines["req-log-1"], lines["req-log-2"]
    assert set(good) >= FIELDS
    assert good["status"] == 200 and good["model"] == "oai" and good["provider"] == "openai"
    assert good["input_tokens"] > 0 and good["output_tokens"] > 0 and good["key_prefix"] == "master"
    assert good["latency_ms"] >= good["upstream_ms"] > 0 and good["level"] == "info"
    assert bad["status"] == 503 and bad["error_kind"] == "unavailable" and bad["level"] == "warning"
    assert "request_body" not in good


def test_bodies_only_when_switched_on_and_then_pii_redacted_and_capped(
    fake: FakeOpenAI, tmp_path: Any, logs: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("aigw.guardrails.pii")
    monkeypatch.setitem(STAGES, "test_explode", "tests.integration.test_observability_logs:build_explode")
    email, card = "jane.doe@example.com", "4111 1111 1111 1111"
    # config's own secrets pasted into a prompt: the PII patterns do not know their shape, the scrubber does
    text = f"Mail {email} about card {card}, token {HEADER_SECRET}, key {MASTER}. " + "filler " * 200
    with running_gateway(gateway_config(fake, tmp_path, log_bodies=True, body_max_bytes=256)) as gw:
        for stream in (False, True):
            r = requests.post(gw.v1 + "/chat/completions", timeout=10, headers={"Authorization": f"Bearer {MASTER}"},
                              json={"model": "mock", "stream": stream, "messages": [{"role": "user", "content": text}]})
            assert r.status_code == 200
        listed = requests.get(gw.url + "/admin/requests", headers={"Authorization": f"Bearer {MASTER}"},
                              timeout=5).json()["data"]
    lines = logs.requests(expect=2)
    assert len(lines) == 2
    for line in lines:
        assert line["request_body"] and line["response_body"]
        assert "Mail " in line["request_body"] and "Mock answer" in line["response_body"]
        assert len(line["request_body"].encode()) <= 256 + 3 and len(line["response_body"].encode()) <= 256 + 3
    logged = {li["request_id"]: li["request_body"] for li in lines}
    for item in listed:
        assert item["request_body"] == logged[item["request_id"]]
    everything = logs.buf.getvalue() + orjson.dumps(listed).decode()
    assert email not in everything and card not in everything
    assert HEADER_SECRET not in everything and MASTER not in everything


@pytest.mark.parametrize("mode", ["block", "flag", "redact"])
def test_logged_bodies_keep_out_the_custom_pii_kinds_of_the_requests_policy(
    fake: FakeOpenAI, tmp_path: Any, logs: Capture, mode: str
) -> None:
    """The built-in detector does not know an operator's own kind (``EMP-\\d{6}``): in flag and block modes the body
    still holds it (a blocked request's body is the one that must stay out of the log), and it was logged raw."""
    pytest.importorskip("aigw.guardrails.pii")
    config = gateway_config(fake, tmp_path, log_bodies=True)
    config["pipeline"] = ["observe", "pii"]
    config["guardrails"] = {"pii": {"mode": mode, "custom": {"emp": r"EMP-\d{6}"}}}
    with running_gateway(config) as gw:
        r = requests.post(gw.v1 + "/chat/completions", timeout=10, headers={"Authorization": f"Bearer {MASTER}"},
                          json={"model": "mock", "messages": [{"role": "user", "content": "Who is EMP-123456?"}]})
        assert r.status_code == (400 if mode == "block" else 200)
        listed = requests.get(gw.url + "/admin/requests", headers={"Authorization": f"Bearer {MASTER}"},
                              timeout=5).json()["data"]
    (line,) = logs.requests(expect=1)
    assert "Who is" in line["request_body"] and "Who is" in listed[0]["request_body"]
    assert "EMP-123456" not in logs.buf.getvalue() + orjson.dumps(listed).decode()


class FailLate:
    """A stage whose bug shows only late in a request: mid-stream, in its finish hook, or in what it leaves for
    the request's own line (a measure that cannot be read), as each header asks."""

    name = "test_fail_late"

    def on_stream(self, ctx: Any, chunks: Any) -> Any:
        async def failing() -> Any:
            async for chunk in chunks:
                yield chunk
                if "x-test-stream" in ctx.headers:
                    raise RuntimeError("a stage's stream broke")
        return failing()

    async def on_finish(self, ctx: Any) -> None:
        if "x-test-record" in ctx.headers:
            ctx.state["tenancy.measure"] = type("Broken", (), {"tokens": object(), "cost_nano": 0})()
        if "x-test-finish" in ctx.headers:
            raise RuntimeError("a stage's finish hook broke")


def build_fail_late(deps: Any) -> Any:
    from aigw.pipeline.stage import Stage

    return type("FailLateStage", (FailLate, Stage), {})()


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_an_error_line_about_a_request_names_its_request_and_tenant(
        fake: FakeOpenAI, tmp_path: Any, logs: Capture, monkeypatch: pytest.MonkeyPatch, api: str) -> None:
    """Before, "stream failed", "stage ... failed in on_finish" and "observe: recording the request failed" named
    neither: an operator could not tell whose request (or bill: a failed finish hook may be a lost ledger row)
    the trace was about. Now each line carries ``request_id`` and ``tenant_id``, as the request's own line."""
    from aigw.cli.admin_client import AdminClient
    from tests.integration.tenancy_support import setup_key

    monkeypatch.setitem(STAGES, "test_fail_late", "tests.integration.test_observability_logs:build_fail_late")
    config = gateway_config(fake, tmp_path)
    config["pipeline"] = ["observe", "test_fail_late"]
    with running_gateway(config) as gw:
        key = setup_key(AdminClient(gw.url, MASTER), "logged-co")
        for header, stream, says in (("x-test-stream", True, "stream failed"),
                                     ("x-test-finish", False, "stage test_fail_late failed in on_finish"),
                                     ("x-test-record", False, "observe: recording the request failed")):
            rid = f"req-late-{api}-{header}"
            headers = {"Authorization": f"Bearer {key['key']}", "x-request-id": rid, header: "1"}
            if api == "openai":
                r = requests.post(gw.v1 + "/chat/completions", timeout=10, headers=headers, json={
                    "model": "mock", "stream": stream, "messages": [{"role": "user", "content": "hi"}]})
            else:
                r = requests.post(gw.url + "/v1/messages", timeout=10, headers={**headers, "anthropic-version": "1"},
                                  json={"model": "mock", "max_tokens": 20, "stream": stream,
                                        "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200, r.text
            r.content  # noqa: B018  (the whole answer, so the request has finished)
            deadline = time.monotonic() + 3
            while not (errors := [e for e in logs.records() if e["level"] == "error"]):
                assert time.monotonic() < deadline, f"no error line for {header}"
                time.sleep(0.01)
            assert [e["msg"] for e in errors] == [says]
            assert [(e.get("request_id"), e.get("tenant_id")) for e in errors] == [(rid, key["tenant_id"])], errors
            logs.buf.truncate(0)
            logs.buf.seek(0)
