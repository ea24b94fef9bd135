"""Lists of the admin API (tenants, projects, keys): oldest first, whole or in pages of ``limit`` (1-1000)
after the id ``after``, answered as OpenAI's lists are (``has_more``, ``first_id``, ``last_id``). Their query
is read strictly (``admin_query``): a filter misspelt or left empty is a 400, never every tenant's list."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from aigw import errors
from aigw.http.admin_query import strict_query
from aigw.http.request import HttpRequest
from aigw.stores.base import ApiKey, Project, Tenant
from aigw.types import JSON

E = TypeVar("E", Tenant, Project, ApiKey)
_LIKELY = {"tenant_id": "tenant", "project_id": "project", "cursor": "after", "starting_after": "after"}


def list_query(req: HttpRequest, *filters: str) -> dict[str, str]:
    """A list's parameters: its ``filters``, ``limit`` and ``after``, each once and not empty, else a 400."""
    known = (*filters, "limit", "after")
    return strict_query(req, known, {k: f"did you mean `{v}`?" for k, v in _LIKELY.items() if v in known})


def page_size(raw: str | None) -> int | None:
    """``limit`` of a list: 1 to 1000, or None (everything, as before pages existed)."""
    if not raw:
        return None
    if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= 1000:  # "²" is a digit int() refuses
        raise errors.InvalidRequest("limit: a whole number from 1 to 1000", param="limit")
    return int(raw)


def one_more(limit: int | None) -> int | None:
    """What to fetch for a page of ``limit``: one more tells whether another page follows."""
    return limit + 1 if limit is not None else None


def listing(items: Sequence[E], limit: int | None, out: Callable[[E], dict[str, Any]]) -> JSON:
    """An OpenAI-style list: the page (``items`` holds one more than ``limit`` when another follows)."""
    more = limit is not None and len(items) > limit
    page = items[:limit] if more else items
    return {"object": "list", "data": [out(x) for x in page], "has_more": more,
            "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None}
