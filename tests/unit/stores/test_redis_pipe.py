"""The gate's lean Redis client: pipelined script calls, replies to the right callers, failing fast.

Against a real Redis (its own key prefix per test, skipped with a reason when Redis is not
there), plus fake servers on loopback for the failures Redis itself will not produce.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis

from aigw.stores.redis.pipe import Address, RedisPipe, ReplyError, Script, ViaRedisPy, bulk, bulk_int

ECHO_SCRIPT = Script("return {KEYS[1], ARGV[1], ARGV[2]}")
INCR_SCRIPT = Script("return redis.call('INCRBY', KEYS[1], ARGV[1])")
FAIL_SCRIPT = Script("return redis.error_reply('boom')")


@pytest.fixture
async def pipe(redis_isolated: tuple[str, str]) -> AsyncIterator[tuple[RedisPipe, str]]:
    url, prefix = redis_isolated
    p = RedisPipe.from_url(url, timeout_s=2.0)
    assert p is not None
    try:
        yield p, prefix
    finally:
        await p.aclose()


@pytest.fixture
async def admin(redis_isolated: tuple[str, str]) -> AsyncIterator[Any]:
    """redis-py on the side, to act on the pipe's connection (kill it, push to a list)."""
    client = aioredis.Redis.from_url(redis_isolated[0])
    try:
        yield client
    finally:
        await client.aclose()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_urls_it_speaks_and_the_ones_left_to_redis_py() -> None:
    assert Address.parse("redis://127.0.0.1:6380/2") == Address("127.0.0.1", 6380, db=2)
    assert Address.parse("redis://:s%40cret@h") == Address("h", 6379, password="s@cret")
    assert Address.parse("redis://app:pw@h:1/0") == Address("h", 1, username="app", password="pw")
    assert Address.parse("redis://h?db=3") == Address("h", db=3)
    assert Address.parse("unix:///run/redis.sock?db=1") == Address(path="/run/redis.sock", db=1)
    for other in ("rediss://h:6380/0", "redis://h/0?ssl_cert_reqs=none", "redis://h/x", "redis://user@h",
                  "valkey://h", "", "unix://"):
        assert RedisPipe.from_url(other) is None, other  # the caller keeps redis-py for these


async def test_a_script_call_returns_its_reply(pipe: tuple[RedisPipe, str]) -> None:
    p, prefix = pipe
    key = bulk(f"{prefix}n".encode())
    assert await p.evalsha(ECHO_SCRIPT, [key], [bulk(b"a b\r\n"), bulk_int(-7)]) == [
        f"{prefix}n".encode(), b"a b\r\n", b"-7"]
    assert await p.evalsha(INCR_SCRIPT, [key], [bulk_int(5)]) == 5
    assert await p.evalsha(INCR_SCRIPT, [key], [bulk_int(10**15)]) == 10**15 + 5


async def test_concurrent_calls_each_get_their_own_reply(pipe: tuple[RedisPipe, str]) -> None:
    p, prefix = pipe
    key = bulk(f"{prefix}c".encode())
    replies = await asyncio.gather(*(p.evalsha(ECHO_SCRIPT, [key], [bulk_int(i), bulk(b"x" * (i % 50))])
                                     for i in range(500)))
    assert [(int(r[1]), r[2]) for r in replies] == [(i, b"x" * (i % 50)) for i in range(500)]
    counts = await asyncio.gather(*(p.evalsha(INCR_SCRIPT, [key], [bulk_int(1)]) for _ in range(200)))
    assert sorted(counts) == list(range(1, 201))  # each increment ran once, in order
    assert counts == sorted(counts)


async def test_a_flushed_script_is_loaded_again(pipe: tuple[RedisPipe, str]) -> None:
    p, prefix = pipe
    key = bulk(f"{prefix}f".encode())
    assert await p.evalsha(INCR_SCRIPT, [key], [bulk_int(1)]) == 1
    await p.call(b"SCRIPT", b"FLUSH")  # as after a Redis restart
    assert await p.evalsha(INCR_SCRIPT, [key], [bulk_int(1)]) == 2


