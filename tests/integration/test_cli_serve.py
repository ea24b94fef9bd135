"""`aigw serve` as an operator meets it: the real `aigw` entry point in a child process, on loopback."""

from __future__ import annotations

import os
import queue
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.support.serve_process import CLEARED, stop_serve

AIGW = str(Path(sys.executable).parent / "aigw")


def _spawn(cwd: Path, *args: str) -> tuple[subprocess.Popen[bytes], queue.Queue[str]]:
    """``aigw *args`` in ``cwd`` on a clean environment; its stderr lines arrive on the queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
    proc = subprocess.Popen([AIGW, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert proc.stderr is not None
        for raw in proc.stderr:
            lines.put(raw.decode(errors="replace"))

    threading.Thread(target=read, daemon=True).start()
    return proc, lines


def _line_with(lines: queue.Queue[str], proc: subprocess.Popen[bytes], text: str, limit_s: float = 30) -> str:
    seen: list[str] = []
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=0.2)
        except queue.Empty:
            if proc.poll() is not None:
                break
            continue
        seen.append(line)
        if text in line:
            return line
    raise AssertionError(f"no line with {text!r} in: {''.join(seen)}")


@pytest.mark.parametrize(("host", "workers"), [("127.0.0.1", "1"), ("127.0.0.1", "2"), ("::1", "1")])
def test_the_listening_line_names_a_url_that_answers(tmp_path: Path, host: str, workers: str) -> None:
    """With --port 0 the line said http://127.0.0.1:0 (the port asked for, not the one bound), and an IPv6 host
    came out as http://::1:4000, which no client parses: the line is the only way to learn where it listens."""
    (tmp_path / "aigw.yaml").write_text(f"database_url: sqlite:///{tmp_path}/aigw.db\nserver: {{host: '{host}'}}\n")
    proc, lines = _spawn(tmp_path, "serve", "--config", "aigw.yaml", "--port", "0", "--workers", workers)
    try:
        line = _line_with(lines, proc, "aigw listening on ")
        found = re.search(r"listening on (http://\S+)", line)
        assert found, line
        url = found.group(1)
        assert not url.endswith(":0"), line
        deadline = time.monotonic() + 20
        while True:  # the workers may take a moment to accept on the bound socket
            try:
                assert requests.get(url + "/health/live", timeout=2).status_code == 200
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
    finally:
        stop_serve(proc, grace_s=20)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_mistake_only_building_finds_is_one_line_with_any_number_of_workers(tmp_path: Path, workers: str) -> None:
    """With --workers 2 a guardrails rule's unknown key was announced "aigw listening on ...", then each worker
    printed a 25-line traceback and the exit was 3; with one worker the same file is one line and exit 2."""
    (tmp_path / "aigw.yaml").write_text(f"database_url: sqlite:///{tmp_path}/aigw.db\n"
                                        "guardrails:\n  rules: [{match: {regex: x}, respond: y, colour: red}]\n")
    proc = subprocess.run([AIGW, "serve", "--config", "aigw.yaml", "--port", "0", "--workers", workers], cwd=tmp_path,
                          env={k: v for k, v in os.environ.items() if not k.startswith(CLEARED)},
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr == "aigw.yaml: guardrails.rules[0].colour: unknown key 'colour'\n", proc.stderr
    assert not (tmp_path / "aigw.db").exists()
