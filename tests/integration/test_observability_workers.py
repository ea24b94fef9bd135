"""`aigw serve --workers 2`: one /metrics scrape counts the requests every worker served."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.support.servers import free_port


def requests_total(url: str) -> float:
    text = requests.get(url + "/metrics", timeout=5).text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == "aigw_requests_total" and s.labels.get("model") == "mock")


def test_metrics_sum_every_worker(tmp_path: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AIGW_", "OPENAI_", "ANTHROPIC_", "AZURE_", "PROMETHEUS_"))}
    proc = subprocess.Popen([sys.executable, "-m", "aigw", "serve", "--port", str(port), "--workers", "2"],
                            cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if requests.get(url + "/health/live", timeout=0.5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "aigw did not start"
            time.sleep(0.1)
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
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
