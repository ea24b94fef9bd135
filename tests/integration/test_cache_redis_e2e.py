"""The Redis cache backend: shared by replicas, expiring, and harmless when Redis is slow or dies."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import redis as redis_sync

from tests.support.gateway import RunningGateway, running_gateway


def config(url: str, prefix: str, db: Path, **cache: Any) -> dict[str, Any]:
    """Redis backend; a generous timeout unless a test is about timeouts (a busy CI box is slow).
    Each gateway gets a ledger database of its own (no SQLite lock shared with other runs). Tenancy is
    on, as in production (its Redis key-version watch included)."""
    return {"redis_url": url, "redis_prefix": prefix, "database_url": f"sqlite:///{db}",
            "cache": {"mode": "exact", "backend": "redis", "timeout_ms": 500, "retry_after_s": 0.5, **cache}}


def post(gw: RunningGateway, text: str, headers: dict[str, str] | None = None) -> tuple[int, str | None, float]:
    body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": text}]}).encode()
    req = urllib.request.Request(gw.v1 + "/chat/completions", body, {"content-type": "application/json",
                                                                      **(headers or {})})
    started = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return r.status, r.headers.get("x-aigw-cache"), time.perf_counter() - started
    except urllib.error.HTTPError as err:
        return err.code, None, time.perf_counter() - started


def settle(gw: RunningGateway) -> None:
    gw.call(gw.app.state["pipeline"].stage("cache").flush())





def test_replicas_share_entries_through_redis(redis_isolated: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = redis_isolated
    with running_gateway(config(url, prefix, tmp_path / "a.db")) as a, \
            running_gateway(config(url, prefix, tmp_path / "b.db")) as b:
        assert post(a, "shared question")[1] == "miss"
        settle(a)
        assert post(b, "shared question")[1] == "hit"
        assert post(a, "shared question")[1] == "hit"
        assert post(b, "private", {"x-aigw-cache": "no-store"})[1] == "miss"
        settle(b)
        assert post(a, "private")[1] == "miss"


def test_redis_entries_expire(redis_isolated: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = redis_isolated
    with running_gateway(config(url, prefix, tmp_path / "gw.db")) as gw:
        post(gw, "fleeting", {"x-aigw-cache": "ttl=0.3"})
        settle(gw)
        assert post(gw, "fleeting")[1] == "hit"
        time.sleep(0.4)
        assert post(gw, "fleeting")[1] == "miss"


@pytest.mark.parametrize("near_ttl_s", [0, 30])
def test_redis_killed_mid_load_fails_no_request(own_redis: tuple[str, subprocess.Popen[bytes]],
                                                tmp_path: Path, near_ttl_s: float) -> None:
    url, proc = own_redis
    with running_gateway(config(url, "aigw-test:", tmp_path / "gw.db", timeout_ms=250,  # busy CI slack
                                near_ttl_s=near_ttl_s)) as gw:
        assert gw.ready()[1]["checks"]["cache"]["status"] == "ok"
        for i in range(20):
            post(gw, f"question {i}")
        settle(gw)

        def one(i: int) -> tuple[int, str | None, float]:
            if i == 150:
                proc.kill()
            return post(gw, f"question {i % 20}")

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(one, range(400)))
        proc.wait(timeout=10)
        assert {status for status, _, _ in results} == {200}
        assert {header for _, header, _ in results} <= {"hit", "miss"}
        assert any(header == "hit" for _, header, _ in results[:150])
        after = results[200:]
        assert max(d for _, _, d in after) < 1.0  # a dead backend never stalls a request
        if near_ttl_s:  # every question was asked here before: answered from the near copies
            assert all(header == "hit" for _, header, _ in after)
            assert post(gw, "a question Redis never saw")[1] == "miss"
        else:
            assert all(header == "miss" for _, header, _ in after)
        status, body = gw.ready()
        assert status == 200 and body["checks"]["cache"]["status"] == "degraded"
        assert gw.app.state["deps"].services["cache_stats"].backend_errors > 0


def test_paused_redis_costs_at_most_the_timeout(own_redis: tuple[str, subprocess.Popen[bytes]],
                                                tmp_path: Path) -> None:
    url, _ = own_redis
    with running_gateway(config(url, "aigw-test:", tmp_path / "gw.db", timeout_ms=50, near_ttl_s=0)) as gw:
        post(gw, "paused")
        settle(gw)
        assert post(gw, "paused")[1] == "hit"
        admin = redis_sync.Redis.from_url(url)
        try:
            admin.execute_command("CLIENT", "PAUSE", 1000, "ALL")
            status, header, took = post(gw, "paused")
            assert (status, header) == (200, "miss") and took < 0.5  # the 50 ms timeout, not the 1 s pause
            assert gw.ready()[1]["checks"]["cache"]["status"] == "degraded"
            admin.execute_command("CLIENT", "UNPAUSE")
        finally:
            admin.close()
        time.sleep(0.6)  # retry_after_s: then the backend is tried again
        for _ in range(20):  # the pooled connection that timed out is replaced on first use
            if post(gw, "paused")[1] == "hit":
                break
            time.sleep(0.05)
        else:
            pytest.fail("the cache did not come back after Redis did")


def delete_cache(gw: RunningGateway) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(gw.url + "/admin/cache", method="DELETE")
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_a_purge_on_one_replica_empties_redis_for_all(redis_isolated: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = redis_isolated
    with running_gateway(config(url, prefix, tmp_path / "a.db", near_ttl_s=0)) as a, \
            running_gateway(config(url, prefix, tmp_path / "b.db", near_ttl_s=0)) as b:
        post(a, "stale answer")
        settle(a)
        assert post(b, "stale answer")[1] == "hit"
        status, out = delete_cache(a)
        assert status == 200 and out["by_backend"]["redis"] >= 1
        assert post(b, "stale answer")[1] == "miss"
        keys = redis_sync.Redis.from_url(url)
        try:
            settle(b)
            assert len(list(keys.scan_iter(f"{prefix}cache:*"))) == 1  # b's new answer, nothing older
        finally:
            keys.close()


def test_a_purge_reaches_the_other_replicas_near_copies(redis_isolated: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = redis_isolated
    with running_gateway(config(url, prefix, tmp_path / "a.db", near_ttl_s=60)) as a, \
            running_gateway(config(url, prefix, tmp_path / "b.db", near_ttl_s=60)) as b:
        post(a, "stale answer")
        settle(a)
        assert post(b, "stale answer")[1] == "hit"  # b keeps a copy of the entry for up to 60 s from here on
        assert delete_cache(a)[0] == 200
        deadline = time.monotonic() + 5  # b reads the purge log four times a second
        while post(b, "stale answer")[1] == "hit":
            assert time.monotonic() < deadline, "b still answers from its copy of the purged entry"
            time.sleep(0.1)


def test_a_purge_while_redis_is_down_is_a_clear_503(own_redis: tuple[str, subprocess.Popen[bytes]],
                                                    tmp_path: Path) -> None:
    url, proc = own_redis
    with running_gateway(config(url, "aigw-test:", tmp_path / "gw.db")) as gw:
        post(gw, "kept")
        proc.kill()
        proc.wait(timeout=10)
        status, out = delete_cache(gw)
        assert status == 503 and out["error"]["type"] == "service_unavailable_error"
        assert "purge failed at the redis cache backend" in out["error"]["message"]
        assert post(gw, "after the outage")[0] == 200  # and the gateway serves on
