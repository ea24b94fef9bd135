"""Rate-limit and budget counters (and the response cache's memory entries, ``cache_host``) kept by
``aigw serve --workers N``'s parent and shared by its workers.

Without Redis, each worker kept counters of its own, so a key's rpm, tpm, max-parallel and budget
applied once per worker: the "limits multiply by the number of replicas" bug, inside one machine. The
parent serves no requests and outlives its workers (it starts again any that dies), so it keeps the one
set of memory counters (``MemoryRateLimiter``, ``MemoryBudgets``, ``MemoryGate``) on an event loop in a
thread of its own and answers the workers' calls (``counter_client.HostedCounters``) over a Unix socket.

The wire is ``counter_wire``'s. The socket lives in a directory only this user can open (``mkdtemp``:
0700), like the workers' metrics files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import tempfile
import threading
from collections.abc import Callable
from typing import Any

from aigw.stores.base import Scope
from aigw.stores.cache_host import SharedCache
from aigw.stores.counter_wire import SCOPE_ARGS, ScopeRow, encode_result, frame, scopes_of_rows, unframe
from aigw.stores.memory import MemoryGate, MemoryRateLimiter
from aigw.stores.memory_budgets import MemoryBudgets

log = logging.getLogger("aigw.counters")

# the calls that take (True) or free (False) a parallel slot: (scopes, slot, ...) in both
_HOLDS = {"gate.enter": True, "limiter.admit": True, "gate.leave": False, "limiter.release": False}
HELD_MAX = 100_000  # slots (and leases) one connection is known to hold (a worker's calls in flight)
INTERNED_MAX = 10_000  # scope lists kept for reuse (keys dropped from the workers' key caches leave theirs)
Leases = dict[str, tuple[list[Scope], int, float]]  # slot -> budget scopes, amount, reserved at


class Held:
    """What one worker's calls in flight hold, freed if its connection ends: parallel slots (slot -> rate
    scopes) and budget leases (slot -> budget scopes, amount, reserved at)."""

    __slots__ = ("leases", "slots")

    def __init__(self) -> None:
        self.slots: dict[str, list[Scope]] = {}
        self.leases: Leases = {}


def _note_lease(method: str, args: list[Any], value: Any, leases: Leases) -> None:
    """Keep in ``leases`` a budget lease a call took (by its slot), or drop the one it settled."""
    if method == "gate.leave" or method == "budgets.settle":
        if method == "budgets.settle" or args[4]:  # leave(rate, slot, ..., budget, ...), settle(..., slot)
            leases.pop(args[5] if method == "budgets.settle" else args[1], None)
        return
    if method == "gate.enter":  # enter(rate, slot, est, budget, amount, now) -> (admission, reservation)
        slot, budget, amount, now, reservation = args[1], args[3], args[4], args[5], value[1]
    else:  # budgets.reserve(scopes, amount, now, slot) -> reservation
        budget, amount, now, reservation = args[0], args[1], args[2], value
        slot = args[3] if len(args) > 3 else ""
    if budget and slot and reservation is not None and reservation.allowed:
        if len(leases) >= HELD_MAX:  # settles that never came (their leases expire by TTL)
            leases.clear()
        leases[slot] = (budget, amount, now)


_LEASES = frozenset({"gate.enter", "gate.leave", "budgets.reserve", "budgets.settle"})


class SharedCounters:
    """The memory counters and what a call may reach of them."""

    def __init__(self, parallel_ttl_s: float, cache: SharedCache | None = None) -> None:
        self.cache = cache  # the response cache's shared entries (``cache.*`` calls), when a cache is configured
        limiter = self._limiter = MemoryRateLimiter(parallel_ttl_s=parallel_ttl_s)
        budgets = self._budgets = MemoryBudgets(parallel_ttl_s)
        targets: dict[str, Any] = {"gate": MemoryGate(limiter, budgets), "limiter": limiter, "budgets": budgets}
        self._calls: dict[str, Callable[..., Any]] = {
            method: getattr(targets[method.split(".")[0]], method.split(".")[1]) for method in SCOPE_ARGS}
        # The memory limiter resolves a scope list's states once per list object: each distinct list of rows
        # becomes one list of scopes here, reused by every call that sends the same rows.
        self._interned: dict[tuple[ScopeRow, ...], list[Scope]] = {}

    def answer(self, call: Any, held: Held) -> bytes:
        """The answer frame to one call frame; a store error goes back to the caller, raised there. ``held``:
        the parallel slots and budget leases the caller's connection holds (``free``)."""
        cid, method, args = call
        try:
            if method.startswith("cache.") and self.cache is not None:
                return frame((cid, True, self.cache.answer(method, args)))
            spec = SCOPE_ARGS.get(method)
            if spec is None:
                raise ValueError(f"no such counter call: {method!r}")
            lists, ones = spec
            rows = args[0] if lists else ()
            if lists or ones:
                args = list(args)
                for i in lists:
                    args[i] = self._scopes(args[i])
                for i in ones:
                    args[i] = self._scopes(args[i])[0]
            coro = self._calls[method](*args)
            try:  # the memory stores never await: run the coroutine to its end here, no task
                coro.send(None)
            except StopIteration as done:
                if method in _HOLDS and any(row[4] for row in rows):  # a max-parallel slot taken or freed
                    slots = held.slots
                    if _HOLDS[method]:
                        admission = done.value[0] if method == "gate.enter" else done.value
                        if admission.allowed:
                            if len(slots) >= HELD_MAX:  # leaves that never came (their slots expire by TTL)
                                slots.clear()
                            slots[args[1]] = args[0]
                    else:
                        slots.pop(args[1], None)
                if method in _LEASES:
                    _note_lease(method, args, done.value, held.leases)
                return frame((cid, True, encode_result(method, done.value)))
            coro.close()
            raise RuntimeError(f"{method} awaited: the shared counters must answer at once")
        except Exception as exc:
            return frame((cid, False, f"{type(exc).__name__}: {exc}"))

    def free(self, held: Held) -> None:
        """A worker's connection ended (the worker died, or stops): the parallel slots and budget leases its
        calls held are freed now. Left to their TTL (the request timeout and a minute), a key with
        ``max_parallel: 1`` would be refused, and a budget held by the dead calls' reservations, for minutes
        after a worker crash. A slot's late ``leave`` from a worker that lives on frees nothing twice, and its
        late settle counts the call's cost once, as after a lease's expiry."""
        now = self._limiter.now()
        for slot, scopes in held.slots.items():
            self._limiter.give_back(scopes, slot, 0, 0, now)
        for slot, (budget, amount, reserved_at) in held.leases.items():
            self._budgets.expire_now(budget, slot, amount, reserved_at, now)
        held.slots.clear()
        held.leases.clear()

    def _scopes(self, rows: tuple[ScopeRow, ...]) -> list[Scope]:
        known = self._interned.get(rows)
        if known is None:
            if len(self._interned) >= INTERNED_MAX:
                self._interned.clear()
            known = self._interned[rows] = scopes_of_rows(rows)
        return known


