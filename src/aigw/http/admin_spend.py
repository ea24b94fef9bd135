"""GET /admin/spend: the bill, from the daily rollups (never a scan of the ledger).

    GET /admin/spend?group_by=key|project|tenant|model|day
                    [&tenant=ID|NAME][&project=ID|NAME][&key=ID][&since=YYYY-MM-DD][&until=YYYY-MM-DD][&limit=N]
                    [&format=json|csv]

Days are UTC and inclusive. At most ``limit`` rows (1000 by default, up to 10000): the dearest groups
first (by day: the earliest days). ``has_more`` says that rows were left out; ``total_cost_usd`` is
always the whole report's, left-out rows included: ``total_cost_nano`` is the exact sum of the rows'
``cost_nano`` (the rollups' integer nano-dollars; ``cost_usd`` is each over 1e9), ``total_cost_usd`` it over
1e9. Rows grouped by project or tenant carry its name too (``project_name``,
``tenant_name``; looked up in the small projects or tenants table, never the ledger). ``format=csv``
answers the rows as a CSV file for a spreadsheet: the group's columns first, costs with nine decimals
(the ledger's nano-dollar precision, never ``1e-05``). A tenant admin key is confined to its own tenant;
another tenant's project or key id is a 404.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re

from aigw import errors
from aigw.http.admin_api import AdminApi
from aigw.http.admin_guard import Download, admin_scope, guarded
from aigw.http.auth import Authenticator
from aigw.http.request import HttpRequest
from aigw.pipeline.context import Principal
from aigw.stores.base import NANO, SpendQuery
from aigw.stores.spend_csv import spend_csv
from aigw.types import JSON

GROUPS = ("key", "project", "tenant", "model", "day")
_DAY = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")


def _day(name: str, raw: str | None) -> str | None:
    """A whole UTC day, YYYY-MM-DD and nothing more: anything after it was cut off and ignored."""
    if not raw:
        return None
    try:
        if not _DAY.fullmatch(raw):
            raise ValueError(raw)
        return dt.date.fromisoformat(raw).isoformat()
    except ValueError:
        raise errors.InvalidRequest(f"{name}: expected a date like 2026-11-30", param=name) from None


def _days(since: str | None, until: str | None) -> tuple[str | None, str | None]:
    """``since`` and ``until``, in order: the wrong way round is a mistake to say, not an empty report."""
    first, last = _day("since", since), _day("until", until)
    if first and last and first > last:
        raise errors.InvalidRequest(f"since: {first} is after until {last}", param="since")
    return first, last


def _limit(raw: str | None) -> int:
    try:
        value = int(raw or 1000)
    except ValueError:
        raise errors.InvalidRequest("limit: expected a whole number", param="limit") from None
    if not 1 <= value <= 10_000:
        raise errors.InvalidRequest("limit: between 1 and 10000", param="limit")
    return value


class SpendApi:
    def __init__(self, admin: AdminApi) -> None:
        self.admin = admin

    async def spend(self, req: HttpRequest, p: Principal) -> tuple[int, JSON | Download]:
        q = req.query
        group = q.get("group_by", "key")
        if group not in GROUPS:
            raise errors.InvalidRequest(f"group_by: one of {', '.join(GROUPS)}", param="group_by")
        fmt = q.get("format", "json")
        if fmt not in ("json", "csv"):
            raise errors.InvalidRequest("format: json or csv", param="format")
        scope = admin_scope(p)
        tenant_id, project_id, key_id = scope, None, None
        if ident := q.get("tenant"):
            tenant_id = (await self.admin.tenant(ident, scope)).id
        if ident := q.get("project"):
            project_id = (await self.admin.project(ident, tenant_id)).id
        if ident := q.get("key"):
            key = await self.admin.key(ident, tenant_id)
            key_id = key.id
        since, until = _days(q.get("since"), q.get("until"))
        limit = _limit(q.get("limit"))
        query = SpendQuery(group_by=group, tenant_id=tenant_id, project_id=project_id,  # type: ignore[arg-type]
                           key_id=key_id, since_day=since, until_day=until, limit=limit + 1)  # one more: has_more
        rows = await self.admin.db.spend(query)
        more, rows = len(rows) > limit, rows[:limit]
        if fmt == "csv":
            return 200, Download(spend_csv(rows, group).encode(), b"text/csv; charset=utf-8", f"spend-by-{group}.csv")
        if more:  # the total is the whole bill's, not the shown rows': sum it over every tenant's rows instead
            rows_all = await self.admin.db.spend(dataclasses.replace(query, group_by="tenant", limit=10**9))
            total = _nano_sum(rows_all)
        else:
            total = _nano_sum(rows)
        return 200, {"object": "spend_report", "group_by": group, "since": query.since_day,
                     "until": query.until_day, "total_cost_usd": total / NANO, "total_cost_nano": total,
                     "has_more": more, "data": rows}


def _nano_sum(rows: list[JSON]) -> int:
    """The rows' ``cost_nano`` summed: the rollups' own integers (the ledger's unit), never floats rounded back
    (which drift by a nano or more once a row passes 2**53 nano-dollars, ~$9M)."""
    return sum(int(r["cost_nano"]) for r in rows)


def register(app: object, auth: Authenticator, api: SpendApi) -> None:
    app.route("GET", "/admin/spend", guarded(auth, api.spend))  # type: ignore[attr-defined]


