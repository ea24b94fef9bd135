"""Budgets that fail open (``budget_on_store_error: open``): a call admitted while Redis was away took no
reservation, and its settle finds no lease, so its cost never reached the settled counter. Once Redis answers
again the counters must count it (from the ledger), or the budget is overrun by the outage's whole spend."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
import urllib.error
import urllib.request
from pathlib import Path

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, chat_body, chat_status, gateway_config, key_spend, setup_key
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import free_port
from tests.support.services import start_own_redis, stop_own_redis


def _post(gw: RunningGateway, key: str) -> int:
    return chat_status(gw, key, chat_body("open"))


def _gate(gw: RunningGateway) -> str:
    try:
        with urllib.request.urlopen(gw.url + "/health/ready", timeout=5) as r:
            return str(json.loads(r.read())["checks"]["gate"]["status"])
    except urllib.error.HTTPError as err:
        return str(json.loads(err.read())["checks"]["gate"]["status"])


def test_calls_admitted_open_in_an_outage_count_against_the_budget_once_redis_answers(tmp_path: Path) -> None:
    port = free_port()
    redis = start_own_redis(port)
    try:
        config = gateway_config(tmp_path / "gw.db", redis_url=f"redis://127.0.0.1:{port}/0",
                                redis_prefix="aigw-test:open:",
                                tenancy={"ledger": {"flush_interval_s": 0.05}, "store_retry_after_s": 0.5,
                                         "budget_on_store_error": "open"})
        with running_gateway(config) as gw:
            admin = AdminClient(gw.url, MASTER)
            key = setup_key(admin, "open-co", budget_usd=0.30, budget_period="daily")
            assert _post(gw, key["key"]) == 200  # cached; ~$0.046 a call
            one = key_spend(admin, key["id"])["cost_usd"]

            os.kill(redis.pid, signal.SIGSTOP)
            assert [_post(gw, key["key"]) for _ in range(7)] == [200] * 7  # open: admitted unreserved
            os.kill(redis.pid, signal.SIGCONT)
            spent = key_spend(admin, key["id"], requests=8)["cost_usd"]
            assert spent == 8 * one and spent > 0.30  # the outage took the budget past its end

            deadline = time.monotonic() + 5
            while _gate(gw) != "ok":
                assert time.monotonic() < deadline, "the gate never used Redis again"
                time.sleep(0.1)
            time.sleep(2.0)  # the ledger has the rows; the counters catch up within three checks (1.5 s)
            assert [_post(gw, key["key"]) for _ in range(3)] == [429] * 3  # spent: refused, not admitted again
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(redis.pid, signal.SIGCONT)
        stop_own_redis(redis)
