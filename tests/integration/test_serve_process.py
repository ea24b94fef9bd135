"""`aigw serve` as a newcomer runs it: a real process on the embedded defaults."""

from __future__ import annotations

import signal
from pathlib import Path

import openai
import pytest

from tests.support.serve_process import start_serve, stop_serve, wait_live


@pytest.mark.parametrize("http", ["aigw", "uvicorn"])
def test_serve_starts_on_defaults_answers_and_stops_cleanly(tmp_path: Path, http: str) -> None:
    extra = []
    if http != "aigw":  # the fallback server, chosen in config
        (tmp_path / "aigw.yaml").write_text(f"server: {{http: {http}}}\n")
        extra = ["--config", "aigw.yaml"]
    proc, url = start_serve(tmp_path, *extra)
    try:
        wait_live(url, proc, limit_s=15)
        client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0)
        raw = client.chat.completions.with_raw_response.create(model="mock",
                                                               messages=[{"role": "user", "content": "hello"}])
        assert raw.parse().choices[0].message.content
        assert "server" not in raw.headers and "date" in raw.headers  # the server software is not advertised
    finally:
        stop_serve(proc, grace_s=15)
    # the server shuts down gracefully, then re-raises the signal it caught: exit by SIGTERM, no traceback
    assert proc.returncode in (0, -signal.SIGTERM)
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")
