"""The counters ``aigw serve --workers N`` keeps in its parent: two workers' clients (two connections) share
one set of rate limits and budgets; a host that is gone, silent or sent garbage fails calls at once or in
the timeout, never hangs them, and the client skips it for a moment after a failure."""

from __future__ import annotations

import asyncio
import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from aigw.stores.base import Limits, Scope
from aigw.stores.counter_client import HostedCounters
from aigw.stores.counter_host import CounterHost
from aigw.stores.counter_wire import CounterHostError, frame, unframe
from aigw.stores.failures import StoreSkipped

KEY = [Scope("key", "k_1", Limits(rpm=5, max_parallel=3))]
BUDGET = [Scope("key", "k_1", Limits(budget_usd=1.0, budget_period="total"))]
NANO_10C = 100_000_000


@pytest.fixture
def host() -> Iterator[CounterHost]:
    h = CounterHost(60.0)
    h.start()
    try:
        yield h
    finally:
        h.stop()


def test_two_workers_share_one_rpm_and_one_parallel_cap(host: CounterHost) -> None:
    async def main() -> tuple[list[bool], list[bool]]:
        a, b = HostedCounters(host.path), HostedCounters(host.path)
        now = time.time()
        # the same limits, as each worker's key cache builds its own list
        other = [Scope("key", "k_1", Limits(rpm=5, max_parallel=3))]
        first = await asyncio.gather(*[(a if i % 2 else b).enter(KEY if i % 2 else other, f"s{i}", 0, [], 0, now)
                                       for i in range(3)])
        parallel = [adm.allowed for adm, _ in first]
        refused = await a.enter(KEY, "s3", 0, [], 0, now)  # three in flight: a fourth waits
        parallel.append(refused[0].allowed)
        for i in range(3):
            await (a if i % 2 else b).leave(KEY, f"s{i}", 0, first[i][0].taken_at, [], 0, 0, now, [])
        more = await asyncio.gather(*[b.enter(KEY, f"t{i}", 0, [], 0, now) for i in range(4)])
        await a.close()
        await b.close()
        return parallel, [adm.allowed for adm, _ in more]

    parallel, more = asyncio.run(main())
    assert parallel == [True, True, True, False]
    assert more == [True, True, False, False]  # rpm 5: three earlier calls and two of these


