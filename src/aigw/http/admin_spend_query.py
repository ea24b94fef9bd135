"""The spend report's query string, read strictly: a parameter that would be ignored is a 400 instead.

``from=2026-11-01`` (for ``since``), ``group=model`` or ``tenant=`` read as absent gave the whole history, every
tenant or the default grouping, a bill that looks right and is not the one asked for. So every parameter must be
one of ``PARAMS``, given once and not empty; the error names it (``param``). ``HttpRequest.query`` drops blank
values and keeps the last of a repeat, so the raw query string is read here.
"""

from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qsl

from aigw import errors
from aigw.http.request import HttpRequest

PARAMS = ("group_by", "tenant", "project", "key", "model", "since", "until", "limit", "format")
GROUPS = ("key", "project", "tenant", "model", "day")
_HINTS = {"from": "since", "to": "until"}  # what other reports call them
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def spend_params(req: HttpRequest) -> dict[str, str]:
    """Each parameter of the request's query once, by name; any unknown, repeated or empty one is a 400."""
    out: dict[str, str] = {}
    for name, value in parse_qsl(req.scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True):
        if name not in PARAMS:
            hint = (f"did you mean `{_HINTS[name]}`? (days are since=YYYY-MM-DD and until=YYYY-MM-DD, both "
                    "inclusive)" if name in _HINTS else f"known: {', '.join(PARAMS)}")
            raise errors.InvalidRequest(f"{name}: unknown parameter; {hint}", param=name, code="unknown_parameter")
        if name in out:
            raise errors.InvalidRequest(f"{name}: given twice; give it once", param=name)
        if not value.strip():
            raise errors.InvalidRequest(f"{name}: empty; give a value, or leave `{name}` out", param=name)
        out[name] = value
    return out


def group_of(raw: str) -> str:
    if raw not in GROUPS:
        raise errors.InvalidRequest(f"group_by: one of {', '.join(GROUPS)}", param="group_by")
    return raw


def days(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """``since`` and ``until``, in order: the wrong way round is a mistake to say, not an empty report."""
    first, last = _day("since", since), _day("until", until)
    if first and last and first > last:
        raise errors.InvalidRequest(f"since: {first} is after until {last}", param="since")
    return first, last


def _day(name: str, raw: str | None) -> str | None:
    """A whole UTC day, YYYY-MM-DD and nothing more: anything after it was cut off and ignored."""
    if raw is None:
        return None
    try:
        if not _DAY.fullmatch(raw):
            raise ValueError(raw)
        return dt.date.fromisoformat(raw).isoformat()
    except ValueError:
        raise errors.InvalidRequest(f"{name}: expected a date like 2026-11-30", param=name) from None


def limit_of(raw: str | None) -> int:
    try:
        value = int(raw or 1000)
    except ValueError:
        raise errors.InvalidRequest("limit: expected a whole number", param="limit") from None
    if not 1 <= value <= 10_000:
        raise errors.InvalidRequest("limit: between 1 and 10000", param="limit")
    return value
