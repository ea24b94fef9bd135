"""A full Redis (``maxmemory`` reached under ``noeviction``, a server of the test's own) with the gate's skip
window off (``store_retry_after_s: 0``): the settles it refuses never ran, so they are kept and sent once it
has room, and the settled spend in Redis ends at the ledger's."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, chat_body, chat_status, gateway_config, key_spend, setup_key
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import free_port
from tests.support.services import fill_redis, make_room, start_own_redis, stop_own_redis


def _post(gw: RunningGateway, key: str, model: str = "") -> int:
    return chat_status(gw, key, {**chat_body("full"), **({"model": model} if model else {})})


def _gate(gw: RunningGateway) -> dict[str, Any]:
    gate: dict[str, Any] = gw.ready()[1]["checks"]["gate"]
    return gate


def test_with_the_window_off_settles_a_full_redis_refused_are_sent_once_it_has_room(tmp_path: Path) -> None:
    import redis as redis_sync

    port = free_port()
    redis = start_own_redis(port)
    url, prefix = f"redis://127.0.0.1:{port}/0", "aigw-test:full-owed:"
    try:
        slow = {"name": "mock-slower", "provider": "mock", "latency_ms": 1200,
                "prices": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}}
        config = gateway_config(tmp_path / "gw.db", redis_url=url, redis_prefix=prefix,
                                tenancy={"ledger": {"flush_interval_s": 0.05}, "store_retry_after_s": 0})
        config["models"].append(slow)
        with running_gateway(config) as gw:
            admin = AdminClient(gw.url, MASTER)
            # a tpm limit too: the settle's first write is then a HINCRBY, which a full Redis refuses (the
            # lease's ZREM it allows, and a script that has written goes on: a budget alone settles)
            key = setup_key(admin, "full-co", budget_usd=100.0, budget_period="daily", tpm=1_000_000)
            assert _post(gw, key["key"]) == 200  # cached, and one settled call before Redis fills

            with ThreadPoolExecutor(4) as pool:
                in_flight = [pool.submit(_post, gw, key["key"], "mock-slower") for _ in range(4)]
                time.sleep(0.4)  # entered: their leases are in Redis
                fill_redis(url)
                assert _post(gw, key["key"]) == 503  # refused by Redis: budgets fail closed
                assert [f.result() for f in in_flight] == [200] * 4  # their settles are refused: kept
            gate = _gate(gw)
            owed = re.search(r"(\d+) settles owed", gate["detail"])
            assert owed is not None and int(owed[1]) == 4, gate
            # what the operator sees: the gate degraded, and why (before, "ok" and only the owed count)
            assert gate["status"] == "degraded" and "out of memory" in gate["detail"], gate

            make_room(url)
            deadline = time.monotonic() + 8
            while "0 settles owed" not in (check := _gate(gw))["detail"]:  # the health check probes and sends
                assert time.monotonic() < deadline, check
                time.sleep(0.1)
            assert check["status"] == "ok", check
            spend = key_spend(admin, key["id"], 6)  # once the ledger's rows are in (written off the request path)
            assert spend["requests"] == 6, spend
            client = redis_sync.Redis(port=port)
            try:
                base = next(k.decode() for k in client.scan_iter(f"{prefix}bg:key:{key['id']}:*:settled"))[
                    : -len(":settled")]
                settled = int(client.get(base + ":settled") or 0)
                assert settled == spend["cost_nano"] and settled > 0, (settled, spend)
                assert int(client.get(base + ":reserved") or 0) == 0 and client.zcard(base + ":leases") == 0
            finally:
                client.close()
            with urllib.request.urlopen(gw.url + "/metrics", timeout=5) as r:
                metrics = r.read().decode()
            assert 'aigw_gate_owed_settles_total{outcome="replayed"} 4.0' in metrics, metrics
    finally:
        stop_own_redis(redis)