def test_a_budget_reserved_through_one_worker_is_seen_and_settled_through_another(host: CounterHost) -> None:
    async def main() -> None:
        a, b = HostedCounters(host.path), HostedCounters(host.path)
        now = time.time()
        for i in range(10):  # ten leases of 10 cents fill $1
            _, res = await (a if i % 2 else b).enter([], f"s{i}", 0, BUDGET, NANO_10C, now)
            assert res is not None and res.allowed
        _, res = await a.enter([], "s10", 0, BUDGET, NANO_10C, now)
        assert res is not None and not res.allowed and res.scope == "key:k_1"
        crossed = await b.leave([], "s0", 0, 0, BUDGET, NANO_10C, NANO_10C // 2, now, [0.5, 0.8, 1.0])
        assert crossed == []  # leases are not spend: nothing settled has crossed 50 %
        assert await a.spent(BUDGET[0], now) == 10 * NANO_10C - NANO_10C // 2
        _, res = await a.enter([], "s11", 0, BUDGET, NANO_10C // 2, now)
        assert res is not None and res.allowed
        await b.seed({("key", "k_2", "total"): 7})
        assert await a.spent(Scope("key", "k_2", Limits(budget_usd=1.0, budget_period="total")), now) == 7
        assert await a.seeded()
        await a.close()
        await b.close()

    asyncio.run(main())


def test_a_store_error_on_the_host_is_raised_in_the_worker_and_the_link_stays(host: CounterHost) -> None:
    async def main() -> None:
        c = HostedCounters(host.path)
        with pytest.raises(CounterHostError, match="ValueError: no such counter call"):
            await c.call("budgets.__init__")
        with pytest.raises(CounterHostError, match="IndexError"):
            await c.call("gate.peek")  # no scope list: the host's error, carried back
        assert (await c.peek(KEY))[0].limit_requests == 5  # the same link answers on
        await c.close()

    asyncio.run(main())


def test_no_host_fails_at_once_then_skips_it_then_tries_again() -> None:
    path = os.path.join(tempfile.mkdtemp(), "none.sock")

    async def main() -> None:
        c = HostedCounters(path, retry_after_s=0.2)
        started = time.monotonic()
        with pytest.raises(OSError) as first:
            await c.enter(KEY, "s", 0, [], 0, time.time())
        assert not isinstance(first.value, StoreSkipped)
        with pytest.raises(StoreSkipped):
            await c.enter(KEY, "s", 0, [], 0, time.time())
        healthy, detail = await c.health()
        assert not healthy and "FileNotFoundError" in detail
        assert time.monotonic() - started < 0.5
        await asyncio.sleep(0.25)
        with pytest.raises(OSError) as again:  # tried again after the window
            await c.enter(KEY, "s", 0, [], 0, time.time())
        assert not isinstance(again.value, StoreSkipped)

    asyncio.run(main())
    os.rmdir(os.path.dirname(path))


def test_a_silent_host_times_out_the_call_and_a_closed_one_fails_calls_in_flight(tmp_path: Path) -> None:
    path = str(tmp_path / "silent.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()

    async def main() -> None:
        c = HostedCounters(path, timeout_s=0.3, retry_after_s=0)
        started = time.monotonic()
        with pytest.raises(TimeoutError, match="did not answer"):
            await c.enter(KEY, "s", 0, [], 0, time.time())
        assert 0.3 <= time.monotonic() - started < 1.0
        call = asyncio.ensure_future(c.leave(KEY, "s", 0, 0, [], 0, 0, time.time(), []))
        await asyncio.sleep(0.05)
        conn, _ = server.accept()
        conn.close()  # the host goes away with the call in flight
        with pytest.raises(ConnectionError, match="closed the connection"):
            await asyncio.wait_for(call, 1.0)

    try:
        asyncio.run(main())
    finally:
        server.close()


def test_a_host_drops_a_connection_that_sends_garbage_and_serves_the_others(host: CounterHost) -> None:
    bad = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    bad.connect(host.path)
    bad.sendall(b"\xff\xff\xff\xff garbage")
    bad.settimeout(2.0)
    assert bad.recv(10) == b""  # closed by the host
    bad.close()

    async def main() -> bool:
        c = HostedCounters(host.path)
        adm, _ = await c.enter(KEY, "s", 0, [], 0, time.time())
        await c.close()
        return adm.allowed

    assert asyncio.run(main())


def test_frames_split_anywhere_are_put_back_together() -> None:
    data = frame((1, "gate.peek", ((),))) + frame((2, True, [1, 2]))
    buf = bytearray()
    got = []
    for i in range(len(data)):
        buf += data[i:i + 1]
        got += unframe(buf)
    assert got == [(1, "gate.peek", ((),)), (2, True, [1, 2])] and not buf


def test_the_host_removes_its_socket_directory_when_stopped() -> None:
    h = CounterHost(60.0)
    path = h.start()
    assert os.path.exists(path) and (os.stat(os.path.dirname(path)).st_mode & 0o777) == 0o700
    h.stop()
    assert not os.path.exists(os.path.dirname(path))


def test_a_worker_connected_when_the_host_stops_fails_at_once_not_at_its_timeout(host: CounterHost) -> None:
    async def main() -> float:
        c = HostedCounters(host.path, timeout_s=5.0)
        await c.peek(KEY)  # connected
        host.stop()
        started = time.monotonic()
        with pytest.raises(OSError):
            await c.enter(KEY, "s", 0, [], 0, time.time())
        return time.monotonic() - started

    assert asyncio.run(main()) < 1.0


def test_a_budget_threshold_alerts_once_whichever_worker_settles_past_it(host: CounterHost) -> None:
    async def main() -> list[list[tuple[str, str, float]]]:
        a, b = HostedCounters(host.path), HostedCounters(host.path)
        now = time.time()
        crossings = []
        for i in range(8):  # 8 x 10 cents of $1, settled through both workers in turn: 50 % then 80 %
            c = a if i % 2 else b
            _, res = await c.enter([], f"s{i}", 0, BUDGET, NANO_10C, now)
            assert res is not None and res.allowed
            crossings.append(await c.leave([], f"s{i}", 0, 0, BUDGET, NANO_10C, NANO_10C, now, [0.5, 0.8, 1.0]))
        await a.close()
        await b.close()
        return crossings

    crossings = asyncio.run(main())
    fired = [(i, t) for i, c in enumerate(crossings) for _, _, t in c]
    assert fired == [(4, 0.5), (7, 0.8)]  # each once, on the settle that crossed it


def test_a_dead_workers_parallel_slots_are_freed_at_once_and_its_late_leave_frees_nothing_twice(
        host: CounterHost) -> None:
    one = [Scope("key", "k_9", Limits(max_parallel=1))]

    async def main() -> list[bool]:
        dying, other = HostedCounters(host.path), HostedCounters(host.path)
        now = time.time()
        seen = [(await dying.enter(one, "a", 0, [], 0, now))[0].allowed]
        seen.append((await other.enter(one, "b", 0, [], 0, now))[0].allowed)  # the slot is held
        await dying.close()  # the worker's connection ends with its call in flight
        await asyncio.sleep(0.1)
        seen.append((await other.enter(one, "c", 0, [], 0, now))[0].allowed)  # freed, not after the TTL
        late = HostedCounters(host.path)
        await late.leave(one, "a", 0, 0, [], 0, 0, now, [])  # the dead call's leave, arriving anyway
        seen.append((await other.enter(one, "d", 0, [], 0, now))[0].allowed)  # "c" still holds it
        await other.close()
        await late.close()
        return seen

    assert asyncio.run(main()) == [True, False, True, False]


def test_a_dead_workers_budget_leases_are_given_back_at_once_and_its_late_settle_counts_once(
        host: CounterHost) -> None:
    async def main() -> list[bool]:
        dying, other = HostedCounters(host.path), HostedCounters(host.path)
        now = time.time()
        seen = []
        for i in range(10):  # the dying worker's ten calls in flight hold the whole $1
            seen.append((await dying.enter([], f"d{i}", 0, BUDGET, NANO_10C, now))[1].allowed)  # type: ignore[union-attr]
        seen.append((await other.enter([], "o0", 0, BUDGET, NANO_10C, now))[1].allowed)  # type: ignore[union-attr]
        await dying.close()  # the worker dies: its calls will never settle
        await asyncio.sleep(0.1)
        assert await other.spent(BUDGET[0], now) == 0  # not held for the lease TTL (the request timeout and more)
        seen.append((await other.enter([], "o1", 0, BUDGET, NANO_10C, now))[1].allowed)  # type: ignore[union-attr]
        late = HostedCounters(host.path)  # one dead call's settle, arriving anyway: its cost counts, once
        await late.leave([], "d0", 0, 0, BUDGET, NANO_10C, NANO_10C // 2, now, [])
        await late.leave([], "d0", 0, 0, BUDGET, NANO_10C, NANO_10C // 2, now, [])
        assert await other.spent(BUDGET[0], now) == NANO_10C + NANO_10C // 2
        for c in (other, late):
            await c.close()
        return seen

    assert asyncio.run(main()) == [True] * 10 + [False, True]
