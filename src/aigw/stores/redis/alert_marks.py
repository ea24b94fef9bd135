"""The budget thresholds a settle crossed when its answer was lost, read back from Redis.

A settle (leave.lua) sets an alert mark per threshold it crosses first (``SET NX``, valued with the call's
slot), and its answer names them. A settle sent and not answered (a timeout, a broken connection) may have
run all the same, e.g. when a stalled Redis resumes and runs what was waiting on its sockets: its marks are
then set and no later settle crosses them again, so without this their alerts would never fire. Once Redis
answers, the marks are read: one that holds the settle's slot was set by it. ``RedisCounters`` owns one.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import Any

log = logging.getLogger("aigw.gate")
PENDING_MAX = 20_000  # settles whose marks wait to be read (as many as settles owed); beyond it the oldest goes
RETRY_S = 0.5  # while Redis does not answer, how often to try again
READ_BATCH = 500  # marks per MGET

Crossing = tuple[str, str, float]  # scope ref, window, threshold (what a settle's answer says)


@dataclass(slots=True)
class _Unanswered:
    slot: bytes
    marks: list[tuple[str, Crossing]]  # mark key, what it means when this settle set it
    later: asyncio.Future[list[Crossing]]
    until: float  # loop time: given up after it (the marks expire, the lease with them)


class AlertMarks:
    """Settles not answered, oldest first; their marks are read once Redis answers again.

    ``redis`` is redis-py's client. The read goes after a ``PING`` answered, so it is sent after Redis
    took up what was waiting for it (a settle sent before the stall runs before it). Each settle is read
    once; its ``later`` gets the crossings it made ([] if none), or is cancelled if it is given up.
    """

    def __init__(self, redis: Any, give_up_s: float, limit: int = PENDING_MAX) -> None:
        self._redis = redis
        self.give_up_s = give_up_s
        self.limit = limit
        self._pending: deque[_Unanswered] = deque()
        self._task: asyncio.Task[None] | None = None

    def __len__(self) -> int:
        return len(self._pending)

    def read_later(self, slot: str, marks: list[tuple[str, Crossing]]) -> asyncio.Future[list[Crossing]]:
        loop = asyncio.get_running_loop()
        later: asyncio.Future[list[Crossing]] = loop.create_future()
        if not marks:
            later.set_result([])
            return later
        if len(self._pending) >= self.limit:
            self._pending.popleft().later.cancel()
        self._pending.append(_Unanswered(slot.encode(), marks, later, loop.time() + self.give_up_s))
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._run())
        return later

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for u in self._pending:
            u.later.cancel()
        self._pending.clear()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._pending:
            while self._pending and self._pending[0].until < loop.time():
                self._pending.popleft().later.cancel()
            if not self._pending:
                return
            try:
                await self._redis.ping()
                await self._read()
            except Exception:  # still away: try again shortly (a read not finished is read again)
                await asyncio.sleep(RETRY_S)

    async def _read(self) -> None:
        while self._pending:
            chunk: list[_Unanswered] = []
            n = 0
            for u in self._pending:
                if chunk and n + len(u.marks) > READ_BATCH:
                    break
                chunk.append(u)
                n += len(u.marks)
            values = await self._redis.mget([key for u in chunk for key, _ in u.marks])
            at = 0
            for u in chunk:
                got = values[at:at + len(u.marks)]
                at += len(u.marks)
                if not u.later.done():
                    u.later.set_result([c for (_, c), v in zip(u.marks, got, strict=True) if v == u.slot])
            done = {id(u) for u in chunk}  # still first, unless a full queue dropped some meanwhile
            while self._pending and id(self._pending[0]) in done:
                self._pending.popleft()
