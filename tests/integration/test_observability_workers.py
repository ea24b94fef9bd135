"""`aigw serve --workers 2`: one /metrics scrape counts the requests every worker served."""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.tenancy_support import MASTER, PRICED_MOCK, setup_key
from tests.integration.worker_conns import call, serving_workers
from tests.support.serve_process import start_serve, stop_serve, wait_live


def requests_total(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "aigw_requests_total" and s.labels.get("model") == "mock")


def test_metrics_sum_every_worker(tmp_path: Path) -> None:
    proc, url = start_serve(tmp_path, "--workers", "2")
    try:
        wait_live(url, proc)
        n = 40
        for _ in range(n):  # new connections: the kernel spreads them over both workers
            r = requests.post(url + "/v1/chat/completions", timeout=5, headers={"connection": "close"},
                              json={"model": "mock", "messages": [{"role": "user", "content": "hi"}]})
            assert r.status_code == 200
        deadline = time.monotonic() + 5
        while (seen := requests_total(url)) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        assert seen == n
        assert requests_total(url) == n  # a second scrape (maybe another worker) says the same
    finally:
        stop_serve(proc)


def _breaker_state(conn: http.client.HTTPConnection, deployment: str) -> float | None:
    conn.request("GET", "/metrics")
    resp = conn.getresponse()
    text = resp.read().decode()
    return next((s.value for f in text_string_to_metric_families(text) for s in f.samples
                 if s.name == "aigw_circuit_breaker_state" and s.labels.get("deployment") == deployment), None)


def test_a_breaker_that_opened_in_a_worker_shows_whichever_worker_is_scraped(tmp_path: Path) -> None:
    """A scraper keeps its connection, so one worker answers every scrape: the breaker a failing deployment
    opened in another worker must show all the same (the gauge is the max over the workers)."""
    failing = {"name": "mock-down", "provider": "mock", "mock": {"fail_rate": 1.0, "fail_kind": "unavailable"}}
    config = {"server": {"master_key": MASTER}, "database_url": f"sqlite:///{tmp_path}/aigw.db",
              "models": [PRICED_MOCK, failing], "routing": {"*": {"num_retries": 0}},
              "circuit_breaker": {"failures": 3, "cooldown_s": 60}}
    with serving_workers(tmp_path, config, 2) as pool:
        key = setup_key(pool.admin(), "breaker-metrics")["key"]
        pool.connect_all(key)
        (_, calls), (_, scrapes) = list(pool.conns.items())
        deployment = "mock-down/mock/mock-down#1"
        assert _breaker_state(scrapes, deployment) == 0  # closed everywhere
        statuses = [call(calls, key, "mock-down")[0] for _ in range(4)]
        assert statuses[-1] == 503, statuses  # the breaker of the worker that served them is open
        assert _breaker_state(scrapes, deployment) == 2