async def test_error_replies_raise_and_the_connection_carries_on(pipe: tuple[RedisPipe, str]) -> None:
    p, prefix = pipe
    with pytest.raises(ReplyError, match="boom"):
        await p.evalsha(FAIL_SCRIPT, [], [])
    await p.call(b"SET", f"{prefix}s".encode(), b"text")
    with pytest.raises(ReplyError, match="not an integer"):
        await p.evalsha(INCR_SCRIPT, [bulk(f"{prefix}s".encode())], [bulk_int(1)])
    assert await p.call(b"ECHO", b"still here") == b"still here"


async def test_a_cancelled_call_does_not_shift_later_replies(pipe: tuple[RedisPipe, str], admin: Any) -> None:
    p, prefix = pipe
    queue = f"{prefix}q".encode()
    blocked = asyncio.ensure_future(p.call(b"BLPOP", queue, b"1.5"))  # its reply waits for a push
    await asyncio.sleep(0.05)
    blocked.cancel()
    later = asyncio.ensure_future(p.call(b"ECHO", b"mine"))
    await asyncio.sleep(0.05)
    await admin.lpush(queue, b"for the cancelled call")  # BLPOP answers now: read and dropped
    assert await asyncio.wait_for(later, 2) == b"mine"
    assert blocked.cancelled()
    assert await p.call(b"ECHO", b"next") == b"next"


async def test_a_killed_connection_fails_its_pending_calls_and_the_next_call_reconnects(
        pipe: tuple[RedisPipe, str], admin: Any) -> None:
    p, prefix = pipe
    first_id = await p.call(b"CLIENT", b"ID")
    pending = [asyncio.ensure_future(p.call(b"BLPOP", f"{prefix}k".encode(), b"1.5")) for _ in range(3)]
    await asyncio.sleep(0.05)
    started = time.monotonic()
    assert await admin.execute_command("CLIENT", "KILL", "ID", first_id) == 1
    for fut in pending:
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(fut, 2)
    assert time.monotonic() - started < 0.5
    second_id = await asyncio.wait_for(p.call(b"CLIENT", b"ID"), 2)
    assert second_id != first_id
    assert await p.evalsha(INCR_SCRIPT, [bulk(f"{prefix}k2".encode())], [bulk_int(3)]) == 3


async def test_select_on_connect_follows_the_url(redis_isolated: tuple[str, str]) -> None:
    url, _ = redis_isolated
    p = RedisPipe.from_url(url.rsplit("/", 1)[0] + "/3")
    assert p is not None
    try:
        assert b" db=3 " in await p.call(b"CLIENT", b"INFO")
    finally:
        await p.aclose()


async def test_a_refused_handshake_fails_the_call(redis_isolated: tuple[str, str]) -> None:
    url, _ = redis_isolated
    base = url.split("://", 1)[1]
    p = RedisPipe.from_url(f"redis://aigw-no-such-user:wrong@{base}")
    assert p is not None
    try:
        with pytest.raises(ConnectionError):
            await p.call(b"PING")
    finally:
        await p.aclose()


async def test_nothing_listening_fails_fast_and_every_call_tries_again() -> None:
    p = RedisPipe(Address("127.0.0.1", _free_port()))
    try:
        for _ in range(3):
            started = time.monotonic()
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(p.evalsha(INCR_SCRIPT, [bulk(b"k")], [bulk_int(1)]), 2)
            assert time.monotonic() - started < 1.0
        results = await asyncio.wait_for(asyncio.gather(*(p.call(b"PING") for _ in range(20)),
                                                        return_exceptions=True), 2)
        assert all(isinstance(r, ConnectionError) for r in results)
    finally:
        await p.aclose()


