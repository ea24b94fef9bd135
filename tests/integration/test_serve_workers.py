"""`aigw serve --workers N` on aigw's own server: workers share the socket, a dead one is replaced,
SIGTERM stops them all."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import requests

from tests.support.serve_process import start_serve, stop_serve, wait_live


def children(pid: int) -> list[int]:
    """Live, non-zombie children of ``pid`` (Linux /proc)."""
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    alive = []
    for child in map(int, listed):
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(child)
    return alive


def workers_of(pid: int) -> list[int]:
    return [c for c in children(pid) if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]


def ask(url: str) -> int:
    r = requests.post(url + "/v1/chat/completions", timeout=5, headers={"connection": "close"},
                      json={"model": "mock", "messages": [{"role": "user", "content": "hi"}]})
    return r.status_code


def wait_for(check: object, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_killed_worker_is_replaced_and_sigterm_stops_every_worker(tmp_path: Path) -> None:
    proc, url = start_serve(tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(workers_of(proc.pid)) == 2, 20)
        wait_live(url, proc)
        first, second = workers_of(proc.pid)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(workers_of(proc.pid)) == 2 and first not in workers_of(proc.pid), 20)
        assert second in workers_of(proc.pid)
        wait_for(lambda: all(ask(url) == 200 for _ in range(10)), 20)  # whichever worker takes a connection
        survivors = workers_of(proc.pid)
    finally:
        stop_serve(proc)
    assert proc.returncode in (0, -signal.SIGTERM)
    assert not [pid for pid in survivors if Path(f"/proc/{pid}").exists()]  # stopped and reaped
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")

