"""A client that leaves before its answer: the upstream call stops, its limits are freed, the ledger says 499."""

from __future__ import annotations

import asyncio
import json
import socket
import sqlite3
import time
from pathlib import Path
from typing import Any

import openai
import pytest

from aigw.cli.admin_client import AdminClient
from aigw.http.key_lookup import KeyCache
from aigw.stores.memory import MemoryGate
from tests.integration.tenancy_support import MASTER, PRICED_MOCK, chat_body, gateway_config, setup_key
from tests.support.gateway import running_gateway

VERY_SLOW = {"name": "very-slow", "provider": "mock", "latency_ms": 3000}


def _leave_early(port: int, key: str, body: dict[str, object], request_id: str = "", wait: float = 0.2) -> None:
    """Send a request, then close the connection before any answer comes."""
    raw = json.dumps(body).encode()
    rid = b"x-request-id: " + request_id.encode() + b"\r\n" if request_id else b""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n" + rid
                     + b"authorization: Bearer " + key.encode() + b"\r\ncontent-length: " + str(len(raw)).encode()
                     + b"\r\n\r\n" + raw)
        time.sleep(wait)


def test_a_client_gone_before_the_first_byte_frees_its_slot_at_once_and_is_a_499(tmp_path: Path) -> None:
    config = gateway_config(tmp_path / "gw.db")
    config["models"] = [PRICED_MOCK, VERY_SLOW]
    with running_gateway(config) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "gone-co", max_parallel=1)
        port = int(gw.url.rsplit(":", 1)[1])
        for stream in (True, False):
            _leave_early(port, key["key"], {**chat_body("slow"), "model": "very-slow", "stream": stream})
            started = time.monotonic()
            client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
            client.chat.completions.create(**chat_body("next"))  # the one slot is free again
            assert time.monotonic() - started < 2  # not after the 3 s the abandoned call would have taken
        deadline = time.monotonic() + 5
        while True:
            rows = admin.get("/admin/spend", group_by="key", key=key["id"])["data"]
            if rows and rows[0]["requests"] >= 4:
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.05)
        assert (rows[0]["requests"], rows[0]["errors"]) == (4, 2)  # the two abandoned calls, as 499s


def test_a_client_gone_while_sending_its_body_is_still_a_499_in_the_ledger(tmp_path: Path) -> None:
    db = tmp_path / "gw.db"
    with running_gateway(gateway_config(db)) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "half-body-co")
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        client.chat.completions.create(**chat_body("first"))  # the key is known (cached) from here on
        raw = json.dumps(chat_body("never finished")).encode()
        with socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1])), timeout=5) as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
                         b"authorization: Bearer " + key["key"].encode() + b"\r\nx-request-id: req-half-body\r\n"
                         b"content-length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw[:10])
            time.sleep(0.2)  # the gateway is waiting for the rest of the body when the client leaves
        deadline = time.monotonic() + 5
        while True:
            rows = admin.get("/admin/spend", group_by="key", key=key["id"])["data"]
            if rows and rows[0]["requests"] >= 2:
                break
            assert time.monotonic() < deadline, rows  # the abandoned call had no row at all
            time.sleep(0.05)
        assert (rows[0]["requests"], rows[0]["errors"]) == (2, 1)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status, error_kind FROM spend_ledger WHERE request_id = 'req-half-body'"
                            ).fetchall() == [(499, "client_disconnected")]


def test_a_client_gone_while_its_key_is_looked_up_is_still_a_499_in_the_ledger(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = tmp_path / "gw.db"
    lookup = KeyCache.lookup

    async def slow_lookup(self: KeyCache, presented: str) -> Any:
        await asyncio.sleep(0.3)  # a busy database: the key's first use waits for it
        return await lookup(self, presented)

    monkeypatch.setattr(KeyCache, "lookup", slow_lookup)
    with running_gateway(gateway_config(db)) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "slow-lookup-co")  # never used yet: its first call reads the database
        _leave_early(int(gw.url.rsplit(":", 1)[1]), key["key"], chat_body("left during the lookup"),
                     request_id="req-gone-at-auth", wait=0.1)
        deadline = time.monotonic() + 5
        while True:
            rows = admin.get("/admin/spend", group_by="key", key=key["id"])["data"]
            if rows:
                break
            assert time.monotonic() < deadline, "the abandoned call has no ledger row"
            time.sleep(0.05)
        assert (rows[0]["requests"], rows[0]["errors"]) == (1, 1)
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT status, error_kind FROM spend_ledger WHERE request_id = 'req-gone-at-auth'"
                            ).fetchall() == [(499, "client_disconnected")]


@pytest.mark.parametrize("limits", [{"max_parallel": 1}, {}], ids=["with-rate-limits", "budget-alone"])
def test_a_client_gone_while_its_limits_are_taken_frees_its_slot_and_its_budget(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, limits: dict[str, int]) -> None:
    enter = MemoryGate.enter

    async def slow_reply(self: MemoryGate, *args: Any) -> Any:
        answer = await enter(self, *args)
        await asyncio.sleep(0.3)  # the store took the slot and the reservation; its reply is still on its way
        return answer

    monkeypatch.setattr(MemoryGate, "enter", slow_reply)
    with running_gateway(gateway_config(tmp_path / "gw.db")) as gw:
        admin = AdminClient(gw.url, MASTER)
        # one call's worst case (about $0.05) fits the budget, two do not
        key = setup_key(admin, "gone-at-gate-co", budget_usd=0.07, budget_period="daily", **limits)
        _leave_early(int(gw.url.rsplit(":", 1)[1]), key["key"], chat_body("left at the gate"), wait=0.1)
        time.sleep(0.4)  # the abandoned call has ended
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        client.chat.completions.create(**chat_body("next"))  # its parallel slot and its reservation are free
