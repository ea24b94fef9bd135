"""`aigw serve` as a newcomer runs it: a real process on the embedded defaults."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import openai
import pytest
import requests

from tests.support.servers import free_port


def _wait_ready(url: str, proc: subprocess.Popen[bytes], limit_s: float) -> float:
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


@pytest.mark.parametrize("http", ["aigw", "uvicorn"])
def test_serve_starts_on_defaults_answers_and_stops_cleanly(tmp_path: Path, http: str) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIGW_", "OPENAI_", "ANTHROPIC_", "AZURE_"))}
    extra = []
    if http != "aigw":  # the fallback server, chosen in config
        (tmp_path / "aigw.yaml").write_text(f"server: {{http: {http}}}\n")
        extra = ["--config", "aigw.yaml"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "aigw", "serve", "--port", str(port), *extra],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_ready(url, proc, limit_s=15)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="mock",
                                                               messages=[{"role": "user", "content": "hello"}])
        assert raw.parse().choices[0].message.content
        assert "server" not in raw.headers and "date" in raw.headers  # the server software is not advertised
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    # the server shuts down gracefully, then re-raises the signal it caught: exit by SIGTERM, no traceback
    assert proc.returncode in (0, -signal.SIGTERM)
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")
