"""Three gateway processes, one Redis of the test's own, one PostgreSQL schema: a Redis stall in the middle of
budgeted load overruns no budget, and once Redis answers again the settled spend is the ledger's (issue #4)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import redis as redis_sync
import requests
import yaml

from aigw.cli.admin_client import AdminClient
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.tenancy_support import MASTER, chat_body, setup_key
from tests.support.serve_process import CLEARED, start_serve, stop_serve, wait_live

PREFIX = "aigw-test:replica-stall:"
BUDGET_NANO = 700_000_000  # 70 cents: 50 calls of this test's (1.4 cents each)
WORKERS = 6
STALL_AFTER_OK = 12  # Redis stops once this many calls succeeded: well inside the budget
STALL_S = 1.6


async def _call(session: aiohttp.ClientSession, url: str, key: str, body: dict[str, Any]) -> tuple[int, str]:
    async with session.post(url + "/v1/chat/completions", json=body,
                            headers={"authorization": f"Bearer {key}"}) as resp:
        out = await resp.json(content_type=None)
        error = out.get("error") or {}
        return resp.status, str(error.get("code") or error.get("type") or "")


async def _load(urls: list[str], key: str, redis_pid: int) -> list[tuple[int, str]]:
    """WORKERS callers round-robin over the replicas until the budget refuses them (bounded in calls and time);
    Redis is SIGSTOPped for STALL_S once STALL_AFTER_OK calls succeeded, with calls in flight."""
    outcomes: list[tuple[int, str]] = []
    body = chat_body("stall me", max_tokens=10, model="oai")
    deadline = time.monotonic() + 12
    under_way, stalled = asyncio.Event(), asyncio.Event()

    async def stall() -> None:
        await asyncio.wait_for(under_way.wait(), timeout=8)
        os.kill(redis_pid, signal.SIGSTOP)
        try:
            await asyncio.sleep(STALL_S)
        finally:
            os.kill(redis_pid, signal.SIGCONT)
            stalled.set()

    async def worker(w: int, session: aiohttp.ClientSession) -> None:
        for i in range(400):
            if time.monotonic() > deadline:
                return
            status, code = await _call(session, urls[(w + i) % len(urls)], key, body)
            outcomes.append((status, code))
            if sum(s == 200 for s, _ in outcomes) >= STALL_AFTER_OK:
                under_way.set()
            if status == 429 and stalled.is_set():
                return  # the budget is spent
            if status != 200:
                await asyncio.sleep(0.05)  # a refusal is fast: do not spin on it

    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=10)) as session:
        trouble = asyncio.get_running_loop().create_task(stall())
        try:
            await asyncio.gather(*(worker(w, session) for w in range(WORKERS)))
        finally:
            await trouble
    return outcomes


def _gate_settled(urls: list[str], limit_s: float = 8) -> None:
    """Every replica's gate uses Redis again and owes no settle."""
    deadline = time.monotonic() + limit_s
    for url in urls:
        while True:
            gate = requests.get(url + "/health/ready", timeout=5).json()["checks"]["gate"]
            if gate["status"] == "ok" and "0 settles owed" in gate["detail"]:
                break
            assert time.monotonic() < deadline, (url, gate)
            time.sleep(0.1)


def _settles_through_the_stall(urls: list[str]) -> float:
    """Settles that failed (timed out) or were skipped (owed) on all replicas."""
    total = 0.0
    for url in urls:
        for line in requests.get(url + "/metrics", timeout=5).text.splitlines():
            if line.startswith(('aigw_store_errors_total{operation="leave",store="budget"}',
                                'aigw_store_errors_total{operation="leave_skipped",store="budget"}')):
                total += float(line.rsplit(" ", 1)[1])
    return total


