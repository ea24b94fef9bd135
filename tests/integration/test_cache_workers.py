"""`aigw serve --workers 2` without Redis: each worker has its own memory cache, and a purge taken by one
worker reaches the other through the workers' shared purge log."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import requests
import yaml

from tests.fakes.openai_upstream import FakeOpenAI
from tests.support.serve_process import start_serve, stop_serve, wait_live

MASTER = "sk-master-workers"


def ask(url: str) -> str:
    """One question on a new connection (the kernel spreads connections over the workers)."""
    r = requests.post(url + "/v1/chat/completions", timeout=5,
                      headers={"connection": "close", "authorization": f"Bearer {MASTER}"},
                      json={"model": "m", "messages": [{"role": "user", "content": "the roadmap"}]})
    assert r.status_code == 200, r.text
    return r.headers["x-aigw-cache"]


def ask_until(url: str, done: Callable[[], bool], limit: int = 1000) -> None:
    for _ in range(limit):
        if done():
            return
        ask(url)
    assert done(), f"not done after {limit} questions"


def test_a_purge_taken_by_one_worker_empties_every_workers_memory_cache(tmp_path: Path) -> None:
    fake = FakeOpenAI("sk-up").start()
    config = tmp_path / "aigw.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"master_key": MASTER}, "database_url": f"sqlite:///{tmp_path}/aigw.db",
        "models": [{"name": "m", "provider": "openai", "model": "gpt-4o-mini", "api_base": fake.base_url,
                    "api_key": "sk-up"}],
        "cache": {"mode": "exact", "backend": "memory"},
    }))
    # warnings only: nobody reads the stderr pipe before the end
    proc, url = start_serve(tmp_path, "--config", str(config), "--workers", "2", "--log-level", "warning")
    try:
        wait_live(url, proc)
        ask_until(url, lambda: fake.traffic.requests == 2)  # each worker asked upstream once: both hold it
        assert all(ask(url) == "hit" for _ in range(10))
        r = requests.delete(url + "/admin/cache", headers={"authorization": f"Bearer {MASTER}"}, timeout=5)
        assert r.status_code == 200 and r.json()["deleted"] == 1  # the one entry of the worker that took it
        time.sleep(1.0)  # the other worker reads the log four times a second
        ask_until(url, lambda: fake.traffic.requests == 4)  # both ask upstream again: neither kept it
        assert all(ask(url) == "hit" for _ in range(10)) and fake.traffic.requests == 4
    finally:
        stop_serve(proc)
        fake.stop()
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")
