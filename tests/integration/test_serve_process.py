"""`aigw serve` as a newcomer runs it: a real process on the embedded defaults."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import openai
import orjson
import pytest
import requests

from tests.support.serve_process import start_serve, stop_serve, wait_live


def test_a_database_that_cannot_be_opened_fails_the_start_in_one_line(tmp_path: Path) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]  # bound, never listening: connections are refused
    (tmp_path / "aigw.yaml").write_text(f"database_url: postgresql://aigw@127.0.0.1:{port}/none\n")
    proc, _ = start_serve(tmp_path, "--config", "aigw.yaml")
    try:
        proc.wait(timeout=30)
    finally:
        closed.close()
        stop_serve(proc, grace_s=5)
    err = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode == 3  # START_FAILED_EXIT
    # the database named as database_url gives it (a password would be masked)
    shown = f"the database postgresql://aigw@127.0.0.1:{port}/none cannot be opened (ConnectionRefusedError"
    assert shown in err and "Traceback" not in err, err


def test_sigterm_stops_a_start_that_waits_on_a_silent_database(tmp_path: Path) -> None:
    # a PostgreSQL address that accepts connections and never answers: the start waits on it (each open
    # has a timeout of its own); SIGTERM meanwhile must stop the process now, not after the waits
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    port = silent.getsockname()[1]
    (tmp_path / "aigw.yaml").write_text(f"database_url: postgresql://aigw@127.0.0.1:{port}/none\n")
    proc, _ = start_serve(tmp_path, "--config", "aigw.yaml")
    try:
        time.sleep(1.5)  # started, and waiting on the database
        assert proc.poll() is None
        began = time.monotonic()
        stop_serve(proc, grace_s=10)
        assert time.monotonic() - began < 3
        assert proc.returncode == -signal.SIGTERM
    finally:
        silent.close()


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
        with requests.Session() as http:  # HEAD as a load balancer sends it: the GET's head, no body, kept alive
            got = http.get(url + "/health/live", timeout=5)
            head = http.head(url + "/health/live", timeout=5)
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))
            assert "transfer-encoding" not in head.headers
            assert http.get(url + "/v1/models", timeout=5).status_code == 200
    finally:
        stop_serve(proc, grace_s=15)
    # the server shuts down gracefully, then re-raises the signal it caught: exit by SIGTERM, no traceback
    assert proc.returncode in (0, -signal.SIGTERM)
    assert b"Traceback" not in (proc.stderr.read() if proc.stderr else b"")


def test_an_answer_finished_before_sigterm_reaches_a_slow_reader_whole(tmp_path: Path) -> None:
    """The app's part is done, but the answer still sits in the socket's buffers (a client reading slowly):
    it leaves before the process ends, within the grace, instead of being cut where the buffers stood."""
    (tmp_path / "aigw.yaml").write_text(
        "models:\n  - name: emb\n    provider: mock\n    modes: [embeddings]\n    mock: {latency_ms: 300}\n")
    proc, url = start_serve(tmp_path, "--config", "aigw.yaml")
    try:
        wait_live(url, proc, limit_s=15)
        body = orjson.dumps({"model": "emb", "input": ["x"] * 300, "dimensions": 3072})  # ~20 MB of answer
        host, port = url.removeprefix("http://").split(":")
        client = socket.create_connection((host, int(port)))
        client.sendall(b"POST /v1/embeddings HTTP/1.1\r\nhost: t\r\ncontent-type: application/json\r\n"
                       b"content-length: %d\r\n\r\n%b" % (len(body), body))
        time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # while the request is in flight; then nothing is read for a while
        time.sleep(1.5)
        client.settimeout(10)
        received = b""
        while chunk := client.recv(1 << 20):
            received += chunk
        client.close()
        head, _, answer = received.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 ")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        assert len(answer) == length
        assert len(orjson.loads(answer)["data"]) == 300
    finally:
        stop_serve(proc, grace_s=15)
    assert proc.returncode in (0, -signal.SIGTERM)
