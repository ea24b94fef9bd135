"""GET /admin/requests (filtered, paged) and GET /admin/requests/{id}: the request log.

Master key (or an admin key) only. An admin key that belongs to a tenant sees
that tenant's requests and nothing else; another tenant's request id is a 404,
and so is a ``key_id`` filter naming another tenant's key or no key at all (the
same 404 either way, as on ``/admin/spend``). The master key may name any key,
and ``key_id=master`` for its own requests.
``tenant`` (an id or name) narrows the list to one tenant's requests, for the master key as on ``/admin/spend``;
a tenant admin key is held to its own tenant whatever it names (another tenant is a 404), and a ``key_id`` of
another tenant than the one named is a 404 too.
Filters: ``since`` / ``until`` (epoch seconds or ISO 8601), ``tenant``, ``key_id``,
``model``, ``status`` (``429`` or a class: ``4xx``), ``min_latency_ms``;
paging with ``limit`` (1..500) and the ``next_cursor`` of the previous page. Any other parameter, or one
given twice or left empty, is a 400 naming it (``admin_query``): read as absent, ``key_id=`` or ``stauts=500``
listed every request. ``GET /admin/requests/{id}`` takes no parameters: any is a 400 naming it.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from aigw import errors
from aigw.http.admin_guard import Handler, admin_scope, guarded
from aigw.http.admin_query import strict_query
from aigw.http.auth import Authenticator
from aigw.http.request import HttpRequest
from aigw.observability.request_log import (
    MAX_PAGE,
    RequestLogWriter,
    RequestQuery,
    decode_cursor,
    encode_cursor,
)
from aigw.pipeline.context import Principal
from aigw.stores.base import ApiKey, Tenant
from aigw.types import JSON

PREFIX = "/admin/requests/"
FILTERS = ("since", "until", "tenant", "key_id", "model", "status", "min_latency_ms", "limit", "cursor")
_HINTS = {"key": "did you mean `key_id`?", "tenant_id": "did you mean `tenant`?", "from": "did you mean `since`?",
          "to": "did you mean `until`?",
          "after": "did you mean `cursor`? (the `next_cursor` of the previous page)"}
KeyLookup = Callable[[str, str | None], Awaitable[ApiKey]]  # (key id, caller's scope) -> the key or a 404
TenantLookup = Callable[[str, str | None], Awaitable[Tenant]]  # (id or name, caller's scope) -> tenant or 404


def _time(name: str, raw: str) -> float:
    try:
        seconds = float(raw)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):  # "inf" or "nan" would match every request, or none
            raise errors.InvalidRequest(f"`{name}` must be a finite number of epoch seconds", param=name)
        return seconds
    try:
        parsed = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise errors.InvalidRequest(f"`{name}` must be epoch seconds or an ISO 8601 time", param=name) from None
    # a time without a zone is UTC, as everywhere in the admin API (not the server's own zone)
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).timestamp()


def _number(name: str, raw: str) -> float:
    try:
        return float(raw)
    except ValueError:
        raise errors.InvalidRequest(f"`{name}` must be a number", param=name) from None


def _whole(name: str, raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise errors.InvalidRequest(f"`{name}` must be a whole number", param=name) from None


def parse_query(args: dict[str, str], tenant_id: str) -> RequestQuery:
    """The filters (``FILTERS``, as ``strict_query`` read them) as a request log query, each value checked."""
    q = RequestQuery(key_id=args.get("key_id", ""), model=args.get("model", ""), tenant_id=tenant_id)
    if "since" in args:
        q.since = _time("since", args["since"])
    if "until" in args:
        q.until = _time("until", args["until"])
    if q.since is not None and q.until is not None and q.since >= q.until:  # an empty window, never a request
        raise errors.InvalidRequest(f"`since` ({args['since']}) must be before `until` ({args['until']}, "
                                    "exclusive)", param="since")
    if status := args.get("status", ""):
        # ASCII digits only: "²" passes isdigit() yet int() refuses it, and a huge number overflowed the
        # SQLite binding; both were a 503 ("cannot be read") for what is a typo
        if len(status) == 3 and status[0] in "12345" and status[1:].lower() == "xx":
            q.status_class = int(status[0])
        elif len(status) == 3 and status.isascii() and status.isdigit():
            q.status = int(status)
        else:
            raise errors.InvalidRequest("`status` must be a code (429) or a class (4xx)", param="status")
    if "min_latency_ms" in args:
        q.min_latency_ms = _number("min_latency_ms", args["min_latency_ms"])
        if not math.isfinite(q.min_latency_ms):  # "nan" matched nothing, silently: refused like since's
            raise errors.InvalidRequest("`min_latency_ms` must be a finite number", param="min_latency_ms")
    limit = _whole("limit", args["limit"]) if "limit" in args else 50
    if not 1 <= limit <= MAX_PAGE:
        raise errors.InvalidRequest(f"`limit` must be between 1 and {MAX_PAGE}", param="limit")
    q.limit = limit
    if cursor := args.get("cursor"):
        try:
            q.cursor = decode_cursor(cursor)
        except Exception:
            raise errors.InvalidRequest("`cursor` is not one this endpoint gave out", param="cursor") from None
    return q


class AdminRequests:
    def __init__(self, auth: Authenticator, writer: RequestLogWriter, key_of: KeyLookup | None = None,
                 tenant_of: TenantLookup | None = None) -> None:
        self.auth = auth
        self.writer = writer  # flushed before each read: a request is listed as soon as it finished
        self.key_of = key_of  # the admin API's own lookup; None without tenancy: there are no keys to name
        self.tenant_of = tenant_of  # likewise for tenants
        # answered like every other admin endpoint: a refusal in the OpenAI error shape, a request log whose
        # database is down a 503 with Retry-After, a bug a 500
        self.list: Handler = guarded(auth, self._list)
        self.get: Handler = guarded(auth, self._get)

    async def _tenant(self, ident: str | None, principal: Principal) -> str | None:
        """The tenant the list is held to: the one ``tenant`` names (another than a tenant admin's own is a
        404, as one that does not exist), else the caller's own (None: the master key's, every tenant)."""
        scope = admin_scope(principal)
        if ident is None:
            return scope
        if self.tenant_of is None:  # no tenancy: there are no tenants to name
            raise errors.NotFound(f"No tenant `{ident}`.", code="tenant_not_found")
        return (await self.tenant_of(ident, scope)).id

    async def _check_key(self, key_id: str, principal: Principal, tenant: str | None) -> None:
        """A ``key_id`` filter names a key the caller may see in ``tenant``, else a 404 as everywhere in the
        admin API: an empty list would tell a tenant admin nothing, yet differ from the 404 of every other lookup."""
        if not key_id or self.key_of is None:
            return
        if key_id == principal.key_id and tenant == admin_scope(principal):  # its own requests ("master")
            return
        await self.key_of(key_id, tenant)

    async def _list(self, req: HttpRequest, principal: Principal) -> tuple[int, JSON]:
        args = strict_query(req, FILTERS, _HINTS)
        tenant = await self._tenant(args.get("tenant"), principal)
        q = parse_query(args, tenant or "")
        await self._check_key(q.key_id, principal, tenant)
        want = q.limit
        q.limit = want + 1  # one more, to know whether there is a next page
        await self.writer.flush()
        items = await self.writer.store.query(q)
        more = len(items) > want
        items = items[:want]
        cursor = encode_cursor(items[-1].ts, items[-1].request_id) if more and items else None
        return 200, {"object": "list", "data": [r.to_json() for r in items], "has_more": more,
                     "next_cursor": cursor}

    async def _get(self, req: HttpRequest, principal: Principal) -> tuple[int, JSON]:
        strict_query(req, ())
        request_id = req.path[len(PREFIX):].strip("/")  # `req_x/` names it, as every admin id does
        await self.writer.flush()
        record = await self.writer.store.get(request_id, principal.tenant_id) if request_id else None
        if record is None:
            raise errors.NotFound(f"No request `{request_id}` in the request log.")
        return 200, record.to_json()

