"""Batch writes to a SQLite file from a child process: it shares the core, not the GIL.

Why not the connection's thread (``aigw.sqlite_thread``): the ``sqlite3`` module holds
the GIL while it binds a statement's values, about 7 µs per 32-column ledger row on a
busy core, and a thread that wants the GIL back waits up to the 5 ms switch interval
and then takes it from the event loop. Every request in flight pays for that in
latency (measured: p99 at one client 0.75 ms without the ledger, 2.2 ms with it) and
the forced switches cost CPU on both sides. A child process has its own interpreter:
the loop pays one ``orjson`` dump and one pipe write per batch, and the OS scheduler,
unlike the GIL, lets the loop take the core back as soon as a request wakes it.

The parent names the batch function (``"module:function"``, called as
``fn(rows, connection)`` in one transaction of its own) when it starts the child,
``python -m aigw.sqlite_child`` (what the child does, and at which CPU priority, is
there). The child runs in a session of its own, so a signal to the gateway's process
group (a terminal's Ctrl-C, a group-wide stop) never reaches it, and ignores SIGINT
and SIGTERM sent to it directly: neither may kill it before the parent has drained
what it holds (a Ctrl-C that reached it while it was still importing did). It exits when its stdin
closes, which is also what happens when the parent dies, even by ``kill -9``. A
child that dies is started again on the next write; a write it never answered
raises, so the caller keeps the batch and retries. ``PriorityWriter`` pairs an
idle-priority child with a nice-10 one for a saturated core.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import orjson

from aigw.sqlite_child import FRAME, Priority

log = logging.getLogger("aigw.sqlite")


def shareable(path: str) -> bool:
    """Whether a child process can open the same SQLite database (not an in-memory one)."""
    return path != ":memory:" and not path.startswith("file::memory:")


class WriterFailed(Exception):
    """The child could not write the batch (its error text is the message), or it went away."""


class SqliteProcess:
    """A child process that runs one batch function against one SQLite file.

    After ``GIVE_UP_AFTER`` failed writes in a row, writes fail at once (the caller's
    fallback writes) until ``COOL_OFF_S`` have passed since the last failure.
    """

    GIVE_UP_AFTER = 3
    COOL_OFF_S = 60.0

    def __init__(self, path: str, writer: str, priority: Priority = "idle") -> None:
        if not shareable(path):
            raise ValueError("an in-memory SQLite database cannot be shared with a child process")
        self.path = path
        self.writer = writer  # "module:function"
        self.priority = priority
        self._proc: asyncio.subprocess.Process | None = None
        self._lock = asyncio.Lock()
        self._retired: list[asyncio.subprocess.Process] = []
        self.started = 0  # children started so far (1 unless one died)
        self._failures = 0  # writes failed in a row
        self._retry_at = 0.0

    async def write(self, rows: Any) -> int:
        """Hand ``rows`` (anything orjson writes) to the batch function in the child, in one
        transaction there; returns what the function returned."""
        body = orjson.dumps(rows)
        async with self._lock:
            if self._failures >= self.GIVE_UP_AFTER and time.monotonic() < self._retry_at:
                raise WriterFailed(f"SQLite writer process failed {self._failures} times in a row; "
                                   f"not started again before {self.COOL_OFF_S:.0f} s have passed")
            if self._proc is not None and self._proc.returncode is not None:
                self._abandon(self._proc)  # died since the last write: reaped at close()
            proc = self._proc if self._proc is not None else await self._start()
            assert proc.stdin is not None and proc.stdout is not None
            try:
                proc.stdin.write(FRAME.pack(len(body)) + body)
                await proc.stdin.drain()
                size = FRAME.unpack(await proc.stdout.readexactly(4))[0]
                answer = orjson.loads(await proc.stdout.readexactly(size))
            except BaseException as exc:
                # No answer (child gone, or this write cancelled mid-way): whether the batch landed
                # is unknown, so this child is done; the caller keeps the batch and writes it again.
                self._abandon(proc)
                if isinstance(exc, (OSError, asyncio.IncompleteReadError, ValueError)):
                    self._failed()
                    raise WriterFailed(f"SQLite writer process went away ({type(exc).__name__})") from None
                raise
        if answer[0] is None:
            self._failed()
            raise WriterFailed(str(answer[1]))
        self._failures = 0
        return int(answer[0])

    def _failed(self) -> None:
        """Count a failure in a row. A child that cannot start at all (say, no ``python -m``
        in a frozen build) would otherwise be spawned again for every batch."""
        self._failures += 1
        self._retry_at = time.monotonic() + self.COOL_OFF_S

    async def _start(self) -> asyncio.subprocess.Process:
        self._proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "aigw.sqlite_child", self.path, self.writer, self.priority,
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, close_fds=True,
            start_new_session=True)  # a terminal's Ctrl-C goes to the gateway's group: never to it, even as it starts
        self.started += 1
        return self._proc

    def _abandon(self, proc: asyncio.subprocess.Process) -> None:
        if self._proc is proc:
            self._proc = None
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        if proc.stdin is not None:
            proc.stdin.close()
        self._retired.append(proc)  # reaped by close(), so no transport outlives the loop

    async def close(self, timeout_s: float = 10.0) -> None:
        """Close the child's stdin (it exits after any write in hand) and wait for it."""
        async with self._lock:
            proc, self._proc = self._proc, None
        retired, self._retired = self._retired, []
        for old in retired:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(old.wait(), timeout_s)
        if proc is None or proc.returncode is not None:
            return
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), timeout_s)
        except TimeoutError:
            proc.kill()
            await proc.wait()

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.returncode is None else None


