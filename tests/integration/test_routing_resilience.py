"""Routing under upstream faults, seen through the OpenAI SDK: isolation, recovery, bounded retries,
Retry-After, timeouts, stream fallback before the first byte and an error event after it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest
import requests

from tests.fakes import openai_faults as oai
from tests.fakes.azure_upstream import FakeAzure
from tests.fakes.faults import Fault
from tests.integration.routing_support import (
    MASTER,
    MSGS,
    TimedOpenAI,
    by_model,
    client,
    config,
    deployments,
    mock,
    upstream,
)
from tests.support.gateway import running_gateway


@pytest.fixture(scope="module")
def fake_server() -> Iterator[TimedOpenAI]:
    fake = TimedOpenAI().start()
    yield fake
    fake.stop()


@pytest.fixture
def fake(fake_server: TimedOpenAI) -> Iterator[TimedOpenAI]:
    fake_server.reset()
    yield fake_server
    fake_server.reset()


def test_a_deployment_failing_every_call_is_isolated_and_clients_see_no_error(fake: TimedOpenAI) -> None:
    fake.faults.always(oai.server_error(500))
    cfg = config([upstream(fake, "m"), mock("m")], circuit_breaker={"failures": 3, "cooldown_s": 60})
    with running_gateway(cfg) as gw:
        c = client(gw)
        served = set()
        for _ in range(60):
            raw = c.chat.completions.with_raw_response.create(model="m", messages=MSGS)  # type: ignore[arg-type]
            assert raw.parse().choices[0].message.content
            served.add(raw.headers["x-aigw-provider"])
        assert served == {"mock"}
        assert fake.traffic.requests == 3  # isolated after 3 failures; no client saw one
        sick = by_model(gw, "m", "openai")
        assert (sick["state"], sick["breaker"]) == ("open", "open")
        assert sick["last_error"]["kind"] == "upstream_error"
        assert by_model(gw, "m", "mock")["state"] == "healthy"
        metrics = requests.get(gw.url + "/metrics", timeout=5).text
        assert f'aigw_circuit_breaker_state{{deployment="{sick["id"]}"}} 2.0' in metrics


def test_concurrent_clients_see_no_error_while_a_deployment_fails(fake: TimedOpenAI) -> None:
    fake.faults.always(oai.server_error(503))
    cfg = config([upstream(fake, "m"), mock("m", latency_ms=5)], circuit_breaker={"failures": 3})
    with running_gateway(cfg) as gw:
        c = client(gw)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda _: c.chat.completions.create(model="m", messages=MSGS), range(80)))  # type: ignore[arg-type]
        assert all(a.choices[0].message.content for a in answers)
        assert fake.traffic.requests <= 3 + 8  # the threshold, plus calls already in flight when it opened


def test_the_breaker_closes_again_once_the_upstream_heals(fake: TimedOpenAI) -> None:
    fake.faults.always(oai.server_error(500))
    cfg = config([upstream(fake, "m"), mock("m")],
                 circuit_breaker={"failures": 2, "cooldown_s": 0.3}, routing={"m": {"strategy": "weighted"}})
    with running_gateway(cfg) as gw:
        c = client(gw)
        for _ in range(50):  # weighted picks: until the failing one has been picked often enough to open
            c.chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
            if by_model(gw, "m", "openai")["breaker"] == "open":
                break
        assert by_model(gw, "m", "openai")["breaker"] == "open"
        fake.faults.clear()
        time.sleep(0.35)
        assert by_model(gw, "m", "openai")["breaker"] == "half_open"
        before = fake.traffic.requests
        raw = c.chat.completions.with_raw_response.create(model="m", messages=MSGS)  # type: ignore[arg-type]
        assert raw.headers["x-aigw-provider"] == "openai"  # the trial call goes to the recovering one
        assert by_model(gw, "m", "openai")["breaker"] == "closed"
        for _ in range(30):
            c.chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
        assert fake.traffic.requests - before > 5  # back in the rotation


def test_a_retry_storm_stays_within_num_retries(fake: TimedOpenAI) -> None:
    fake.faults.always(oai.server_error(500))
    cfg = config([upstream(fake, "m")], routing={"m": {"num_retries": 2, "backoff_s": 0.01}},
                 circuit_breaker={"enabled": False})
    with running_gateway(cfg) as gw:
        c = client(gw)

        def call(_: int) -> int:
            try:
                c.chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
            except openai.APIStatusError as exc:
                return exc.status_code
            return 200

        with ThreadPoolExecutor(16) as pool:
            statuses = list(pool.map(call, range(16)))
        assert statuses == [502] * 16
        assert fake.traffic.requests == 16 * 3  # each request: one try and two retries, never more


def test_with_the_breaker_on_a_dead_upstream_sees_only_the_threshold(fake: TimedOpenAI) -> None:
    fake.faults.always(oai.server_error(500))
    cfg = config([upstream(fake, "m")], routing={"m": {"num_retries": 2, "backoff_s": 0.01}},
                 circuit_breaker={"failures": 5, "cooldown_s": 30})
    with running_gateway(cfg) as gw:
        c = client(gw)
        statuses = []
        for _ in range(20):
            with pytest.raises(openai.APIStatusError) as exc:
                c.chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
            statuses.append(exc.value.status_code)
            last = exc.value
        assert fake.traffic.requests == 5
        assert statuses[:2] == [502, 502] and set(statuses[2:]) == {503}
        assert 1 <= int(last.response.headers["retry-after"]) <= 30
        assert "x-aigw-attempts" not in last.response.headers  # the breaker refused it: no upstream was called


def test_a_failed_request_says_how_hard_the_router_tried(fake: TimedOpenAI) -> None:
    fake.faults.always(oai.server_error(500))
    cfg = config([upstream(fake, "m")], routing={"m": {"num_retries": 2, "backoff_s": 0.01}},
                 circuit_breaker={"failures": 50, "cooldown_s": 30})
    with running_gateway(cfg) as gw, pytest.raises(openai.APIStatusError) as exc:
        client(gw).chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
    headers = exc.value.response.headers
    assert exc.value.status_code == 502
    assert (headers["x-aigw-attempts"], headers["x-aigw-retries"]) == ("3", "2") and fake.traffic.requests == 3


def test_retry_after_is_waited_out_before_the_retry(fake: TimedOpenAI) -> None:
    fake.faults.push(oai.rate_limited(retry_after=0.3))
    with running_gateway(config([upstream(fake, "m")])) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="m", messages=MSGS)  # type: ignore[arg-type]
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-aigw-retries"] == "1"
        assert len(fake.arrivals) == 2 and fake.arrivals[1] - fake.arrivals[0] >= 0.3


def test_a_retry_after_too_long_to_wait_goes_back_to_the_client(fake: TimedOpenAI) -> None:
    fake.faults.push(oai.rate_limited(retry_after=20))
    with running_gateway(config([upstream(fake, "m")], routing={"m": {"max_retry_after_s": 2}})) as gw:
        started = time.monotonic()
        with pytest.raises(openai.RateLimitError) as exc:
            client(gw).chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
        assert time.monotonic() - started < 1
        assert exc.value.response.headers["retry-after"] == "20"
        assert fake.traffic.requests == 1


def test_a_deployment_whose_upstream_key_was_revoked_costs_clients_nothing(fake: TimedOpenAI) -> None:
    fake.faults.always(oai.bad_auth())  # the operator rotated keys and this deployment still has the old one
    cfg = config([upstream(fake, "m", weight=100), mock("m", weight=0.01)],
                 circuit_breaker={"failures": 3, "cooldown_s": 0.2})
    with running_gateway(cfg) as gw:
        c = client(gw)
        for i in range(12):
            raw = c.chat.completions.with_raw_response.create(model="m", messages=MSGS)  # type: ignore[arg-type]
            assert raw.parse().choices[0].message.content and raw.headers["x-aigw-provider"] == "mock"
            if i == 6:
                time.sleep(0.3)  # half-open: the trial is refused too, and its client is served all the same
        assert 3 < fake.traffic.requests <= 4 + 1
        assert by_model(gw, "m", "openai")["last_error"]["kind"] == "auth"


def test_deployments_out_of_quota_are_called_once_each_and_the_fallback_answers(fake: TimedOpenAI) -> None:
    fake.faults.always(oai.insufficient_quota())
    cfg = config([upstream(fake, "m"), upstream(fake, "m"), mock("backup")],
                 routing={"m": {"num_retries": 3, "fallbacks": ["backup"]}}, circuit_breaker={"enabled": False})
    with running_gateway(cfg) as gw:
        c = client(gw)
        raw = c.chat.completions.with_raw_response.create(model="m", messages=MSGS)  # type: ignore[arg-type]
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-aigw-served-model"] == "backup" and raw.headers["x-aigw-fallbacks"] == "backup"
        assert fake.traffic.requests == 2  # each deployment once: no retry, no wait on a 429 that cannot heal
        fake.traffic.reset()
        stream = c.chat.completions.create(model="m", messages=MSGS, stream=True)  # type: ignore[arg-type]
        assert "".join(ch.choices[0].delta.content or "" for ch in stream if ch.choices)
        assert fake.traffic.requests == 2


def test_an_upstream_out_of_credit_402_is_not_retried_and_the_fallback_answers(fake: TimedOpenAI) -> None:
    fake.faults.always(oai.payment_required())
    cfg = config([upstream(fake, "m"), mock("backup")], routing={"m": {"num_retries": 3, "fallbacks": ["backup"]}},
                 circuit_breaker={"enabled": False})
    with running_gateway(cfg) as gw:
        raw = client(gw).chat.completions.with_raw_response.create(model="m", messages=MSGS)  # type: ignore[arg-type]
        assert raw.parse().choices[0].message.content
        assert raw.headers["x-aigw-served-model"] == "backup"
        assert fake.traffic.requests == 1
        assert by_model(gw, "m", "openai")["last_error"]["kind"] == "quota_exceeded"


def test_out_of_quota_without_a_fallback_is_the_upstreams_429_at_once(fake: TimedOpenAI) -> None:
    fake.faults.always(oai.insufficient_quota())
    with running_gateway(config([upstream(fake, "m")], routing={"m": {"num_retries": 2}})) as gw:
        with pytest.raises(openai.RateLimitError) as exc:
            client(gw).chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
        assert exc.value.status_code == 429
        assert (exc.value.type, exc.value.code) == ("insufficient_quota", "insufficient_quota")
        assert exc.value.response.headers["x-should-retry"] == "false"
        assert fake.traffic.requests == 1
        assert by_model(gw, "m", "openai")["last_error"]["kind"] == "quota_exceeded"


def test_a_stalled_upstream_is_a_504_by_the_model_timeout(fake: TimedOpenAI) -> None:
    fake.faults.always(Fault.stall_forever())
    with running_gateway(config([upstream(fake, "m")], routing={"m": {"timeout_s": 0.4}})) as gw:
        started = time.monotonic()
        with pytest.raises(openai.APIStatusError) as exc:
            client(gw).chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
        assert exc.value.status_code == 504 and exc.value.code == "timeout"
        assert 0.35 < time.monotonic() - started < 2


@pytest.mark.parametrize("how", ["header", "body"])
def test_the_request_can_ask_for_a_shorter_timeout(fake: TimedOpenAI, how: str) -> None:
    fake.faults.always(Fault.stall_forever())
    body: dict[str, object] = {"model": "m", "messages": MSGS}
    headers = {"Authorization": f"Bearer {MASTER}"}
    if how == "header":
        headers["x-aigw-timeout"] = "0.3"
    else:
        body["timeout"] = 0.3
    with running_gateway(config([upstream(fake, "m")], routing={"m": {"timeout_s": 30}})) as gw:
        started = time.monotonic()
        r = requests.post(gw.v1 + "/chat/completions", json=body, headers=headers, timeout=10)
        assert r.status_code == 504 and time.monotonic() - started < 2
        assert "timeout" not in fake.traffic.last.body  # the body field never goes upstream


def test_a_bad_timeout_value_is_a_400(fake: TimedOpenAI) -> None:
    with running_gateway(config([upstream(fake, "m")])) as gw:
        r = requests.post(gw.v1 + "/chat/completions", json={"model": "m", "messages": MSGS, "timeout": "soon"},
                          headers={"Authorization": f"Bearer {MASTER}"}, timeout=10)
        assert r.status_code == 400 and r.json()["error"]["param"] == "timeout"
        assert fake.traffic.requests == 0


def test_a_stream_falls_back_before_its_first_byte(fake: TimedOpenAI) -> None:
    fake.faults.push(Fault.cut(after=0))
    fake.faults.push(Fault.slow(first_chunk=5))
    cfg = config([upstream(fake, "a", first_token_timeout_s=0.3), mock("b")],
                 routing={"a": {"fallbacks": ["b"], "num_retries": 0}})
    with running_gateway(cfg) as gw:
        for _ in range(2):  # a cut before any chunk, then a first token too late: both fall back
            started = time.monotonic()
            raw = client(gw).chat.completions.with_raw_response.create(model="a", messages=MSGS, stream=True)  # type: ignore[arg-type]
            text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
            assert text.startswith("Mock answer")
            assert raw.headers["x-aigw-served-model"] == "b" and raw.headers["x-aigw-fallbacks"] == "b"
            assert time.monotonic() - started < 2


@pytest.mark.parametrize("after", [1, 2])
def test_an_azure_stream_failing_before_its_first_text_falls_back(after: int) -> None:
    """Azure opens with its prompt-filter chunk (no choices), then the role chunk: neither says anything, so an
    error event right after them is a failure before the first byte, and the fallback answers."""
    az = FakeAzure(api_key="azure-test-key").start()
    try:
        az.faults.push(oai.stream_error(after=after))
        deployment = {"name": "a", "provider": "azure", "model": "gpt-4o-mini", "deployment": "chat",
                      "api_base": az.url, "api_key": "azure-test-key"}
        cfg = config([deployment, mock("b")], routing={"a": {"fallbacks": ["b"], "num_retries": 0}})
        with running_gateway(cfg) as gw:
            raw = client(gw).chat.completions.with_raw_response.create(model="a", messages=MSGS, stream=True)  # type: ignore[arg-type]
            text = "".join(ch.choices[0].delta.content or "" for ch in raw.parse() if ch.choices)
        assert text.startswith("Mock answer") and raw.headers["x-aigw-served-model"] == "b"
        assert az.traffic.requests == 1
    finally:
        az.stop()


def test_a_stream_cut_after_its_first_byte_ends_with_an_error_event_and_no_fallback(fake: TimedOpenAI) -> None:
    fake.faults.push(Fault(cut_after=2, chunk_delay=0.02))
    cfg = config([upstream(fake, "a"), mock("b")], routing={"a": {"fallbacks": ["b"]}})
    with running_gateway(cfg) as gw:
        r = requests.post(gw.v1 + "/chat/completions", json={"model": "a", "messages": MSGS, "stream": True},
                          headers={"Authorization": f"Bearer {MASTER}"}, timeout=10)
        assert r.status_code == 200 and r.headers["x-aigw-served-model"] == "a"
        events = [line for line in r.text.splitlines() if line.startswith("data: ")]
        assert '"content"' in events[0] or '"role"' in events[0]
        assert '"error"' in events[-1] and "[DONE]" not in r.text
        assert "Mock answer" not in r.text
        assert fake.traffic.requests == 1


def test_admin_deployments_needs_the_master_key_and_shows_each_deployment(fake: TimedOpenAI) -> None:
    fake.faults.push(oai.server_error(500))
    cfg = config([upstream(fake, "m", weight=5), mock("m"), mock("other")], routing={"m": {"num_retries": 3}})
    with running_gateway(cfg) as gw:
        assert requests.get(gw.url + "/admin/deployments", timeout=5).status_code == 401
        for _ in range(50):  # weighted picks: go on until the fake has failed once and then answered once
            client(gw).chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
            if fake.traffic.requests >= 2:
                break
        assert fake.traffic.requests >= 2
        got = deployments(gw)
        assert len(got) == 3
        d = by_model(gw, "m", "openai")
        for field in ("state", "breaker", "inflight", "latency_ewma_ms", "error_rate", "window", "rpm", "weight"):
            assert field in d
        assert d["window"]["failures"] == 1 and d["error_rate"] > 0 and d["inflight"] == 0
        assert d["latency_ewma_ms"] is not None and d["weight"] == 5
        assert by_model(gw, "other", "mock")["window"]["calls"] == 0
