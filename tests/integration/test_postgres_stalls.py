"""PostgreSQL that stops answering (a hung server or network): the gateway's shutdown is never held by it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from aigw.stores.postgres import db as postgres_db
from aigw.stores.postgres.db import PostgresSql
from tests.integration.routing_support import TcpProxy
from tests.support.services import postgres_dsn


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    postgres_dsn()  # skips or fails like every PostgreSQL test when there is none
    p = TcpProxy(5432)
    try:
        yield p
    finally:
        p.stop()


async def test_closing_the_pool_of_a_server_that_stopped_answering_returns(proxy: TcpProxy,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(postgres_db, "CLOSE_TIMEOUT_S", 0.5, raising=False)
    sql = PostgresSql(postgres_dsn().replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}"), min_size=2)
    await sql.open()
    assert (await sql.fetch("SELECT 1 AS one"))[0]["one"] == 1
    proxy.hung = True
    started = time.monotonic()
    await asyncio.wait_for(sql.close(), 10)  # a graceful close waits for answers that never come
    assert time.monotonic() - started < 3
