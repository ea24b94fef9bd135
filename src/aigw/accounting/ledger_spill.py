"""The spend ledger's spill file: rows kept on disk between runs, when the database was away at shutdown.

One path may be shared by every worker of an ``aigw serve --workers N`` (and by a later start of any of
them): each row is taken by one process at start and stays on disk until that process has written it.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import logging
import os
import secrets
from collections.abc import Iterator
from typing import Any

import orjson

log = logging.getLogger("aigw.ledger")


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
