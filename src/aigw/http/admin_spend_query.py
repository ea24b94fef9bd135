"""The spend report's query string, read strictly: a parameter that would be ignored is a 400 instead.

``from=2026-11-01`` (for ``since``), ``group=model`` or ``tenant=`` read as absent gave the whole history, every
tenant or the default grouping, a bill that looks right and is not the one asked for. So every parameter must be
one of ``PARAMS``, given once and not empty; the error names it (``param``), as on every admin endpoint
(``admin_query``).
"""

from __future__ import annotations

import datetime as dt
import re

from aigw import errors
from aigw.http.admin_query import strict_query
from aigw.http.request import HttpRequest

PARAMS = ("group_by", "tenant", "project", "key", "model", "since", "until", "limit", "format")
GROUPS = ("key", "project", "tenant", "model", "day")
_DAYS = "(days are since=YYYY-MM-DD and until=YYYY-MM-DD, both inclusive)"
_HINTS = {"from": f"did you mean `since`? {_DAYS}", "to": f"did you mean `until`? {_DAYS}"}  # other reports' names
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def spend_params(req: HttpRequest) -> dict[str, str]:
    """Each parameter of the request's query once, by name; any unknown, repeated or empty one is a 400."""
    return strict_query(req, PARAMS, _HINTS)


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
