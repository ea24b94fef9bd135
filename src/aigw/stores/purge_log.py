"""Cache purges announced to every process that keeps cache entries of its own.

A purge deletes shared entries (Redis) once, where it is called, but each
process's memory store, semantic index and near copies only it can drop. The
process that took the purge call appends it to a log; every process reads what
was appended since it last looked (``CacheStage.watch_purges``, a few times a
second) and drops its own copies. Two logs: a Redis stream when ``redis_url`` is
set (``stores/redis/purge_log.py``: every replica), else a file that the workers
of one ``aigw serve --workers N`` share (here). A single process without Redis
needs neither.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Purge:
    """One announced purge: an id in its log, what it named (None: every tenant / model), and the
    cursor that reads on past it (a reader moves there only once the purge is applied)."""

    id: str
    tenant: str | None
    model: str | None
    after: str


class PurgeLog(Protocol):
    async def announce(self, tenant: str | None, model: str | None) -> str:
        """Append a purge; its id. Raises when the log cannot be written."""
        ...

    async def head(self) -> str:
        """Where the log ends now: a cursor that ``since`` reads on from."""
        ...

    async def since(self, cursor: str) -> tuple[str, list[Purge]]:
        """The purges appended after ``cursor``, oldest first, and the cursor after them."""
        ...


class FilePurgeLog:
    """One JSON line per purge in a file the workers of one ``aigw serve`` share (it lives as long as
    the server). Appends of one short line with O_APPEND land whole and in order; the cursor is a byte
    offset, and a line not yet complete is left for the next read."""

    def __init__(self, path: str) -> None:
        self.path = path

    async def announce(self, tenant: str | None, model: str | None) -> str:
        line = json.dumps({"tenant": tenant, "model": model}).encode() + b"\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line)
            return str(os.lseek(fd, 0, os.SEEK_CUR) - len(line))
        finally:
            os.close(fd)

    async def head(self) -> str:
        try:
            return str(os.stat(self.path).st_size)
        except FileNotFoundError:
            return "0"

    async def since(self, cursor: str) -> tuple[str, list[Purge]]:
        start = int(cursor)
        try:  # a local file of a few short lines: a stat, and a read only when it grew
            size = os.stat(self.path).st_size
            if size <= start:
                return cursor, []
            fd = os.open(self.path, os.O_RDONLY)
            try:
                data = os.pread(fd, size - start, start)
            finally:
                os.close(fd)
        except FileNotFoundError:
            return cursor, []
        out: list[Purge] = []
        at = start
        for line in data.splitlines(keepends=True):
            if not line.endswith(b"\n"):
                break  # still being written
            entry = json.loads(line)
            out.append(Purge(str(at), entry.get("tenant"), entry.get("model"), str(at + len(line))))
            at += len(line)
        return str(at), out
