"""Time-ordered ids made without a system call: request ids and ledger row ids.

An id is the time in nanoseconds (hex, so ids sort by time as strings), this
process's random tag and a counter. Two properties matter. Indexes on these ids
(the ledger's primary key and its ``request_id`` index) take each new row at
their right edge instead of at a random page, which halves the cost of a ledger
write in SQLite and keeps PostgreSQL's B-trees compact. And no two processes,
replicas or restarts collide: the tag is random per process (and refreshed in a
forked child), the counter separates ids made in the same nanosecond.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Callable

_tag = ""
_counter = itertools.count()


def time_ordered_id(prefix: str, _now: Callable[[], int] = time.time_ns) -> str:
    """``prefix`` + 16 hex digits of time + 8 of process tag + 4 of counter.

    %-formatting, not an f-string with format specs: half the time (~0.8 vs 1.6 µs here), once per request.
    """
    return "%s%016x%s%04x" % (prefix, _now(), _tag, next(_counter) & 0xFFFF)  # noqa: UP031


def unique_id(prefix: str) -> str:
    """``prefix`` + this process's tag + a counter: unique across processes and replicas, cheaper than
    ``time_ordered_id`` where order does not matter (e.g. a call's in-flight slot)."""
    return "%s%s%x" % (prefix, _tag, next(_counter))  # noqa: UP031


def _new_process_tag() -> None:
    global _tag
    _tag = os.urandom(4).hex()


_new_process_tag()
os.register_at_fork(after_in_child=_new_process_tag)
