"""The spend ledger's writer: off the request path, batched, buffered, drained.

``record`` is a synchronous append (the request path never waits for a
database). One background task writes batches every ``flush_interval_s`` or as
soon as a batch is full. A failed write puts the batch back at the front and
retries with backoff, so a database outage only delays rows; writes are
idempotent by row id, so a replay after a commit whose answer was lost adds
nothing. ``close`` drains what is left; if the database is still away then,
the rows go to ``spill_file`` and are replayed at the next start. What can be
lost: rows still in memory on ``kill -9`` (at most ``flush_interval_s`` worth),
or, during an outage longer than ``max_buffered`` rows, the oldest rows
(logged and counted).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections import deque
from collections.abc import Coroutine
from typing import Any, Protocol

import orjson

from aigw.config.tenancy import LedgerConfig

log = logging.getLogger("aigw.ledger")


class _Store(Protocol):
    async def write(self, records: list[Any]) -> int: ...


class _Spawner(Protocol):
    def spawn(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]: ...


class Ledger:
    def __init__(self, store: _Store, config: LedgerConfig) -> None:
        self._store = store
        self._cfg = config
        self._buf: deque[Any] = deque()
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[Any] | None = None
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.healthy = True

    @property
    def pending(self) -> int:
        return len(self._buf)

    def record(self, rec: Any) -> None:
        """Queue one row (O(1), never blocks). Rows carry their own id (idempotent replays).

        Rows are plain tuples of numbers and strings: the garbage collector stops tracking
        those, so a buffer of thousands costs its collections nothing.
        """
        self._buf.append(rec)
        if len(self._buf) > self._cfg.max_buffered:
            self._buf.popleft()
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("spend ledger buffer full (%d rows): %d oldest rows dropped",
                          self._cfg.max_buffered, self.dropped)
        if len(self._buf) >= self._cfg.batch_size:
            self._wake.set()

    def start(self, supervisor: _Spawner) -> None:
        self._task = supervisor.spawn(self._run(), name="spend-ledger")

    async def _run(self) -> None:
        backoff = self._cfg.retry_backoff_s
        while not self._stopping:
            drain = False
            try:
                await asyncio.wait_for(self._wake.wait(), self._cfg.flush_interval_s)
            except TimeoutError:
                drain = True  # an interval passed: write everything waiting
            self._wake.clear()
            # Woken by a full batch: write full batches only; the remainder joins the next one (it
            # waits less than an interval either way). Small batches would cost a commit each.
            while self._buf and not self._stopping and (drain or len(self._buf) >= self._cfg.batch_size):
                if await self.flush_once():
                    backoff = self._cfg.retry_backoff_s
                    continue
                await self._sleep(backoff)
                backoff = min(backoff * 2, 30.0)
                break

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop_requested(), seconds)

    async def _stop_requested(self) -> None:
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()

    async def flush_once(self) -> bool:
        """Write one batch; on failure put it back in front and return False."""
        n = min(len(self._buf), self._cfg.batch_size)
        if n == 0:
            return True
        batch = [self._buf.popleft() for _ in range(n)]
        try:
            await self._store.write(batch)
        except asyncio.CancelledError:
            # Stopped mid-write (e.g. close() gave up waiting): the write may still land, or not.
            # Back in front either way: row ids make writing them again harmless.
            self._buf.extendleft(reversed(batch))
            raise
        except Exception as exc:
            self._buf.extendleft(reversed(batch))
            self.failures += 1
            if self.healthy or self.failures % 20 == 0:
                log.warning("spend ledger write failed (%s: %s); %d rows buffered, retrying",
                            type(exc).__name__, exc, len(self._buf))
            self.healthy = False
            return False
        if not self.healthy:
            log.info("spend ledger write recovered; %d rows still buffered", len(self._buf))
        self.healthy = True
        self.written += n
        return True

    async def close(self, timeout_s: float = 20.0) -> None:
        """Stop the loop and drain the buffer, retrying until ``timeout_s``; reports any loss."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self._buf:
            if not await self.flush_once():
                if asyncio.get_running_loop().time() > deadline:
                    self._spill()
                    return
                await asyncio.sleep(0.5)

    def _spill(self) -> None:
        """Database still away at shutdown: keep the rows in a local file, replayed at next start."""
        path = self._cfg.spill_file
        rows = list(self._buf)
        self._buf.clear()
        if not path:
            log.error("spend ledger: database unreachable at shutdown, %d rows lost", len(rows))
            self.dropped += len(rows)
            return
        try:
            with open(path, "ab") as f:
                f.writelines(orjson.dumps(list(r)) + b"\n" for r in rows)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            log.error("spend ledger: database unreachable and %s not writable (%s): %d rows lost", path, exc,
                      len(rows))
            self.dropped += len(rows)
            return
        log.error("spend ledger: database unreachable at shutdown; %d rows kept in %s for the next start",
                  len(rows), path)

    def replay_spill(self) -> int:
        """Queue rows a previous run kept on disk (before anything new); the file is then removed.

        Rows are idempotent by id, so a crash between queueing and writing replays harmlessly.
        """
        path = self._cfg.spill_file
        if not path or not os.path.exists(path):
            return 0
        with open(path, "rb") as f:
            rows = [tuple(orjson.loads(line)) for line in f if line.strip()]
        self._buf.extendleft(reversed(rows))
        os.replace(path, path + ".replayed")  # kept until the rows are written; overwritten next time
        log.info("spend ledger: replaying %d rows kept on disk by a previous run", len(rows))
        return len(rows)
