"""Settles a Redis outage skipped: kept, then sent exactly once when Redis answers again.

A leave (the settle after a call: its tokens, its parallel slot, its budget lease to the
real cost) that the gate's skip window kept from Redis never ran there, so sending it
later runs it once; without it, the call's cost never reached the settled-spend counters
and a budget could be overrun by the sum of such calls. ``GateBatcher`` owns one of these.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aigw.stores.failures import SettleOwed, out_of_memory
from aigw.stores.redis.pipe import NotSent

log = logging.getLogger("aigw.gate")
OWED_MAX = 20_000  # settles kept through an outage (a few KB each: ~70 MB); beyond it the oldest is dropped
REPLAY_BATCH = 500  # owed settles per script call when Redis answers again (a long script would stall Redis)

Steps = list[tuple[bytes, list[bytes], list[bytes], "asyncio.Future[Any]"]]


@dataclass(slots=True)
class Owed:
    """A replayable step skipped in an outage; ``later`` gets its reply once sent."""

    kind: bytes
    keys: list[bytes]
    args: list[bytes]
    later: asyncio.Future[Any]


class OwedSettles:
    """The owed steps, oldest first, up to ``limit`` (then the oldest is dropped, logged).

    ``start(steps, ended)`` sends a batch as the batcher does; ``answering()`` says whether Redis is
    answering (no outage). ``replay_soon`` sends them in the background, ``REPLAY_BATCH`` per script
    call: one that cannot be sent (the connection is down again: ``NotSent``) or that Redis refused for want of
    memory stays owed; one sent and
    not answered may have run and is given up, as a leave that times out is. ``report(outcome, n)``
    counts them: owed, replayed, dropped, failed.
    """

    def __init__(self, start: Callable[[Steps, asyncio.Future[None]], None], answering: Callable[[], bool],
                 limit: int = OWED_MAX, report: Callable[[str, int], None] | None = None) -> None:
        self._start = start
        self._answering = answering
        self.limit = limit
        self._report = report
        self._owed: deque[Owed] = deque()
        self.counts = {"owed": 0, "replayed": 0, "dropped": 0, "failed": 0}  # since start
        self.replaying: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()  # a running task needs a reference held

    def __len__(self) -> int:
        return len(self._owed)

    @property
    def pending(self) -> bool:
        """Settles still owed, counting those a replay took off the list and has not yet had answered (a
        refusal puts them back)."""
        return bool(self._owed) or (self.replaying is not None and not self.replaying.done())

    def owe(self, kind: bytes, keys: list[bytes], args: list[bytes], skipped: Exception) -> SettleOwed:
        """Keep a step that did not run: skipped in an outage, or refused by a full Redis."""
        if len(self._owed) >= self.limit:
            self._owed.popleft().later.cancel()
            self.count("dropped")
            dropped = self.counts["dropped"]
            if dropped == 1 or dropped % 1000 == 0:
                log.error("%d settles owed to Redis: the oldest is dropped (%d so far); their leases and slots "
                          "expire on their own", self.limit, dropped)
        later: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._owed.append(Owed(kind, keys, args, later))
        self.count("owed")
        return SettleOwed(f"{skipped}; kept, to be sent when Redis answers", later)

    def count(self, outcome: str, n: int = 1) -> None:
        self.counts[outcome] += n
        if self._report is not None:
            self._report(outcome, n)

    def replay_soon(self) -> None:
        if self._owed and (self.replaying is None or self.replaying.done()):
            task = self.replaying = asyncio.ensure_future(self._replay())
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def give_up(self) -> None:
        """Shutdown with settles still unsent: they are lost; logged with their number, counted dropped."""
        if lost := len(self._owed):
            log.error("shutting down with %d settles owed to Redis unsent: they are lost (the spend of the calls "
                      "they settle is not counted; their leases and slots expire on their own)", lost)
            for o in self._owed:
                o.later.cancel()
            self._owed.clear()
            self.count("dropped", lost)

    async def _replay(self) -> None:
        """Send the owed steps, oldest first, while Redis answers (a failure stops it: the next answer goes
        on). Callers' steps are not held up: they travel in batches of their own, between these."""
        loop = asyncio.get_running_loop()
        replayed = 0
        while self._owed and self._answering():
            chunk = [self._owed.popleft() for _ in range(min(REPLAY_BATCH, len(self._owed)))]
            steps: Steps = [(o.kind, o.keys, o.args, loop.create_future()) for o in chunk]
            ended: asyncio.Future[None] = loop.create_future()
            self._start(steps, ended)
            await ended
            unsent = []
            for o, (*_, fut) in zip(chunk, steps, strict=True):
                exc = asyncio.CancelledError() if fut.cancelled() else fut.exception()
                if exc is None:
                    replayed += 1
                    if not o.later.done():
                        o.later.set_result(fut.result())
                elif isinstance(exc, NotSent) or out_of_memory(exc):  # did not run: still owed
                    unsent.append(o)
                else:  # it may have run: never twice (its thresholds crossed are read back from their marks)
                    self.count("failed")
                    if not o.later.done():
                        o.later.set_exception(exc) if isinstance(exc, Exception) else o.later.cancel()
            self._owed.extendleft(reversed(unsent))
            if replayed:
                self.count("replayed", replayed)
                replayed = 0
            if unsent:  # not taken: the next answer goes on (with the window off nothing else would stop this)
                break
        if not self._owed:
            log.warning("Redis answers the gate: the settles owed since the outage are sent (%d in all since "
                        "start, %d given up)", self.counts["replayed"], self.counts["dropped"] + self.counts["failed"])
