"""GET /admin/spend: the bill, from the daily rollups (never a scan of the ledger).

    GET /admin/spend?group_by=key|project|tenant|model|day
                    [&tenant=ID|NAME][&project=ID|NAME][&key=ID][&model=NAME][&since=YYYY-MM-DD][&until=YYYY-MM-DD]
                    [&limit=N][&format=json|csv]

Days are UTC and inclusive. ``model`` is the billed model (the one that served the call). An unknown, repeated or
empty parameter is a 400 naming it (``admin_spend_query``). At most ``limit`` rows (1000 by default, up to
10000): the dearest groups first (by day: the earliest days). ``has_more`` says that rows were left out;
``total_cost_usd`` is always the whole report's, left-out rows included: ``total_cost_nano`` is the exact sum of
the rows' ``cost_nano`` (the rollups' integer nano-dollars; ``cost_usd`` is each over 1e9), ``total_cost_usd`` it
over 1e9. Rows grouped by project or tenant carry its name too (``project_name``, ``tenant_name``; looked up in
the small projects or tenants table, never the ledger). ``format=csv`` answers the rows as a CSV file for a
spreadsheet: the group's columns first, costs with nine decimals (the ledger's nano-dollar precision, never
``1e-05``); as a file has no room for them, ``has_more`` and ``total_cost_nano`` come as the headers
``X-Aigw-Has-More`` and ``X-Aigw-Total-Cost-Nano``; a name a spreadsheet would run as a formula (``=``, ``+``,
``-``, ``@`` first) starts with ``'`` there. A tenant admin key is confined to its own tenant; another
tenant's project or key id is a 404. The master key names its own calls with ``key=master`` (as the request log's
``key_id=master``).
"""

from __future__ import annotations

import dataclasses

from aigw import errors
from aigw.http.admin_api import AdminApi
from aigw.http.admin_guard import Download, admin_scope, guarded
from aigw.http.admin_spend_query import days, group_of, limit_of, spend_params
from aigw.http.auth import Authenticator
from aigw.http.request import HttpRequest
from aigw.pipeline.context import Principal
from aigw.stores.base import NANO, SpendQuery
from aigw.stores.spend_csv import FIRST_COLUMNS, spend_csv
from aigw.types import JSON

MASTER_KEY_ID = "master"  # the key id the master key's own calls are billed under (``auth``'s principal)


class SpendApi:
    def __init__(self, admin: AdminApi) -> None:
        self.admin = admin

    async def spend(self, req: HttpRequest, p: Principal) -> tuple[int, JSON | Download]:
        q = spend_params(req)
        group = group_of(q.get("group_by", "key"))
        fmt = q.get("format", "json")
        if fmt not in ("json", "csv"):
            raise errors.InvalidRequest("format: json or csv", param="format")
        since, until = days(q.get("since"), q.get("until"))
        limit = limit_of(q.get("limit"))
        scope = admin_scope(p)
        tenant_id, project_id, key_id = scope, None, None
        if ident := q.get("tenant"):
            tenant_id = (await self.admin.tenant(ident, scope)).id
        if ident := q.get("project"):
            project_id = (await self.admin.project(ident, tenant_id)).id
        if (ident := q.get("key")) and ident == MASTER_KEY_ID and tenant_id is None and project_id is None:
            key_id = MASTER_KEY_ID  # the master key's own calls (no tenant), a row of the bill by key
        elif ident:
            key_id = (await self.admin.key(ident, tenant_id)).id
        query = SpendQuery(group_by=group, tenant_id=tenant_id, project_id=project_id,  # type: ignore[arg-type]
                           key_id=key_id, model=q.get("model"), since_day=since, until_day=until,
                           limit=limit + 1)  # one more: has_more
        rows = await self.admin.db.spend(query)
        more, rows = len(rows) > limit, rows[:limit]
        total = await self._total(query, rows, more)
        if fmt == "csv":
            headers = ((b"x-aigw-has-more", b"true" if more else b"false"), (b"x-aigw-total-cost-nano", b"%d" % total))
            return 200, Download(spend_csv(_inert(rows, group), group).encode(), b"text/csv; charset=utf-8",
                                 f"spend-by-{group}.csv", headers)
        return 200, {"object": "spend_report", "group_by": group, "since": query.since_day,
                     "until": query.until_day, "total_cost_usd": total / NANO, "total_cost_nano": total,
                     "has_more": more, "data": rows}

    async def _total(self, query: SpendQuery, rows: list[JSON], more: bool) -> int:
        """The whole bill's nano-dollars, not the shown rows': when rows were cut, summed over every tenant's."""
        if not more:
            return _nano_sum(rows)
        return _nano_sum(await self.admin.db.spend(dataclasses.replace(query, group_by="tenant", limit=10**9)))


_FORMULA = ("=", "+", "-", "@", "\t", "\r")  # what a spreadsheet reads a cell as a formula by (OWASP CSV injection)


def _inert(rows: list[JSON], group: str) -> list[JSON]:
    """``rows`` with each name a spreadsheet would run as a formula made text by a leading ``'``: a tenant admin
    names its keys and projects, and ``=HYPERLINK(...)`` ran when the master opened the bill. Numbers stay."""
    names = FIRST_COLUMNS[group]
    return [{**r, **{c: "'" + v for c in names if isinstance(v := r.get(c), str) and v.startswith(_FORMULA)}}
            for r in rows]


def _nano_sum(rows: list[JSON]) -> int:
    """The rows' ``cost_nano`` summed: the rollups' own integers (the ledger's unit), never floats rounded back
    (which drift by a nano or more once a row passes 2**53 nano-dollars, ~$9M)."""
    return sum(int(r["cost_nano"]) for r in rows)


def register(app: object, auth: Authenticator, api: SpendApi) -> None:
    app.route("GET", "/admin/spend", guarded(auth, api.spend))  # type: ignore[attr-defined]
