"""A stalled Redis (SIGSTOPped, a server of the test's own): limits and budgets take their outage policies
at once instead of waiting the gate's timeout on every request, /health/ready says so, and once Redis
answers again the gate counts with it as before."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, chat_body, gateway_config, setup_key
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import free_port
from tests.support.services import start_own_redis, stop_own_redis


def _post(gw: RunningGateway, key: str) -> tuple[int, dict[str, str]]:
    req = urllib.request.Request(gw.v1 + "/chat/completions", json.dumps(chat_body("stall")).encode(),
                                 {"content-type": "application/json", "authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return r.status, dict(r.headers)
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers)


def _ready(gw: RunningGateway) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(gw.url + "/health/ready", timeout=5) as r:
            out: dict[str, Any] = json.loads(r.read())
    except urllib.error.HTTPError as err:
        out = json.loads(err.read())
    return out


def _timed(gw: RunningGateway, key: str, n: int) -> tuple[float, list[int]]:
    started = time.perf_counter()
    statuses = [_post(gw, key)[0] for _ in range(n)]
    return time.perf_counter() - started, statuses


def test_a_stalled_redis_costs_requests_no_timeout_each_and_shows_on_ready(tmp_path: Path) -> None:
    port = free_port()
    redis = start_own_redis(port)
    try:
        config = gateway_config(tmp_path / "gw.db", redis_url=f"redis://127.0.0.1:{port}/0",
                                redis_prefix="aigw-test:stall:",
                                tenancy={"ledger": {"flush_interval_s": 0.05}, "store_retry_after_s": 0.5})
        with running_gateway(config) as gw:
            admin = AdminClient(gw.url, MASTER)
            limited = setup_key(admin, "stall-co", rpm=1000)["key"]
            budgeted = setup_key(admin, "stall-co", budget_usd=100.0, budget_period="daily")["key"]
            assert _post(gw, limited)[0] == 200 and _post(gw, budgeted)[0] == 200  # keys cached, Redis used
            assert _ready(gw)["checks"]["gate"]["status"] == "ok"

            os.kill(redis.pid, signal.SIGSTOP)
            took, statuses = _timed(gw, limited, 20)
            assert statuses == [200] * 20  # limits fail open
            assert took < 2.5, took  # a 0.25 s timeout on each request's enter (and leave) would be 5-10 s
            took, statuses = _timed(gw, budgeted, 10)
            assert statuses == [503] * 10  # budgets fail closed
            assert took < 1.5, took
            check = _ready(gw)["checks"]["gate"]
            assert check["status"] == "degraded" and "budgets fail closed" in check["detail"], check
            with urllib.request.urlopen(gw.url + "/metrics", timeout=5) as r:
                metrics = r.read().decode()
            assert 'aigw_store_errors_total{operation="enter_skipped",store="limits"}' in metrics

            os.kill(redis.pid, signal.SIGCONT)
            deadline = time.monotonic() + 5
            while _ready(gw)["checks"]["gate"]["status"] != "ok":  # the window ends, a probe finds Redis
                assert time.monotonic() < deadline, "the gate never used Redis again"
                time.sleep(0.1)
            status, headers = _post(gw, limited)
            assert status == 200 and _post(gw, budgeted)[0] == 200
            # counted in Redis again, and the skipped requests took nothing (a request that timed out
            # may have landed all the same: a few at most, one per window)
            remaining = int(headers["x-ratelimit-remaining-requests"])
            assert 1000 - 2 - 5 <= remaining <= 1000 - 2, remaining
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(redis.pid, signal.SIGCONT)
        stop_own_redis(redis)


def test_a_revoked_keys_total_budget_counter_does_not_stay_in_redis_for_good(
        redis_isolated: tuple[str, str], tmp_path: Path) -> None:
    import redis as redis_sync

    url, prefix = redis_isolated
    with running_gateway(gateway_config(tmp_path / "gw.db", redis_url=url, redis_prefix=prefix)) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "revoke-co", budget_usd=5.0, budget_period="total")
        assert _post(gw, key["key"])[0] == 200
        client = redis_sync.Redis.from_url(url)
        try:
            settled = f"{prefix}bg:key:{key['id']}:total:settled"
            assert client.exists(settled) and client.ttl(settled) == -1  # a total budget never starts again
            admin.post(f"/admin/keys/{key['id']}/revoke", {})
            assert client.ttl(settled) > 0  # gone once a call in flight has had the time to settle
        finally:
            client.close()


def test_calls_that_end_in_a_stall_are_settled_when_redis_answers(tmp_path: Path) -> None:
    """Budgeted calls in flight when Redis stalls end in the skip window: their settles are owed, not lost.
    Once Redis answers, the settled spend equals the ledger's (every call's real cost) and no lease is left."""
    import redis as redis_sync

    port = free_port()
    redis = start_own_redis(port)
    prefix = "aigw-test:owed:"
    try:
        slow = {"name": "mock-slower", "provider": "mock", "latency_ms": 1200,
                "prices": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}}
        config = gateway_config(tmp_path / "gw.db", redis_url=f"redis://127.0.0.1:{port}/0", redis_prefix=prefix,
                                tenancy={"ledger": {"flush_interval_s": 0.05}, "store_retry_after_s": 2.5})
        config["models"].append(slow)
        with running_gateway(config) as gw:
            admin = AdminClient(gw.url, MASTER)
            key = setup_key(admin, "owed-co", budget_usd=100.0, budget_period="daily")
            assert _post(gw, key["key"])[0] == 200  # cached, and one settled call before the stall

            def slow_call(i: int) -> int:
                body = json.dumps({**chat_body(f"in flight {i}"), "model": "mock-slower"}).encode()
                req = urllib.request.Request(gw.v1 + "/chat/completions", body, {
                    "content-type": "application/json", "authorization": f"Bearer {key['key']}"})
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status

            with ThreadPoolExecutor(4) as pool:
                in_flight = [pool.submit(slow_call, i) for i in range(4)]
                time.sleep(0.4)  # entered: their leases are in Redis
                os.kill(redis.pid, signal.SIGSTOP)
                assert [_post(gw, key["key"])[0] for _ in range(2)] == [503, 503]  # two timeouts: the window
                assert [f.result() for f in in_flight] == [200] * 4  # they end in the window: settles owed
            check = _ready(gw)["checks"]["gate"]
            owed = re.search(r"(\d+) settles owed", check["detail"])
            # the four, and maybe a 503's own (its enter timed out: it may have landed, so it is settled)
            assert check["status"] == "degraded" and owed is not None and int(owed[1]) >= 4, check

            os.kill(redis.pid, signal.SIGCONT)
            deadline = time.monotonic() + 8
            while "0 settles owed" not in (check := _ready(gw)["checks"]["gate"])["detail"] \
                    or check["status"] != "ok":
                assert time.monotonic() < deadline, check
                time.sleep(0.1)
            spend = admin.get("/admin/spend", group_by="key", key=key["id"])["data"][0]
            client = redis_sync.Redis(port=port)
            try:
                base = next(k.decode() for k in client.scan_iter(f"{prefix}bg:key:{key['id']}:*:settled"))[
                    : -len(":settled")]
                settled = int(client.get(base + ":settled") or 0)
                assert settled == round(spend["cost_usd"] * 1e9) and settled > 0, (settled, spend)
                assert int(client.get(base + ":reserved") or 0) == 0 and client.zcard(base + ":leases") == 0
            finally:
                client.close()
            with urllib.request.urlopen(gw.url + "/metrics", timeout=5) as r:
                metrics = r.read().decode()
            assert f'aigw_gate_owed_settles_total{{outcome="replayed"}} {int(owed[1])}.0' in metrics, metrics
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(redis.pid, signal.SIGCONT)
        stop_own_redis(redis)


def test_a_threshold_crossed_by_a_settle_whose_answer_was_lost_still_alerts(tmp_path: Path) -> None:
    """A settle sent to a stalled Redis times out, then runs when Redis resumes: it crosses a threshold (the
    alert mark is set, so no later settle fires it), and the alert is raised once Redis answers again."""
    import redis as redis_sync

    port = free_port()
    redis = start_own_redis(port)
    prefix = "aigw-test:lost-alert:"
    try:
        slow = {"name": "mock-slower", "provider": "mock", "latency_ms": 800,
                "prices": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}}
        config = gateway_config(tmp_path / "gw.db", redis_url=f"redis://127.0.0.1:{port}/0", redis_prefix=prefix,
                                tenancy={"ledger": {"flush_interval_s": 0.05}, "alert_thresholds": [0.01]})
        config["models"].append(slow)
        with running_gateway(config) as gw:
            key = setup_key(AdminClient(gw.url, MASTER), "lost-alert-co", budget_usd=1.0, budget_period="daily")

            def slow_call() -> int:
                body = json.dumps({**chat_body("cross it"), "model": "mock-slower"}).encode()
                req = urllib.request.Request(gw.v1 + "/chat/completions", body, {
                    "content-type": "application/json", "authorization": f"Bearer {key['key']}"})
                with urllib.request.urlopen(req, timeout=10) as r:
                    return r.status

            with ThreadPoolExecutor(1) as pool:
                call = pool.submit(slow_call)
                time.sleep(0.4)  # entered: its lease is in Redis
                os.kill(redis.pid, signal.SIGSTOP)
                assert call.result() == 200  # its settle (~5 cents: past 1 % of $1) is sent, and times out
            time.sleep(0.3)
            os.kill(redis.pid, signal.SIGCONT)  # the settle runs now: the 1 % mark is set, its answer is lost
            client = redis_sync.Redis(port=port)
            try:
                deadline = time.monotonic() + 5
                while not list(client.scan_iter(f"{prefix}bg:key:{key['id']}:*:alert:*")):
                    assert time.monotonic() < deadline, "the settle never ran"
                    time.sleep(0.05)
            finally:
                client.close()
            deadline = time.monotonic() + 5
            while True:
                _ready(gw)  # probes Redis once the skip window is over
                with urllib.request.urlopen(gw.url + "/metrics", timeout=5) as r:
                    metrics = r.read().decode()
                if 'aigw_events_total{event="budget_alert"} 1.0' in metrics:
                    break
                assert time.monotonic() < deadline, "the 1 % alert was never raised"
                time.sleep(0.1)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(redis.pid, signal.SIGCONT)
        stop_own_redis(redis)
