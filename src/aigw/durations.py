"""Waits written the way OpenAI writes ``x-ratelimit-reset-*``: Go's duration format (``20ms``, ``1s``,
``8.64s``, ``6m0s``).

A leaf: the limits stage writes these headers and the Anthropic endpoint reads them back to send
Anthropic's RFC 3339 resets, so both sides share one format. Clients parse it with Go's
``time.ParseDuration`` or the like: ``60s`` would parse, but OpenAI never sends it (``1m0s``).
"""

from __future__ import annotations

import re
from math import ceil

_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|h|m|s)")
_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def go_duration(seconds: float) -> str:
    """``seconds`` rounded up to the millisecond (a client that waits exactly this long finds room), as Go's
    ``Duration.String`` prints it: under a second in ``ms``, then seconds with up to three decimals, then
    minutes and seconds."""
    ms = ceil(seconds * 1000 - 1e-6)  # float noise: 1.0000000001 s is 1s, not 1.001s
    if 1000 <= ms < 60_000:  # the common case, on every call: at most 5 digits, which %g keeps whole
        return "%gs" % (ms / 1000)  # %-formatting: ~40 % less time than an f-string with a format spec
    if seconds <= 0:
        return "0s"
    if ms < 1000:
        return f"{max(ms, 1)}ms"
    minutes, ms = divmod(ms, 60_000)
    whole, frac = divmod(ms, 1000)
    secs = f"{whole}.{frac:03d}".rstrip("0") if frac else str(whole)
    if not minutes:
        return f"{secs}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m{secs}s" if hours else f"{minutes}m{secs}s"


def parse_go_duration(text: str) -> float | None:
    """Seconds in a duration ``go_duration`` wrote (or any plain Go duration of h, m, s, ms); None if not one."""
    pos, total = 0, 0.0
    for m in _PART.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and pos else None
