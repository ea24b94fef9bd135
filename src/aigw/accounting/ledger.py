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
import contextlib
import fcntl
import glob
import logging
import os
import secrets
from collections import deque
from collections.abc import Coroutine, Iterator
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
        self._buf: deque[Any] = deque()  # new rows, at most max_buffered
        self._replay: deque[Any] = deque()  # rows earlier runs kept on disk: written first, never dropped
        self._spill = SpillFile(config.spill_file) if config.spill_file else None
        self._wake = asyncio.Event()
        self._stopping = False
        self._task: asyncio.Task[Any] | None = None
        self.written = 0
        self.dropped = 0
        self.failures = 0
        self.healthy = True

    @property
    def pending(self) -> int:
        return len(self._replay) + len(self._buf)

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
        except asyncio.CancelledError:
            # Stopped mid-write (e.g. close() gave up waiting): the write may still land, or not.
            # Back in front either way: row ids make writing them again harmless.
            self._put_back(batch, old)
            raise
        except Exception as exc:
            self._put_back(batch, old)
            self.failures += 1
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
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._task, 5)
        deadline = asyncio.get_running_loop().time() + timeout_s
        while self.pending:
            if not await self.flush_once():
                if asyncio.get_running_loop().time() > deadline:
                    self._spill_rows()
                    return
                await asyncio.sleep(0.5)

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


class SpillFile:
    """Rows kept on disk between runs, for any number of processes sharing one path.

    * ``<path>``: rows appended at shutdown, whole lines only, under the lock.
    * ``<path>.replayed.<owner>``: rows a running process took at start and has not written yet. Its owner
      holds a ``flock`` on it while it lives and removes it once the rows are written; a process that dies
      first (``kill -9``) releases the lock, and the next start takes the rows again.
    * ``<path>.lock``: one process at a time takes or appends (never removed: removing lock files races).

    ``<path>.replayed``, left by earlier versions, is taken as well. A line that does not parse (a write cut
    short: disk full, a file size limit) is skipped and logged, never a reason to fail start-up.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._owned: int | None = None  # our replayed file, flock-held while open
        self._owned_name = ""

    def take(self) -> list[tuple[Any, ...]]:
        """Take every row no living process holds; they stay on disk, ours, until ``release``."""
        self.release(remove=False)  # taken again below, with the rest
        rows: dict[bytes, tuple[Any, ...]] = {}  # by line: a row in two files is taken once
        with self._locked():
            # The spill must be appendable at shutdown: find out now (the empty file is taken below).
            os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666))
            taken = []
            for name in self._sources():
                data = _read_unowned(name)
                if data is not None:
                    taken.append(name)
                    for line, row in _parse(data, name):
                        rows.setdefault(line, row)
            if rows:
                self._own(b"".join(line + b"\n" for line in rows))
            for name in taken:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(name)
            _sync_dir(self.path)
        return list(rows.values())

    def release(self, *, remove: bool) -> None:
        """Done with the rows taken: ``remove`` once they are written (or in the spill again)."""
        if self._owned is None:
            return
        if remove:
            with contextlib.suppress(OSError):  # left behind: replayed once more, harmlessly
                os.unlink(self._owned_name)
        os.close(self._owned)
        self._owned = None

    def append(self, rows: list[Any]) -> tuple[int, OSError | None]:
        """Append rows as whole lines: how many reached the file, and the error that stopped the rest."""
        data = b"".join(orjson.dumps(list(r)) + b"\n" for r in rows)
        done = whole = 0
        try:
            with self._locked(), _opened(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT) as fd:
                end = os.fstat(fd).st_size
                if end and os.pread(fd, 1, end - 1) != b"\n":
                    end += os.write(fd, b"\n")  # after a torn line: ours start on a line of their own
                try:
                    while done < len(data):
                        done += os.write(fd, memoryview(data)[done:])
                finally:
                    whole = data.rfind(b"\n", 0, done) + 1
                    if whole < done:  # cut short mid-line: take the torn part back
                        os.ftruncate(fd, end + whole)
                os.fsync(fd)
        except OSError as exc:
            return data.count(b"\n", 0, whole), exc
        return len(rows), None

    def _sources(self) -> list[str]:
        names = [self.path + ".replayed", *sorted(glob.glob(glob.escape(self.path) + ".replayed.*")), self.path]
        for stale in [n for n in names if n.endswith(".tmp")]:  # a take that died mid-write (sources intact)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(stale)
        return [n for n in names if not n.endswith(".tmp")]

    def _own(self, data: bytes) -> None:
        """Write the rows taken to a file of our own (atomically), locked for as long as we hold them."""
        name = f"{self.path}.replayed.{os.getpid()}-{secrets.token_hex(4)}"
        fd = os.open(name + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            view, done = memoryview(data), 0
            while done < len(data):
                done += os.write(fd, view[done:])
            os.fsync(fd)
            os.rename(name + ".tmp", name)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(name + ".tmp")
            raise
        self._owned, self._owned_name = fd, name

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with _opened(self.path + ".lock", os.O_RDWR | os.O_CREAT) as fd:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when closed
            yield


@contextlib.contextmanager
def _opened(path: str, flags: int) -> Iterator[int]:
    fd = os.open(path, flags, 0o666)
    try:
        yield fd
    finally:
        os.close(fd)


def _read_unowned(name: str) -> bytes | None:
    """A file's bytes, or None when it is gone or a living process holds it."""
    with contextlib.suppress(FileNotFoundError, BlockingIOError), open(name, "rb") as f:
        fcntl.flock(f, fcntl.LOCK_SH | fcntl.LOCK_NB)  # its owner holds LOCK_EX while alive
        return f.read()
    return None


def _parse(data: bytes, name: str) -> list[tuple[bytes, tuple[Any, ...]]]:
    """The complete rows in a spill file's bytes, each with its line; the rest is logged and skipped."""
    rows, bad = [], []
    for raw in data.split(b"\n"):
        line = raw.strip()
        if not line:
            continue
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError:
            row = None
        if isinstance(row, list):
            rows.append((line, tuple(row)))
        else:
            bad.append(line)
    if bad:
        log.warning("spend ledger: %d unreadable lines skipped in %s (a write cut short?); the first: %.120r",
                    len(bad), name, bad[0])
    return rows


def _sync_dir(path: str) -> None:
    with contextlib.suppress(OSError), _opened(os.path.dirname(path) or ".", os.O_RDONLY) as fd:
        os.fsync(fd)
