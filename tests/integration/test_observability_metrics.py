"""/metrics moves as traffic flows: success, upstream error, stream, rejection, cache hit, fallback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from aigw.cli.admin_client import AdminClient
from aigw.pipeline.stages.registry import STAGES
from tests.integration.obs_stages import CACHED, DENY
from tests.integration.tenancy_support import setup_key
from tests.support.gateway import RunningGateway, running_gateway

MASTER = "sk-master-obs-metrics-0001"
AUTH = {"Authorization": f"Bearer {MASTER}"}


def config(tmp_path: Any, **extra: Any) -> dict[str, Any]:
    return {
        "server": {"master_key": MASTER},
        "database_url": f"sqlite:///{tmp_path}/gw.db",
        "models": [
            {"name": "good", "provider": "mock"},
            {"name": "broken", "provider": "mock", "fail_rate": 1.0, "mock": {"fail_kind": "unavailable"}},
        ],
        "pipeline": ["observe", "test_cache", "test_deny"],
        **extra,
    }


@pytest.fixture
def test_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(STAGES, "test_deny", "tests.integration.obs_stages:build_deny")
    monkeypatch.setitem(STAGES, "test_cache", "tests.integration.obs_stages:build_cache")


@pytest.fixture
def gw(tmp_path: Any, test_stages: None) -> Iterator[RunningGateway]:
    with running_gateway(config(tmp_path)) as gw:
        yield gw


def scrape(gw: RunningGateway) -> dict[str, list[tuple[dict[str, str], float]]]:
    r = requests.get(gw.url + "/metrics", timeout=5)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(r.text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items()))


def chat(gw: RunningGateway, model: str, headers: dict[str, str] | None = None, **body: Any) -> requests.Response:
    payload = {"model": model, "messages": [{"role": "user", "content": "hello there"}], **body}
    return requests.post(gw.v1 + "/chat/completions", json=payload, headers={**AUTH, **(headers or {})},
                         timeout=10)


def test_success_counts_request_latency_tokens(gw: RunningGateway) -> None:
    before = scrape(gw)
    assert chat(gw, "good").status_code == 200
    after = scrape(gw)
    labels = {"model": "good", "provider": "mock", "status": "200", "api": "openai"}
    assert total(after, "aigw_requests_total", **labels) - total(before, "aigw_requests_total", **labels) == 1
    assert total(after, "aigw_request_duration_seconds_count", model="good", outcome="ok") == 1
    assert total(after, "aigw_upstream_duration_seconds_count", model="good") == 1
    assert total(after, "aigw_gateway_overhead_seconds_count", model="good") == 1
    assert total(after, "aigw_tokens_total", model="good", kind="input") > 0
    assert total(after, "aigw_tokens_total", model="good", kind="output") > 0
    assert total(after, "aigw_requests_in_flight") == 0


def test_stream_observes_time_to_first_token(gw: RunningGateway) -> None:
    r = chat(gw, "good", stream=True)
    assert r.status_code == 200 and "[DONE]" in r.text
    deadline = time.monotonic() + 3  # the client may see the last byte just before the gateway counts it
    while total(after := scrape(gw), "aigw_requests_total", model="good") < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert total(after, "aigw_time_to_first_token_seconds_count", model="good") == 1
    assert total(after, "aigw_tokens_total", model="good", kind="output") > 0


def test_upstream_error_counts_with_its_status(gw: RunningGateway) -> None:
    assert chat(gw, "broken").status_code == 503
    after = scrape(gw)
    assert total(after, "aigw_requests_total", model="broken", status="503") == 1
    assert total(after, "aigw_request_duration_seconds_count", model="broken", outcome="error") == 1
    assert total(after, "aigw_rejections_total") == 0  # the upstream failed; the gateway refused nothing


def test_gateway_rejection_is_a_rejection(gw: RunningGateway) -> None:
    r = chat(gw, "good", headers={DENY: "1"})
    assert r.status_code == 429
    after = scrape(gw)
    assert total(after, "aigw_rejections_total", model="good", reason="rate_limited") == 1
    assert total(after, "aigw_requests_total", model="good", status="429", provider="none") == 1
    assert total(after, "aigw_upstream_duration_seconds_count", model="good") == 0


def test_cache_hit_and_miss(gw: RunningGateway) -> None:
    assert chat(gw, "good", headers={CACHED: "1"}).json()["choices"][0]["message"]["content"] == "cached"
    assert chat(gw, "good").status_code == 200
    after = scrape(gw)
    assert total(after, "aigw_cache_lookups_total", model="good", result="hit") == 1
    assert total(after, "aigw_cache_lookups_total", model="good", result="miss") == 1
    assert total(after, "aigw_requests_total", model="good", provider="cache", status="200") == 1
    assert total(after, "aigw_tokens_total", model="good", provider="cache", kind="input") == 3


def test_unknown_model_does_not_add_a_series(gw: RunningGateway) -> None:
    assert chat(gw, "no-such-model-xyz").status_code == 404
    after = scrape(gw)
    assert total(after, "aigw_requests_total", model="other", status="404") == 1
    assert not any(lab.get("model") == "no-such-model-xyz" for lab, _ in after["aigw_requests_total"])


def test_fallback_and_retries_are_counted(tmp_path: Any, test_stages: None) -> None:
    cfg = config(tmp_path, routing={"broken": {"fallbacks": ["good"], "num_retries": 1, "backoff_s": 0}})
    with running_gateway(cfg) as gw:
        r = chat(gw, "broken")
        assert r.status_code == 200
        after = scrape(gw)
    assert total(after, "aigw_fallbacks_total", model="broken", fallback_model="good") == 1
    assert total(after, "aigw_retries_total", model="broken") >= 1
    assert total(after, "aigw_requests_total", model="broken", status="200") == 1


def test_a_rules_route_leaves_no_request_in_flight(tmp_path: Any, test_stages: None) -> None:
    """The gauge went up under the model asked for and down under the one a rule routed to: after three
    routed requests it showed 3 in flight for the one and -3 for the other, for good."""
    cfg = config(tmp_path, guardrails={"rules": [{"match": {"regex": "(?i)hello"}, "route": "good"}]})
    cfg["models"].append({"name": "big", "provider": "mock"})
    cfg["pipeline"].append("rules")
    with running_gateway(cfg) as gw:
        for _ in range(3):
            r = chat(gw, "big")
            assert r.status_code == 200 and r.headers["x-aigw-served-model"] == "good"
        after = scrape(gw)
    assert total(after, "aigw_requests_in_flight", model="big") == 0
    assert total(after, "aigw_requests_in_flight", model="good") == 0


def test_metrics_can_be_switched_off(tmp_path: Any, test_stages: None) -> None:
    with running_gateway(config(tmp_path, observability={"metrics": {"enabled": False}})) as gw:
        assert chat(gw, "good").status_code == 200
        assert requests.get(gw.url + "/metrics", timeout=5).status_code == 404


def test_metrics_can_require_the_master_key(tmp_path: Any, test_stages: None) -> None:
    with running_gateway(config(tmp_path, observability={"metrics": {"require_key": True}})) as gw:
        assert requests.get(gw.url + "/metrics", timeout=5).status_code == 401
        assert requests.get(gw.url + "/metrics", headers=AUTH, timeout=5).status_code == 200


def test_refused_keys_are_counted_without_growing_series(gw: RunningGateway) -> None:
    """An operator sees a client with a revoked or made-up key (or none): each 401 counts, under model=none."""
    key = setup_key(AdminClient(gw.url, MASTER), "obs-co")
    assert requests.post(f"{gw.url}/admin/keys/{key['id']}/revoke", headers=AUTH, timeout=5).status_code == 200
    before = scrape(gw)
    for secret in (key["key"], "sk-aigw-made-up-0001", ""):
        r = requests.post(gw.v1 + "/chat/completions", json={"model": "made-up", "messages": []},
                          headers={"Authorization": f"Bearer {secret}"} if secret else {}, timeout=10)
        assert r.status_code == 401
    after = scrape(gw)
    labels = {"model": "none", "provider": "none", "deployment": "none", "status": "401", "api": "openai"}
    assert total(after, "aigw_requests_total", **labels) - total(before, "aigw_requests_total", **labels) == 3
    assert total(after, "aigw_rejections_total", reason="auth") - total(before, "aigw_rejections_total",
                                                                        reason="auth") == 3
    assert not any(lab.get("model") == "made-up" for lab, _ in after["aigw_requests_total"])
