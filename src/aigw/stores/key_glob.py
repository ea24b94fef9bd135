"""Key patterns in Redis's SCAN MATCH syntax, matched the same way in process memory.

Only what purges need: ``*`` for any run of characters, ``\\`` before a character
to take it literally. ``escape`` makes any text literal (ids come from admins and
clients), so one pattern serves Redis and the in-memory stores alike.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

_SPECIAL = re.compile(r"([*?\[\]\\])")
_PART = re.compile(r"\\(.)|(\*)|([^\\*]+)", re.S)


def escape(text: str) -> str:
    """``text`` as a literal inside a pattern."""
    return _SPECIAL.sub(r"\\\1", text)


def matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A test of whole keys against any of ``patterns``."""
    compiled = re.compile("|".join(f"(?:{_regex(p)})" for p in patterns) or "(?!)", re.S)
    return lambda key: compiled.fullmatch(key) is not None


def _regex(pattern: str) -> str:
    out = []
    for literal, star, plain in _PART.findall(pattern):
        out.append(".*" if star else re.escape(literal or plain))
    return "".join(out)
