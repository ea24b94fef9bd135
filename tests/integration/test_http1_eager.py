"""aigw's own server as clients meet it over real sockets: requests answered at once, pipelined, or long."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import openai
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, PRICED_MOCK, chat_body, gateway_config, setup_key
from tests.integration.test_client_gone import VERY_SLOW, _leave_early
from tests.integration.test_observability_tracing import by_kind, fake, traced
from tests.support.gateway import RunningGateway, running_gateway

__all__ = ["fake", "traced"]  # the tracing tests' fixtures, used here


def test_a_client_gone_after_sending_a_long_prompt_frees_its_slot_and_is_a_499(tmp_path: Path) -> None:
    """A body over the server's 64 KiB buffer paused reading; the client leaving must still be heard."""
    config = gateway_config(tmp_path / "gw.db")
    config["models"] = [PRICED_MOCK, VERY_SLOW]
    with running_gateway(config) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "long-prompt-co", max_parallel=1)
        port = int(gw.url.rsplit(":", 1)[1])
        _leave_early(port, key["key"], {**chat_body("long " * 14_000), "model": "very-slow"})  # ~70 kB
        started = time.monotonic()
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        client.chat.completions.create(**chat_body("next"))  # the one slot is free again
        assert time.monotonic() - started < 2  # not after the 3 s the abandoned call would have taken
        deadline = time.monotonic() + 5
        while True:
            rows = admin.get("/admin/spend", group_by="key", key=key["id"])["data"]
            if rows and rows[0]["requests"] >= 2:
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.05)
        assert (rows[0]["requests"], rows[0]["errors"]) == (2, 1)  # the abandoned call, as a 499


def test_pipelined_requests_each_start_a_trace_of_their_own(
        traced: tuple[RunningGateway, InMemorySpanExporter]) -> None:
    """The request before it had its span current when it answered: that span is not the next one's parent."""
    gw, exporter = traced
    body = json.dumps({"model": "oai", "messages": [{"role": "user", "content": "trace me"}]}).encode()
    one = (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
           b"content-length: %d\r\n\r\n%b" % (len(body), body))
    port = int(gw.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(one * 3 + b"GET /health/live HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        answers = b""
        while chunk := sock.recv(65536):
            answers += chunk
    assert answers.count(b"HTTP/1.1 200 OK") == 4
    deadline = time.monotonic() + 5
    while len(servers := by_kind(exporter.get_finished_spans(), SpanKind.SERVER)) < 3:
        assert time.monotonic() < deadline, servers
        time.sleep(0.02)
    assert [span.parent for span in servers] == [None, None, None]
    assert len({span.context.trace_id for span in servers}) == 3
