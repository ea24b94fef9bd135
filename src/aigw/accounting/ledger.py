"""The spend ledger's writer: off the request path, batched, buffered, drained.

``record`` is a synchronous append (the request path never waits for a
database). One background task writes batches every ``flush_interval_s`` or as
soon as a batch is full. A failed write puts the batch back at the front and
retries with backoff, so a database outage only delays rows; writes are
idempotent by row id, so a replay after a commit whose answer was lost adds
nothing. ``close`` drains what is left; if the database is still away then,
the rows go to ``spill_file`` (see ``SpillFile``) and are replayed at the next
start: taken by one of the processes sharing the file, written before new rows,
never dropped for ``max_buffered``, and left on disk until written. What can be
lost: rows still in memory on ``kill -9`` (at most ``flush_interval_s`` worth),
during an outage longer than ``max_buffered`` rows the oldest new rows, and rows
a spill file cannot take at shutdown (all logged and counted).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from aigw.accounting.ledger_spill import SpillFile
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
        self._buf: deque[Any] = deque()  # new rows, at most max_buffered
        self._replay: deque[Any] = deque()  # rows earlier runs kept on disk: written first, never dropped
        self._spill = SpillFile(config.spill_file) if config.spill_file else None
        self._wake = asyncio.Event()
        self._stopping = False
        self._closed = False
        self._task: asyncio.Task[Any] | None = None
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.healthy = True
        # each failed batch write ("write") and each row dropped for max_buffered ("buffer_full"), as
        # the request log reports them: app.py points it at aigw_store_errors_total{store="ledger"}
        self.on_error: Callable[[str], None] | None = None

    @property
    def pending(self) -> int:
        return len(self._replay) + len(self._buf)

    def status(self) -> tuple[str, str]:
        """For ``/health/ready``: degraded while writes fail, with what is at stake (rows waiting, and rows
        already dropped for ``max_buffered``)."""
        if not self.healthy:
            return "degraded", f"ledger writes failing; {self.pending} rows buffered, {self.dropped} dropped"
        return "ok", f"{self.written} rows written, {self.pending} pending, {self.dropped} dropped"

    def record(self, rec: Any) -> None:
        """Queue one row (O(1), never blocks). Rows carry their own id (idempotent replays).

        Rows are plain tuples of numbers and strings: the garbage collector stops tracking
        those, so a buffer of thousands costs its collections nothing.
        """
        self._buf.append(rec)
        if len(self._buf) > self._cfg.max_buffered:
            self._buf.popleft()
            self.dropped += 1
            if self.on_error is not None:
                self.on_error("buffer_full")
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.error("spend ledger buffer full (%d rows): %d oldest rows dropped",
                          self._cfg.max_buffered, self.dropped)
        if len(self._buf) >= self._cfg.batch_size:
            self._wake.set()

    def start(self, supervisor: _Spawner) -> None:
        self._task = supervisor.spawn(self._run(), name="spend-ledger")
        atexit.register(self._spill_at_exit)

    def _spill_at_exit(self) -> None:
        """The process exits without ``close`` (a second Ctrl-C, an exit from a signal handler): what is still
        buffered goes to the spill file (milliseconds, no database), not nowhere. Not on ``kill -9``."""
        if not self._closed and self.pending:
            log.error("spend ledger: exiting without a drain; %d rows go to the spill file", self.pending)
            self._spill_rows()

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
            while self.pending and not self._stopping and (drain or self.pending >= self._cfg.batch_size):
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
        """Write one batch (replayed rows first); on failure put it back in front and return False."""
        size = self._cfg.batch_size
        old = min(len(self._replay), size)
        n = min(old + len(self._buf), size)
        if n == 0:
            return True
        batch = [self._replay.popleft() for _ in range(old)] + [self._buf.popleft() for _ in range(n - old)]
        try:
            await self._store.write(batch)
        except (asyncio.CancelledError, KeyboardInterrupt, SystemExit):
            # Stopped mid-write (close() gave up waiting, a second Ctrl-C): the write may still land, or not.
            # Back in front either way (the exit hook spills it): row ids make writing them again harmless.
            self._put_back(batch, old)
            raise
        except Exception as exc:
            self._put_back(batch, old)
            self.failures += 1
            if self.on_error is not None:
                self.on_error("write")
            if self.healthy or self.failures % 20 == 0:
                log.warning("spend ledger write failed (%s: %s); %d rows buffered, retrying",
                            type(exc).__name__, exc, self.pending)
            self.healthy = False
            return False
        if not self.healthy:
            log.info("spend ledger write recovered; %d rows still buffered", self.pending)
        self.healthy = True
        self.written += n
        if old and not self._replay and self._spill is not None:
            self._spill.release(remove=True)  # every row taken from disk at start is written
        return True

    def _put_back(self, batch: list[Any], old: int) -> None:
        self._buf.extendleft(reversed(batch[old:]))
        self._replay.extendleft(reversed(batch[:old]))

    async def close(self, timeout_s: float = 20.0) -> None:
        """Stop the loop and drain the buffer, retrying until ``timeout_s``; reports any loss."""
        await self._close(timeout_s)  # interrupted (a second Ctrl-C): the exit hook still spills
        self._closed = True
        atexit.unregister(self._spill_at_exit)

    async def _close(self, timeout_s: float) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while self.pending:
            left = deadline - loop.time()
            try:  # each write bounded by what is left: a database that stopped answering holds no write past it
                done = left > 0 and await asyncio.wait_for(self.flush_once(), left)
            except TimeoutError:  # the batch went back in front (flush_once's cancel path)
                done = False
            if not done:
                if loop.time() >= deadline:
                    self._spill_rows()
                    return
                await asyncio.sleep(min(0.5, deadline - loop.time()))

    def _spill_rows(self) -> None:
        """Database still away at shutdown: keep the rows in a local file, replayed at next start."""
        rows, replayed = [*self._replay, *self._buf], len(self._replay)
        self._replay.clear()
        self._buf.clear()
        if self._spill is None:
            log.error("spend ledger: database unreachable at shutdown, %d rows lost", len(rows))
            self.dropped += len(rows)
            return
        path = self._spill.path
        kept, exc = self._spill.append(rows)
        # Rows taken from disk at start come first: kept in the spill, their own file can go; if not, it stays.
        self._spill.release(remove=kept >= replayed)
        if exc is None:
            log.error("spend ledger: database unreachable at shutdown; %d rows kept in %s for the next start",
                      len(rows), path)
            return
        kept = max(kept, replayed)
        self.dropped += len(rows) - kept
        log.error("spend ledger: database unreachable and %s not writable (%s: %s): %d of %d rows kept on disk "
                  "for the next start, %d lost", path, type(exc).__name__, exc, kept, len(rows), len(rows) - kept)

    def replay_spill(self) -> int:
        """Queue the rows earlier runs kept on disk: written before anything new, not counted in ``max_buffered``.

        Safe with several processes on one spill file (each row is taken by one of them). The rows stay on disk
        until they are written, so a crash before that leaves them to the next start; row ids make writing a row
        twice harmless. Never raises: a spill file that cannot be used is reported now, not first at shutdown.
        """
        if self._spill is None:
            return 0
        try:
            rows = self._spill.take()
        except OSError as exc:
            log.warning("spend ledger: spill file %s cannot be used (%s: %s): rows the database cannot take at "
                        "shutdown will be lost, and rows kept there are not replayed", self._spill.path,
                        type(exc).__name__, exc)
            return 0
        self._replay.extend(rows)
        if rows:
            log.info("spend ledger: replaying %d rows kept on disk by a previous run", len(rows))
        return len(rows)