Fallback = Callable[[Any], Awaitable[int]]


class _Writer(Protocol):
    @property
    def running(self) -> bool: ...
    async def write(self, rows: Any) -> int: ...
    async def close(self) -> None: ...


class PriorityWriter:
    """Batches go to a child at idle priority, or to one at nice LOW_NICE while that one starves.

    An idle-priority write takes a few milliseconds whenever the core has a moment to
    spare. One that took longer than ``SLOW_S`` means the core has none (saturated), and
    the writer would fall further behind with every batch; so for the next ``HOLD_S``
    the other child writes, at nice ``LOW_NICE``: about the CPU a writer thread would
    cost, without taking the GIL from the event loop, and its small CPU share
    (about a tenth of the core while it has work, a few times what a batch needs)
    spreads each batch thinly instead of taking half the core from requests in flight
    for milliseconds, as a child at nice 0 would. Then the
    idle one is tried again; the other child exits once unused for ``RETIRE_S`` (it holds
    some 13 MB of its own, and starting it costs ~0.1 s of CPU).
    """

    SLOW_S = 0.5
    HOLD_S = 5.0
    RETIRE_S = 120.0  # the other child exits after this long unused (bursts would restart it too often)

    def __init__(self, steady: _Writer, busy: _Writer, fallback: Fallback | None = None, what: str = "SQLite",
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.steady = steady
        self.busy = busy
        self._fallback = fallback  # writes a batch the children could not (the database thread)
        self._what = what  # for the log line: "spend ledger", "request log"
        self._clock = clock
        self._busy_until = 0.0
        self.switches = 0  # times the steady writer was found starving
        self.fallbacks = 0  # batches the fallback wrote

    @classmethod
    def for_file(cls, path: str, writer: str, fallback: Fallback | None = None, what: str = "SQLite") -> PriorityWriter:
        return cls(SqliteProcess(path, writer, "idle"), SqliteProcess(path, writer, "low"), fallback, what)

    async def write(self, rows: Any) -> int:
        """Write ``rows`` through a child; if neither can and there is a fallback, through that
        (the same payload). Without a fallback ``WriterFailed`` reaches the caller."""
        if self._fallback is None:
            return await self._through_children(rows)
        try:
            return await self._through_children(rows)
        except WriterFailed as exc:
            self.fallbacks += 1
            if self.fallbacks == 1 or self.fallbacks % 100 == 0:
                log.warning("%s writer process failed (%s); the database thread wrote the batch "
                            "(%d batches so far)", self._what, exc, self.fallbacks)
            return await self._fallback(rows)

    async def _through_children(self, rows: Any) -> int:
        start = self._clock()
        if start < self._busy_until:
            return await self.busy.write(rows)
        warm = self.steady.running  # a child's start-up (~0.1 s of CPU at idle priority) is not starving
        done = await self.steady.write(rows)
        if warm and self._clock() - start > self.SLOW_S:
            self._busy_until = self._clock() + self.HOLD_S
            self.switches += 1
        elif self.busy.running and start - self._busy_until > self.RETIRE_S:
            await self.busy.close()
        return done

    async def close(self) -> None:
        await self.steady.close()
        await self.busy.close()