class _HostProtocol(asyncio.Protocol):
    """One worker's connection: every call in a read is answered in one write."""

    def __init__(self, counters: SharedCounters, links: set[asyncio.BaseTransport]) -> None:
        self._counters = counters
        self._links = links
        self._buf = bytearray()
        self._transport: asyncio.Transport | None = None
        self._held = Held()  # this worker's calls in flight: their parallel slots and budget leases

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._links.add(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._transport is not None:
            self._links.discard(self._transport)
        self._counters.free(self._held)

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            calls = unframe(self._buf)
        except Exception as exc:  # not our protocol: drop the peer, keep serving the others
            log.warning("counter host: dropping a connection that sent a bad frame (%s)", exc)
            assert self._transport is not None
            self._transport.close()
            return
        if calls and self._transport is not None:
            answer, held = self._counters.answer, self._held
            self._transport.write(b"".join([answer(c, held) for c in calls]))


class CounterHost:
    """The shared counters on a thread's event loop, listening on a Unix socket in a private directory."""

    def __init__(self, parallel_ttl_s: float, cache_bounds: tuple[int, int, int] | None = None) -> None:
        """``cache_bounds``: (max entries, max bytes, max vectors per semantic context) of the response cache's
        shared memory store and index; None: no cache."""
        cache = SharedCache(*cache_bounds) if cache_bounds is not None else None
        self.counters = SharedCounters(parallel_ttl_s, cache)
        self.path = ""
        self._dir = ""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._links: set[asyncio.BaseTransport] = set()  # the workers' connections, closed on stop

    def start(self, timeout_s: float = 10.0) -> str:
        """Listen, and return the socket's path (for the workers: ``AIGW_COUNTER_SOCKET``)."""
        # a Unix socket's path holds at most 107 bytes, ~40 of them ours: a longer TMPDIR falls back to /tmp
        self._dir = tempfile.mkdtemp(prefix="aigw-counters-", dir=None if len(tempfile.gettempdir()) <= 64 else "/tmp")
        self.path = os.path.join(self._dir, "counters.sock")
        if self.counters.cache is not None:  # before the workers start: each maps it as it builds its cache
            self.counters.cache.publish(self._dir)
        loop = self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failed: list[BaseException] = []
        self._thread = threading.Thread(target=self._run, args=(loop, ready, failed), name="aigw-counter-host",
                                        daemon=True)
        self._thread.start()
        if not ready.wait(timeout_s) or failed:
            self.stop()
            raise RuntimeError(f"the shared counters could not listen on {self.path}: {failed or 'no answer'}")
        return self.path

    def _run(self, loop: asyncio.AbstractEventLoop, ready: threading.Event, failed: list[BaseException]) -> None:
        asyncio.set_event_loop(loop)
        make: Callable[[], asyncio.Protocol] = lambda: _HostProtocol(self.counters, self._links)  # noqa: E731
        try:
            server = loop.run_until_complete(loop.create_unix_server(make, self.path))
        except BaseException as exc:
            failed.append(exc)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            server.close()
            for link in list(self._links):  # a worker still connected sees the host leave now, not at its timeout
                link.close()
            loop.run_until_complete(asyncio.sleep(0))  # the closes reach the sockets
            loop.close()

    def stop(self) -> None:
        """Stop listening (the workers have stopped: nothing is in flight) and remove the socket."""
        loop, thread = self._loop, self._thread
        if loop is not None and thread is not None and thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5.0)
        self._loop = self._thread = None
        if self.counters.cache is not None:
            self.counters.cache.close()
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""