async def _ledger(dsn: str, schema: str, key_id: str) -> tuple[int, int, int, int]:
    """(rows, rows with 200, sum of cost_nano, largest cost_nano) of the key's ledger rows."""
    conn = await asyncpg.connect(dsn, server_settings={"search_path": schema})
    try:
        row = await conn.fetchrow("SELECT count(*), count(*) FILTER (WHERE status = 200), "
                                  "coalesce(sum(cost_nano), 0), coalesce(max(cost_nano), 0) "
                                  "FROM spend_ledger WHERE key_id = $1", key_id)
    finally:
        await conn.close()
    return int(row[0]), int(row[1]), int(row[2]), int(row[3])


def test_a_redis_stall_under_load_on_three_replicas_overruns_no_budget_and_settles_to_the_ledger(
        own_redis: tuple[str, subprocess.Popen[bytes]], postgres_schema: tuple[str, str], tmp_path: Path) -> None:
    redis_url, redis_proc = own_redis
    dsn, schema = postgres_schema
    database_url = f"{dsn}?search_path={schema}"
    upstream = FakeOpenAI("sk-oai").start()
    upstream.faults.always(Fault.slow(headers=0.2))  # calls are in flight when Redis stops
    procs: list[subprocess.Popen[bytes]] = []
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
        upgrade = subprocess.run([sys.executable, "-m", "aigw", "db", "upgrade", "--database-url", database_url],
                                 env=env, capture_output=True, timeout=60, check=False)
        assert upgrade.returncode == 0, upgrade.stderr
        config = {
            "server": {"master_key": MASTER}, "database_url": database_url,
            "redis_url": redis_url, "redis_prefix": PREFIX,
            "models": [{"name": "oai", "provider": "openai", "model": "gpt-4o-mini", "api_base": upstream.base_url,
                        "api_key": "sk-oai", "prices": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}}],
            "routing": {"*": {"num_retries": 0}},
            "tenancy": {"ledger": {"flush_interval_s": 0.05}},
        }
        (tmp_path / "aigw.yaml").write_text(yaml.safe_dump(config))
        urls = []
        for _ in range(3):
            proc, url = start_serve(tmp_path, "--config", str(tmp_path / "aigw.yaml"), "--log-level", "warning")
            procs.append(proc)
            urls.append(url)
        for proc, url in zip(procs, urls, strict=True):
            wait_live(url, proc)
        key = setup_key(AdminClient(urls[0], MASTER), "stall-tenant", budget_usd=BUDGET_NANO / 1e9,
                        budget_period="total")

        outcomes = asyncio.run(_load(urls, key["key"], redis_proc.pid))

        statuses = {s for s, _ in outcomes}
        ok = sum(s == 200 for s, _ in outcomes)
        assert statuses <= {200, 429, 503}, outcomes  # no 500, nothing undocumented
        assert {c for s, c in outcomes if s == 429} == {"budget_exceeded"}, outcomes  # and the budget did end it
        assert 503 in statuses, [s for s, _ in outcomes]  # the stall was felt: budgets failed closed
        _gate_settled(urls)
        deadline = time.monotonic() + 8
        while (ledger := asyncio.run(_ledger(dsn, schema, key["id"])))[:2] != (len(outcomes), ok):
            assert time.monotonic() < deadline, (ledger, len(outcomes), ok)  # every outcome has its row
            time.sleep(0.1)
        spent_nano, one_call = ledger[2:]
        assert spent_nano <= BUDGET_NANO + one_call, (spent_nano, one_call)
        client = redis_sync.Redis.from_url(redis_url)
        try:
            base = f"{PREFIX}bg:key:{key['id']}:total"
            settled = int(client.get(base + ":settled") or 0)
            assert settled == spent_nano, (settled, spent_nano)  # owed settles sent, timed-out ones ran on SIGCONT
            assert int(client.get(base + ":reserved") or 0) == 0 and client.zcard(base + ":leases") == 0
        finally:
            client.close()
    finally:
        for proc in procs:
            stop_serve(proc, grace_s=10)
        upstream.stop()
