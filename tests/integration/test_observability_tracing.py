"""Traces: spans for the request, its stages and each upstream attempt, linked to the caller and the upstream."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from aigw.pipeline.stages.registry import STAGES
from tests.fakes import openai_faults as oai
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support.gateway import RunningGateway, running_gateway

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
INCOMING = f"00-{TRACE_ID}-{PARENT_ID}-01"


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeOpenAI]:
    f = FakeOpenAI("sk-trace-key").start()
    yield f
    f.stop()


def cfg(fake: FakeOpenAI, tmp_path: Any, tracing: bool) -> dict[str, Any]:
    return {
        "database_url": f"sqlite:///{tmp_path}/gw.db",
        "models": [{"name": "oai", "provider": "openai", "model": "gpt-4o-mini", "api_base": fake.base_url,
                    "api_key": "sk-trace-key"}],
        "routing": {"oai": {"num_retries": 1, "backoff_s": 0}},
        "pipeline": ["observe", "test_cache"],
        "observability": {"tracing": {"enabled": tracing, "exporter": "none"}},
    }


@pytest.fixture
def traced(fake: FakeOpenAI, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[tuple[RunningGateway, InMemorySpanExporter]]:
    monkeypatch.setitem(STAGES, "test_cache", "tests.integration.obs_stages:build_cache")
    exporter = InMemorySpanExporter()
    fake.reset()
    with running_gateway(cfg(fake, tmp_path, tracing=True)) as gw:
        gw.app.state["observability"].tracing.add_exporter(exporter)
        yield gw, exporter


def post(gw: RunningGateway, headers: dict[str, str] | None = None, **body: Any) -> requests.Response:
    payload = {"model": "oai", "messages": [{"role": "user", "content": "trace me"}], "max_tokens": 50, **body}
    return requests.post(gw.v1 + "/chat/completions", json=payload, headers=headers or {}, timeout=10)


def by_kind(spans: Any, kind: SpanKind) -> list[Any]:
    return [s for s in spans if s.kind == kind]


def finished(exporter: InMemorySpanExporter, servers: int = 1) -> Any:
    """The spans, once the request span ended (a stream's client can see its last byte a moment before)."""
    deadline = time.monotonic() + 3
    while len(by_kind(exporter.get_finished_spans(), SpanKind.SERVER)) < servers and time.monotonic() < deadline:
        time.sleep(0.01)
    return exporter.get_finished_spans()


@pytest.mark.parametrize("stream", [False, True])
def test_spans_for_request_stage_and_attempt_carry_gen_ai_attributes(
    traced: tuple[RunningGateway, InMemorySpanExporter], fake: FakeOpenAI, stream: bool
) -> None:
    gw, exporter = traced
    assert post(gw, {"traceparent": INCOMING}, stream=stream).status_code == 200
    spans = finished(exporter)
    [server], [client] = by_kind(spans, SpanKind.SERVER), by_kind(spans, SpanKind.CLIENT)
    stages = [s for s in spans if s.name.startswith("aigw.stage ")]

    # the caller's trace continues through the gateway
    assert format(server.context.trace_id, "032x") == TRACE_ID
    assert format(server.parent.span_id, "016x") == PARENT_ID
    assert server.name == "chat oai"
    assert server.attributes["gen_ai.operation.name"] == "chat"
    assert server.attributes["gen_ai.request.model"] == "oai"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["gen_ai.usage.input_tokens"] > 0

    assert [s.name for s in stages] == ["aigw.stage test_cache"]
    assert stages[0].parent.span_id == server.context.span_id

    assert client.parent.span_id == server.context.span_id
    assert client.name == "chat gpt-4o-mini"
    a = client.attributes
    assert a["gen_ai.system"] == "openai" and a["gen_ai.provider.name"] == "openai"
    assert a["gen_ai.request.model"] == "gpt-4o-mini" and a["gen_ai.request.max_tokens"] == 50
    assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] > 0
    assert a["gen_ai.response.model"]

    # the upstream sees the attempt span as its parent, in the caller's trace
    sent = {k.lower(): v for k, v in fake.traffic.last.headers.items()}["traceparent"]
    _, trace_id, parent_id, _ = sent.split("-")
    assert trace_id == TRACE_ID and parent_id == format(client.context.span_id, "016x")


def test_each_attempt_is_its_own_span_and_failures_are_marked(
    traced: tuple[RunningGateway, InMemorySpanExporter], fake: FakeOpenAI
) -> None:
    gw, exporter = traced
    fake.faults.push(oai.server_error(500))
    assert post(gw).status_code == 200  # the retry served it
    clients = by_kind(finished(exporter), SpanKind.CLIENT)
    assert len(clients) == 2
    failed, ok = sorted(clients, key=lambda s: s.start_time)
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "upstream_error"
    assert ok.status.status_code != StatusCode.ERROR
    [server] = by_kind(exporter.get_finished_spans(), SpanKind.SERVER)
    assert server.attributes["aigw.attempts"] == 2
    assert {c.parent.span_id for c in clients} == {server.context.span_id}
    sent = [{k.lower(): v for k, v in r.headers.items()}["traceparent"] for r in fake.traffic.log]
    assert [tp.split("-")[2] for tp in sent] == [format(c.context.span_id, "016x") for c in (failed, ok)]


