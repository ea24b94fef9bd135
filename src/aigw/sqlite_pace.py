"""Short pauses between a batch's statements, in the saturation writer process only.

When the core is saturated the ledger and request log are written by a child at nice
10 (``aigw.sqlite_child``, ``aigw.sqlite_process.PriorityWriter``). Once the scheduler
gives it the core, a 500-row batch is ~2.5 ms of CPU, and the requests in flight wait
that long: measured at 16 clients on one core, tenancy's p99 went from ~6.5 ms to
~4.6 ms with a pause after every 100-row statement, at the same CPU per request. The
pause gives the core back; the batch stays one transaction (its write lock is held a
few milliseconds longer). Everywhere else (the idle-priority child, the gateway's own
database thread) ``pause_s`` stays 0 and ``pace`` does nothing.

Standard library only: writer processes import it.
"""

from __future__ import annotations

import time

SATURATED_PAUSE_S = 0.0005
pause_s = 0.0  # set by ``aigw.sqlite_child`` in its nice-10 child
_sleep = time.sleep


def pace() -> None:
    """Between two statements of a batch: sleep ``pause_s`` (0: return at once)."""
    if pause_s:
        _sleep(pause_s)
