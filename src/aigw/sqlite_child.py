"""The SQLite writer process itself: ``python -m aigw.sqlite_child PATH MODULE:FUNCTION PRIORITY``.

Started by ``aigw.sqlite_process``. It reads frames from stdin (a 4-byte big-endian
length, then an ``orjson`` body), calls ``FUNCTION(body, connection)`` for each (the
function runs its own transaction), and answers on stdout with ``[count]`` or
``[null, "error"]``. Standard library, orjson and the named module only: no asyncio,
so a child holds ~14 MB of memory, not ~25 (the gateway's idle RSS stays under its
100 MB bar with two of them).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import sqlite3
import struct
import sys
from collections.abc import Callable
from typing import Any, Literal

import orjson

from aigw import sqlite_pace

FRAME = struct.Struct(">I")
Priority = Literal["idle", "low"]  # SCHED_IDLE (else nice 19), or nice LOW_NICE
LOW_NICE = 10
# Every SQLite connection of the gateway: readers beside one writer, commits without fsync
# (WAL checkpoints still sync), and a wait instead of "database is locked".
WAL_PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=NORMAL", "PRAGMA busy_timeout=5000")


def _serve(path: str, writer: str, priority: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    _set_priority(priority)
    module, _, name = writer.partition(":")
    fn: Callable[[list[Any], sqlite3.Connection], Any] = getattr(importlib.import_module(module), name)
    conn = sqlite3.connect(path, isolation_level=None)
    for pragma in WAL_PRAGMAS:
        conn.execute(pragma)
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        head = stdin.read(4)
        if len(head) < 4:
            break  # the parent closed the pipe (or is gone)
        body = stdin.read(FRAME.unpack(head)[0])
        try:
            answer: list[Any] = [fn(orjson.loads(body), conn)]
        except Exception as exc:  # the batch function rolled back; the parent retries later
            answer = [None, f"{type(exc).__name__}: {exc}"]
        out = orjson.dumps(answer)
        try:
            stdout.write(FRAME.pack(len(out)) + out)
            stdout.flush()
        except BrokenPipeError:
            break  # the parent went away while this batch was written
    conn.close()


def _set_priority(priority: str) -> None:
    """``idle``: run only when the core has nothing else to do. ``low``: nice ``LOW_NICE``, and batches
    give the core back between statements (``aigw.sqlite_pace``)."""
    if priority == "idle":
        _lowest_priority()
        return
    with contextlib.suppress(OSError):
        os.nice(LOW_NICE)
    sqlite_pace.pause_s = sqlite_pace.SATURATED_PAUSE_S


def _lowest_priority() -> None:
    """Run only when the core has nothing else to do (SCHED_IDLE), else at nice 19.

    Measured at one client on a shared core: p99 0.85 ms with SCHED_IDLE against 2.1 ms for
    a writer thread and 1.15 ms at nice 19; at nice 10 the scheduler still let a batch run
    on for milliseconds while a request waited. Starved under a saturated core, the writer
    falls behind; ``PriorityWriter`` then hands the batches to a child at nice ``LOW_NICE``.
    """
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # type: ignore[attr-defined,unused-ignore]
    except (AttributeError, OSError):
        with contextlib.suppress(OSError):
            os.nice(19)


if __name__ == "__main__":
    _serve(sys.argv[1], sys.argv[2], sys.argv[3])
