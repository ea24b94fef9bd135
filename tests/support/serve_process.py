"""`aigw serve` as a real child process on a loopback port: started on a clean environment, stopped by
SIGTERM (killed only if it outlives the grace)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.servers import free_port

CLEARED = ("AIGW_", "OPENAI_", "ANTHROPIC_", "AZURE_", "PROMETHEUS_")  # nothing of the caller's set-up leaks in


def start_serve(cwd: Path, *args: str) -> tuple[subprocess.Popen[bytes], str]:
    """``python -m aigw serve --port P *args`` in ``cwd``; returns the process and its base URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
    proc = subprocess.Popen([sys.executable, "-m", "aigw", "serve", "--port", str(port), *args],
                            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, f"http://127.0.0.1:{port}"


def wait_live(url: str, proc: subprocess.Popen[bytes], limit_s: float = 20) -> float:
    """Seconds until ``/health/live`` answered 200; fails with the server's stderr if it exits first."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        if proc.poll() is not None:
            raise AssertionError(f"aigw exited early: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if requests.get(url + "/health/live", timeout=0.5).status_code == 200:
                return time.monotonic() - started
        except requests.ConnectionError:
            time.sleep(0.05)
    raise AssertionError("aigw did not answer in time")


def stop_serve(proc: subprocess.Popen[bytes], grace_s: float = 40) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
