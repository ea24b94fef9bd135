"""Helpers for the tenancy tests: a gateway with a master key and priced mock models, and setup calls."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from click.testing import CliRunner, Result

from aigw.cli.admin_client import AdminClient
from aigw.cli.main import cli
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.services import RUN_ID, pg_execute, postgres_dsn

MASTER = "mk-test-master"
# $1000 / $2000 per million tokens: a mock call of ~10 prompt and ~20 completion tokens costs ~5 cents
PRICED_MOCK = {"name": "mock", "provider": "mock",
               "prices": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}}
OTHER_MOCK = {"name": "mock-large", "provider": "mock"}
SLOW_MOCK = {"name": "mock-slow", "provider": "mock", "latency_ms": 300}


def gateway_config(db_path: Path, **extra: Any) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "server": {"master_key": MASTER},
        "database_url": f"sqlite:///{db_path}",
        "models": [PRICED_MOCK, OTHER_MOCK, SLOW_MOCK],
        "tenancy": {"ledger": {"flush_interval_s": 0.05}},
    }
    cfg.update(extra)
    return cfg


@contextmanager
def gateway_on(database: str, tmp: Path, **extra: Any) -> Iterator[RunningGateway]:
    """``gateway_config``'s gateway on SQLite, or on PostgreSQL in a schema of its own (dropped afterwards)."""
    if database == "sqlite":
        with running_gateway(gateway_config(tmp / "gw.db", **extra)) as g:
            yield g
        return
    dsn, schema = postgres_dsn(), f"aigw_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    asyncio.run(pg_execute(dsn, f'CREATE SCHEMA "{schema}"'))
    try:
        cfg = gateway_config(tmp / "unused.db", database_url=f"{dsn}?search_path={schema}", **extra)
        cfg["tenancy"].update(migrate_on_start=True, ledger={"flush_interval_s": 0.05,
                                                             "spill_file": str(tmp / "spill.jsonl")})
        with running_gateway(cfg) as g:
            yield g
    finally:
        asyncio.run(pg_execute(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


def openai_gateway_config(db_path: Path, api_base: str, **model: Any) -> dict[str, Any]:
    """Tenancy on, one OpenAI deployment ``oai`` at ``api_base`` (upstream key ``sk-oai``), no retries."""
    config = gateway_config(db_path)
    config["models"] = [{"name": "oai", "provider": "openai", "model": "gpt-4o-mini", "api_base": api_base,
                         "api_key": "sk-oai", **model}]
    config["routing"] = {"*": {"num_retries": 0}}
    return config


def setup_key(admin: AdminClient, tenant: str, project: str = "web", **key: Any) -> dict[str, Any]:
    """Create (or reuse) tenant and project, then a key with the given fields; returns the key JSON."""
    try:
        t = admin.post("/admin/tenants", {"name": tenant})
    except Exception:
        t = admin.get(f"/admin/tenants/{tenant}")
    try:
        p = admin.post("/admin/projects", {"name": project, "tenant": t["id"]})
    except Exception:
        p = next(x for x in admin.get("/admin/projects", tenant=t["id"])["data"] if x["name"] == project)
    out: dict[str, Any] = admin.post("/admin/keys", {"project": p["id"], **key})
    return out


class SlowCall:
    """An admin call whose headers are sent now and its body later: the gateway looks the record up on the
    headers, then waits for the body (what a slow client, or one between two admin tools, does)."""

    def __init__(self, gw: RunningGateway, method: str, path: str, body: dict[str, object],
                 key: str = MASTER) -> None:
        parts = urlsplit(gw.url)
        self.body = json.dumps(body).encode()
        self.sock = socket.create_connection((parts.hostname, parts.port), timeout=10)
        head = (f"{method} {path} HTTP/1.1\r\nhost: {parts.netloc}\r\nauthorization: Bearer {key}\r\n"
                f"content-type: application/json\r\ncontent-length: {len(self.body)}\r\nconnection: close\r\n\r\n")
        self.sock.sendall(head.encode())
        time.sleep(0.3)  # the handler has read the record and waits for the body

    def finish(self) -> tuple[int, dict[str, Any]]:
        """Send the body; the answer's status and JSON body."""
        self.sock.sendall(self.body)
        answer = b""
        while chunk := self.sock.recv(65536):
            answer += chunk
        self.sock.close()
        head, _, body = answer.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), json.loads(body) if body.strip() else {}


def chat_body(text: str = "hello there", max_tokens: int = 20, **extra: Any) -> dict[str, Any]:
    return {"model": "mock", "messages": [{"role": "user", "content": text}], "max_tokens": max_tokens, **extra}


def chat_status(gw: RunningGateway, key: str, body: dict[str, Any]) -> int:
    """The status a chat call with ``key`` gets (the body read and dropped)."""
    req = urllib.request.Request(gw.v1 + "/chat/completions", json.dumps(body).encode(),
                                 {"content-type": "application/json", "authorization": f"Bearer {key}"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            r.read()
            return int(r.status)
    except urllib.error.HTTPError as err:
        return int(err.code)


def key_spend(admin: AdminClient, key_id: str, requests: int = 1) -> dict[str, Any]:
    """The spend report's row of ``key_id`` once ``requests`` of its ledger rows are in (they are written off
    the request path, in batches: the first batch may hold some of a burst's rows only)."""
    deadline = time.monotonic() + 5
    while True:
        rows = admin.get("/admin/spend", group_by="key", key=key_id)["data"]
        if rows and rows[0]["requests"] >= requests:
            return dict(rows[0])
        assert time.monotonic() < deadline, f"no ledger row for {key_id}"
        time.sleep(0.05)


def wait_ledger_rows(db: Path, key_id: str, expect: int, where: str = "true", limit_s: float = 10) -> int:
    """The key's rows in a SQLite ledger (those matching ``where``), polled until there are ``expect`` of them
    (or ``limit_s`` passed): the writer flushes off the request path, on its own clock.

    Why: a fixed sleep of a few flush intervals was too short on a loaded machine (CI failed on one)."""
    deadline = time.monotonic() + limit_s
    while True:
        with sqlite3.connect(db) as conn:
            n = int(conn.execute(f"SELECT count(*) FROM spend_ledger WHERE key_id = ? AND ({where})",
                                 (key_id,)).fetchone()[0])
        if n >= expect or time.monotonic() > deadline:
            return n
        time.sleep(0.02)


def run_cli(gw: RunningGateway, *args: str) -> Result:
    """``aigw *args`` against ``gw`` with the master key, as a user's shell would run it (AIGW_URL, AIGW_MASTER_KEY)."""
    return CliRunner().invoke(cli, list(args), env={"AIGW_URL": gw.url, "AIGW_MASTER_KEY": MASTER})


def cli_json(gw: RunningGateway, *args: str) -> Any:
    """``aigw *args --json``, which must succeed: its JSON."""
    result = run_cli(gw, *args, "--json")
    assert result.exit_code == 0 and result.exception is None, (result.output, result.exception)
    return json.loads(result.stdout)