def test_a_request_without_traceparent_starts_a_trace(traced: tuple[RunningGateway, InMemorySpanExporter]) -> None:
    gw, exporter = traced
    assert post(gw).status_code == 200
    [server] = by_kind(finished(exporter), SpanKind.SERVER)
    assert server.parent is None and server.context.trace_id != int(TRACE_ID, 16)


def test_tracing_off_wraps_nothing_and_passes_the_callers_traceparent_through(
    fake: FakeOpenAI, tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(STAGES, "test_cache", "tests.integration.obs_stages:build_cache")
    fake.reset()
    with running_gateway(cfg(fake, tmp_path, tracing=False)) as gw:
        assert gw.app.state["deps"].services["tracing"] is None
        assert not any(type(s).__name__.startswith("Traced") for s in gw.app.state["pipeline"].stages)
        assert not any(type(t.provider).__name__.startswith("Traced") for t in gw.app.state["router"].all_targets())
        assert post(gw, {"traceparent": INCOMING}).status_code == 200
    sent = {k.lower(): v for k, v in fake.traffic.last.headers.items()}
    assert sent["traceparent"] == INCOMING


@pytest.mark.parametrize("bad", ["garbage", f"00-{'0' * 32}-{PARENT_ID}-01", f"00-{TRACE_ID}-{'0' * 16}-01",
                                 f"ff-{TRACE_ID}-{PARENT_ID}-01", f"00-{TRACE_ID.upper()}-{PARENT_ID}-01",
                                 f"00-{TRACE_ID}-{PARENT_ID}-01-extra", "x" * 4000])
def test_tracing_off_does_not_pass_an_invalid_traceparent_upstream(
    fake: FakeOpenAI, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, bad: str
) -> None:
    """W3C Trace Context: a traceparent that does not parse is not propagated. It went upstream as sent (any
    text, any length), so a provider's tracer got garbage or an all-zero id to hang its spans under."""
    monkeypatch.setitem(STAGES, "test_cache", "tests.integration.obs_stages:build_cache")
    fake.reset()
    with running_gateway(cfg(fake, tmp_path, tracing=False)) as gw:
        assert post(gw, {"traceparent": bad, "tracestate": "v=1"}).status_code == 200
        sent = {k.lower(): v for k, v in fake.traffic.last.headers.items()}
        assert "traceparent" not in sent and "tracestate" not in sent
        assert post(gw, {"traceparent": INCOMING, "tracestate": "congo=t61rcWkgMzE"}).status_code == 200
        sent = {k.lower(): v for k, v in fake.traffic.last.headers.items()}
        assert sent["traceparent"] == INCOMING and sent["tracestate"] == "congo=t61rcWkgMzE"  # its state goes too


def test_stage_spans_can_be_switched_off(fake: FakeOpenAI, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STAGES, "test_cache", "tests.integration.obs_stages:build_cache")
    config = cfg(fake, tmp_path, tracing=True)
    config["observability"]["tracing"]["stage_spans"] = False
    exporter = InMemorySpanExporter()
    with running_gateway(config) as gw:
        gw.app.state["observability"].tracing.add_exporter(exporter)
        assert post(gw).status_code == 200
        spans = finished(exporter)
    assert sorted(s.kind.name for s in spans) == ["CLIENT", "SERVER"]


def test_a_request_refused_with_a_4xx_is_no_server_error_but_a_5xx_is(
    traced: tuple[RunningGateway, InMemorySpanExporter], fake: FakeOpenAI
) -> None:
    # OpenTelemetry's HTTP conventions: a server span's status stays unset for a 4xx (the client's mistake,
    # not the gateway failing: an alert on error spans must not fire for bad requests), with error.type set;
    # a 5xx is an error
    gw, exporter = traced
    fake.faults.push(oai.bad_request("temperature"))  # the upstream refuses the request: the client's 400
    assert post(gw).status_code == 400
    fake.faults.always(oai.server_error(500))
    assert post(gw).status_code == 502
    fake.faults.clear()
    refused, failed = sorted(by_kind(finished(exporter, servers=2), SpanKind.SERVER), key=lambda s: s.start_time)
    assert refused.attributes["http.response.status_code"] == 400
    assert refused.status.status_code == StatusCode.UNSET and refused.attributes["error.type"] == "bad_request"
    assert failed.attributes["http.response.status_code"] == 502
    assert failed.status.status_code == StatusCode.ERROR and failed.attributes["error.type"] == "upstream_error"
