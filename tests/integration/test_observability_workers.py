"""`aigw serve --workers 2`: one /metrics scrape counts the requests every worker served."""

from __future__ import annotations

import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

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