async def test_a_server_that_never_answers_times_out_within_the_timeout() -> None:
    connections: list[asyncio.StreamWriter] = []

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        await reader.read(1 << 16)  # takes the command, never answers

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    p = RedisPipe(Address("127.0.0.1", port), timeout_s=0.25)
    try:
        started = time.monotonic()
        results = await asyncio.wait_for(asyncio.gather(*(p.call(b"PING") for _ in range(5)),
                                                        return_exceptions=True), 2)
        elapsed = time.monotonic() - started
        assert all(isinstance(r, TimeoutError) for r in results), results
        assert 0.2 <= elapsed < 0.6
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(p.call(b"PING"), 2)
        assert len(connections) == 2  # the timed-out connection was dropped, the next call opened another
    finally:
        await p.aclose()
        for w in connections:
            w.close()
        server.close()
        await server.wait_closed()


async def test_a_closed_pipe_refuses_calls(pipe: tuple[RedisPipe, str]) -> None:
    p, _ = pipe
    assert await p.call(b"PING") == b"PONG"
    await p.aclose()
    with pytest.raises(ConnectionError):
        await p.call(b"PING")


async def test_the_redis_py_fallback_runs_the_same_calls(redis_isolated: tuple[str, str], admin: Any) -> None:
    _, prefix = redis_isolated
    via = ViaRedisPy(admin)
    key = bulk(f"{prefix}v".encode())
    assert await via.evalsha(ECHO_SCRIPT, [key], [bulk(b"a"), bulk_int(300)]) == [f"{prefix}v".encode(), b"a",
                                                                                   b"300"]
    await admin.script_flush()
    assert await via.evalsha(INCR_SCRIPT, [key], [bulk_int(2)]) == 2


def test_the_same_on_uvloop_the_loop_the_gateway_serves_on(redis_isolated: tuple[str, str]) -> None:
    import uvloop

    url, prefix = redis_isolated

    async def scenario() -> None:
        p = RedisPipe.from_url(url, timeout_s=2.0)
        assert p is not None
        admin = aioredis.Redis.from_url(url)
        try:
            key = bulk(f"{prefix}u".encode())
            replies = await asyncio.gather(*(p.evalsha(ECHO_SCRIPT, [key], [bulk_int(i), bulk(b"v")])
                                             for i in range(200)))
            assert [int(r[1]) for r in replies] == list(range(200))
            await p.call(b"SCRIPT", b"FLUSH")
            assert await p.evalsha(INCR_SCRIPT, [key], [bulk_int(2)]) == 2
            with pytest.raises(ReplyError):
                await p.evalsha(FAIL_SCRIPT, [], [])
            blocked = asyncio.ensure_future(p.call(b"BLPOP", f"{prefix}q".encode(), b"1.5"))
            await asyncio.sleep(0.05)
            blocked.cancel()
            later = asyncio.ensure_future(p.call(b"ECHO", b"mine"))
            await asyncio.sleep(0.05)
            await admin.lpush(f"{prefix}q", b"dropped")
            assert await asyncio.wait_for(later, 2) == b"mine"
            first = await p.call(b"CLIENT", b"ID")
            pending = asyncio.ensure_future(p.call(b"BLPOP", f"{prefix}q2".encode(), b"1.5"))
            await asyncio.sleep(0.05)
            await admin.execute_command("CLIENT", "KILL", "ID", first)
            with pytest.raises(ConnectionError):
                await asyncio.wait_for(pending, 2)
            assert await asyncio.wait_for(p.call(b"CLIENT", b"ID"), 2) != first
        finally:
            await p.aclose()
            await admin.aclose()

        dead = RedisPipe(Address("127.0.0.1", _free_port()))
        with pytest.raises(ConnectionError):
            await asyncio.wait_for(dead.call(b"PING"), 2)
        await dead.aclose()
        writers: list[asyncio.StreamWriter] = []

        async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writers.append(writer)
            await reader.read(1 << 16)

        server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
        silent = RedisPipe(Address("127.0.0.1", server.sockets[0].getsockname()[1]), timeout_s=0.25)
        try:
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(silent.call(b"PING"), 2)
            assert time.monotonic() - started < 0.6
        finally:
            await silent.aclose()
            for w in writers:
                w.close()
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(asyncio.wait_for(scenario(), 20))
