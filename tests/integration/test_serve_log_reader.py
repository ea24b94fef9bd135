"""`aigw serve` keeps answering when nobody reads its stderr: the log pipe fills, the requests go on."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from tests.support.serve_process import start_serve, stop_serve, wait_live


def test_a_full_log_pipe_does_not_stop_the_gateway(tmp_path: Path) -> None:
    proc, url = start_serve(tmp_path)  # info level: a line per request into a stderr pipe nobody reads
    try:
        wait_live(url, proc)
        with requests.Session() as http:
            started = time.monotonic()
            for i in range(1500):  # ~250 lines fill the 64 KB pipe; the event loop used to stop right there
                r = http.post(url + "/v1/chat/completions", timeout=5,
                              json={"model": "mock", "messages": [{"role": "user", "content": f"question {i}"}]})
                assert r.status_code == 200
        assert time.monotonic() - started < 60
    finally:
        stop_serve(proc, grace_s=20)
    assert proc.returncode is not None
