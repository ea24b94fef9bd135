"""Helpers for the tests of upstream calls that end without an answer, as the ledger and the budget see them."""

from __future__ import annotations

import contextlib
import json
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import openai

from aigw.accounting.tokens import LOCAL_COUNTER
from aigw.cli.admin_client import AdminClient
from aigw.pipeline.tenancy import SERVICE, TenancyServices
from aigw.stores.base import Limits, Scope
from tests.integration.tenancy_support import MASTER, gateway_config, key_spend, setup_key
from tests.support.gateway import RunningGateway, running_gateway

PRICES = {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}
IN, OUT = 1_000_000, 2_000_000  # nano-dollars a prompt token, an output token
MESSAGES: Any = [{"role": "user", "content": "tell me about the sea and the ships upon it"}]
BUDGET = 10.0


@contextlib.contextmanager
def cut_calls_gateway(db: Path, models: list[dict[str, Any]], routing: dict[str, Any] | None = None
                      ) -> Iterator[RunningGateway]:
    """A tenancy gateway on ``db`` serving ``models``: no retries unless ``routing`` says so, and no circuit
    breakers (a fake that fails on purpose must not open one for the next test)."""
    config = gateway_config(db, models=models, routing=routing or {"*": {"num_retries": 0}},
                            circuit_breaker={"enabled": False})
    with running_gateway(config) as running:
        yield running


def prompt_tokens(model: str = "gpt-4o-mini") -> int:
    """The prompt of ``MESSAGES`` as the gateway counts it locally for ``model``."""
    return LOCAL_COUNTER.count_prompt({"messages": MESSAGES}, model)


def new_key(gw: RunningGateway, name: str) -> tuple[AdminClient, dict[str, Any], openai.OpenAI]:
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, name, budget_usd=BUDGET, budget_period="daily")
    return admin, key, openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0, timeout=10)


def ledger_row(db: Path, admin: AdminClient, key_id: str) -> dict[str, Any]:
    """The key's one ledger row (written off the request path), with its usage source."""
    key_spend(admin, key_id)
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        rows = conn.execute("SELECT * FROM spend_ledger WHERE key_id = ?", (key_id,)).fetchall()
    assert len(rows) == 1
    return dict(rows[0])


def settled(gw: RunningGateway, key_id: str) -> int:
    """What the key's budget holds in today's window (settled spend plus any lease left behind)."""
    svc = gw.app.state["deps"].services[SERVICE]
    assert isinstance(svc, TenancyServices)
    scope = Scope("key", key_id, Limits(budget_usd=BUDGET, budget_period="daily"))
    return int(gw.call(svc.budgets.spent(scope, time.time())))


def stream_text(client: openai.OpenAI, model: str, **extra: Any) -> str:
    stream = client.chat.completions.create(model=model, messages=MESSAGES, max_tokens=50, stream=True, **extra)
    return "".join(c.choices[0].delta.content or "" for c in stream if c.choices)


def send_and_leave(gw: RunningGateway, key: dict[str, Any], model: str, stream: bool, stay_s: float = 0.3,
                   until: Callable[[], bool] | None = None) -> None:
    """Send a chat request over a raw socket, then leave before any answer: after ``stay_s``, or once ``until``
    holds (bounded: 5 s), so a loaded machine cannot make the test leave before the upstream has the call."""
    raw = json.dumps({"model": model, "messages": MESSAGES, "max_tokens": 50, "stream": stream}).encode()
    port = int(gw.url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                     b"authorization: Bearer " + key["key"].encode() + b"\r\ncontent-length: "
                     + str(len(raw)).encode() + b"\r\n\r\n" + raw)
        if until is None:
            time.sleep(stay_s)
            return
        end = time.monotonic() + 5.0
        while not until() and time.monotonic() < end:
            time.sleep(0.005)
        assert until(), "the upstream never got the call"
