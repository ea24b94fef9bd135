"""A worker whose parent's counters (``aigw serve --workers N`` without Redis) cannot be reached: it keeps
serving under the failure policies (rate limits open, budgets closed by default: a 503 in the wire format,
never a hang), and /health/ready says the gate is degraded."""

from __future__ import annotations

import time
from pathlib import Path

import requests

from aigw.cli.admin_client import AdminClient
from aigw.stores.counter_host import CounterHost
from tests.integration.tenancy_support import MASTER, chat_body, gateway_config, setup_key
from tests.support.gateway import running_gateway


def _post(url: str, key: str) -> requests.Response:
    return requests.post(url + "/v1/chat/completions", json=chat_body("hi", max_tokens=5),
                      headers={"authorization": f"Bearer {key}"}, timeout=10)


def test_a_worker_without_its_parents_counters_follows_the_failure_policies(tmp_path: Path) -> None:
    host = CounterHost(60.0)
    host.start()
    cfg = gateway_config(tmp_path / "gw.db")
    cfg["server"]["counter_socket"] = host.path
    cfg["tenancy"]["store_retry_after_s"] = 5.0  # /health/ready is read within it
    try:
        with running_gateway(cfg) as gw:
            admin = AdminClient(gw.url, MASTER)
            limited = setup_key(admin, "host-down", rpm=2)["key"]
            budgeted = setup_key(admin, "host-down", budget_usd=5.0)["key"]
            assert [_post(gw.url, limited).status_code for _ in range(3)] == [200, 200, 429]  # through the host
            assert _post(gw.url, budgeted).status_code == 200
            assert "shared by the workers" in gw.ready()[1]["checks"]["gate"]["detail"]

            host.stop()  # the parent's counters are gone
            started = time.monotonic()
            assert _post(gw.url, limited).status_code == 200  # limits fail open
            refused = _post(gw.url, budgeted)  # budgets fail closed
            assert refused.status_code == 503, refused.text
            assert refused.json()["error"]["code"] == "store_unavailable" and refused.headers["retry-after"]
            assert time.monotonic() - started < 3.0
            status, body = gw.ready()
            assert status == 200 and body["checks"]["gate"]["status"] == "degraded", body
            assert "shared counters (parent process) failed" in body["checks"]["gate"]["detail"]
    finally:
        host.stop()
