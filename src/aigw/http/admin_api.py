"""The tenancy admin API: tenants, projects, keys (create, list, update, revoke, rotate).

    POST /admin/tenants            GET /admin/tenants            GET|PATCH|DELETE /admin/tenants/{id}
    POST /admin/projects           GET /admin/projects?tenant=   GET|PATCH|DELETE /admin/projects/{id}
    POST /admin/keys               GET /admin/keys?project=&tenant=
    GET|PATCH|DELETE /admin/keys/{id}    POST /admin/keys/{id}/revoke    POST /admin/keys/{id}/rotate

Lists come oldest first; with ``limit`` (1-1000) in pages, ``after`` the last id of
the page before (``has_more``, ``first_id``, ``last_id`` as in OpenAI's lists). Query strings are read
strictly (``admin_query``): a list's filter misspelt, repeated or empty is a 400 naming it, and the other
endpoints take none (``POST .../rotate?grace_s=60`` would rotate with no grace, ``DELETE ...?dry_run=1`` disable).
The master key sees everything. A tenant admin key (role ``tenant_admin``) sees
its own tenant only: any other tenant's id, project or key is a 404, exactly
as if it did not exist. Every change bumps the key version, which every
replica polls, so caches everywhere drop within ``tenancy.key_refresh_s``.
A tenant admin never grants more than its own key holds, nor enables what the master key disabled
(``admin_bounds.py``). Spend reports live in ``admin_spend.py``; what every admin endpoint shares (auth, bodies,
answers, the audit line of each change) in ``admin_guard.py``; what each change does to a record, applied by the
store under the record's row lock to the record as saved, in ``admin_patch.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from aigw import errors
from aigw.http.admin_bounds import check_within, guarded_metadata, switch
from aigw.http.admin_guard import SavedUnannounced, admin_scope, guarded, parse_body, parse_optional_body
from aigw.http.admin_lists import list_query, listing, one_more, page_size
from aigw.http.admin_models import (
    KeyIn,
    KeyPatch,
    NoBody,
    ProjectIn,
    ProjectPatch,
    RotateIn,
    TenantIn,
    TenantPatch,
    key_out,
    key_status,
    project_out,
    tenant_out,
)
from aigw.http.admin_patch import apply_patch, disable_tenant, patch_key, patch_project, revoke_key, rotate_key
from aigw.http.admin_query import strict_query
from aigw.http.auth import Authenticator
from aigw.http.request import HttpRequest
from aigw.pipeline.context import Principal
from aigw.stores.base import ApiKey, Database, KeyVersion, Limits, Project, Tenant
from aigw.stores.database import AmbiguousName
from aigw.stores.keygen import display_prefix, hash_secret, new_id, new_secret
from aigw.stores.sql import UniqueViolation
from aigw.types import JSON, Clock

log = logging.getLogger("aigw.admin")
def _not_found(what: str, ident: str) -> errors.NotFound:
    return errors.NotFound(f"No {what} `{ident}`.", code=f"{what}_not_found")


def _tenant_taken(name: str, other: Tenant | None = None) -> errors.InvalidRequest:
    """``other``: the tenant found for ``name``, which may be one whose id it is (ids win over names)."""
    said = (f"`{name}` is the id of tenant `{other.name}`; a tenant cannot be named after another's id."
            if other is not None and other.name != name else f"A tenant named `{name}` exists already.")
    return errors.InvalidRequest(said, status=409, code="already_exists", param="name")


def _project_taken(tenant_name: str, name: str) -> errors.InvalidRequest:
    return errors.InvalidRequest(f"Tenant `{tenant_name}` has a project `{name}` already.", status=409,
                                 code="already_exists", param="name")


@dataclass(frozen=True, slots=True)
class BudgetChange:
    """A tenant's, project's or key's limits as saved by one admin call, with what they were before."""

    kind: str  # "tenant" | "project" | "key"
    ident: str
    tenant_id: str
    before: Limits
    after: Limits
    request_id: str

    @property
    def budget_moved(self) -> bool:
        """The budget's amount or period changed (a PATCH that leaves them as they were did not)."""
        return (self.before.budget_usd, self.before.budget_period) != (self.after.budget_usd, self.after.budget_period)


BudgetChanged = Callable[[BudgetChange], Awaitable[None]]


class AdminApi:
    def __init__(self, db: Database, version: KeyVersion, clock: Clock, on_change: Callable[[], None],
                 on_budget: BudgetChanged | None = None, on_bump_failed: Callable[[], None] | None = None,
                 on_revoke: Callable[[ApiKey], Awaitable[None]] | None = None,
                 on_new_secret: Callable[[str], None] | None = None) -> None:
        self.db = db
        self.version = version
        self.clock = clock
        self._on_change = on_change  # this replica's own cache: drop it at once
        self._on_bump_failed = on_bump_failed  # the version is bumped later, when the store is back
        # a budget added or changed mid-window: its counter starts from what the window has spent already
        self._on_budget = on_budget
        self._on_revoke = on_revoke  # a revoked key (each change of one): its budget counters can go
        self._on_new_secret = on_new_secret  # a secret's hash made here: this replica's key filter knows it at once

    async def _budget_changed(self, req: HttpRequest, change: BudgetChange) -> None:
        """Any PATCH that leaves a budget set seeds it (seeding only raises, so a repeated call is harmless
        and finishes what a failed one could not)."""
        if self._on_budget is not None and change.after.budget_usd is not None and (
                req.method == "PATCH" or change.budget_moved):
            try:
                await self._on_budget(change)
            except errors.Unavailable as exc:  # saved all the same: in the audit trail with its 503
                raise SavedUnannounced(exc.message, {"id": change.ident, "tenant_id": change.tenant_id}) from None

    async def _changed(self, ident: str, tenant_id: str) -> None:
        """Tell this replica and the others that the record ``ident`` of ``tenant_id`` changed (it is saved)."""
        self._on_change()
        try:
            await self.version.bump()
        except Exception as exc:  # saved, but other replicas cannot be told yet: say so, the call is repeatable
            log.error("key version bump failed (%s): other replicas keep their cached keys until it is retried",
                      type(exc).__name__)
            if self._on_bump_failed is not None:
                self._on_bump_failed()
            raise SavedUnannounced("The change is saved, but other replicas could not be notified yet (store "
                                   "unavailable); they will be once it answers again, or repeat the call.",
                                   {"id": ident, "tenant_id": tenant_id}) from None

    # -- lookups that respect the caller's tenant ------------------------------------
    # An ident with NUL names nothing (no name may hold one), and PostgreSQL would refuse it with a 500.
    # A tenant admin's lookups read its own tenant's rows only: another tenant's id or name costs the same
    # work (and time) as one that does not exist, so neither the answer nor its timing tells them apart.
    async def tenant(self, ident: str, scope: str | None) -> Tenant:
        if scope is not None:  # its own tenant, by id or name, or nothing
            own = await self.db.get_tenant(scope)
            if own is None or "\x00" in ident or ident not in (own.id, own.name):
                raise _not_found("tenant", ident)
            return own
        t = await self.db.find_tenant(ident) if "\x00" not in ident else None
        if t is None:
            raise _not_found("tenant", ident)
        return t

    async def project(self, ident: str, scope: str | None) -> Project:
        try:
            p = await self.db.find_project(ident, scope) if "\x00" not in ident else None
        except AmbiguousName:  # the master key, and projects of several tenants have this name
            raise errors.InvalidRequest(f"Project name `{ident}` is ambiguous: several tenants have a project of "
                                        "that name. Pass the project's id (or, to a list or report, its tenant "
                                        "too).", status=409, code="ambiguous_name", param="project") from None
        if p is None:
            raise _not_found("project", ident)
        return p

    async def key(self, ident: str, scope: str | None) -> ApiKey:
        k = await self.db.get_key(ident, scope) if "\x00" not in ident else None
        if k is None or (scope is not None and k.tenant_id != scope):
            raise _not_found("key", ident)
        return k

    # -- tenants -----------------------------------------------------------------------
    async def create_tenant(self, req: HttpRequest, p: Principal) -> tuple[int, JSON]:
        strict_query(req, ())
        if admin_scope(p) is not None:
            raise errors.PermissionDenied("Only the master key can create tenants.")
        body = await parse_body(req, TenantIn)
        if (other := await self.db.find_tenant(body.name)) is not None:
            raise _tenant_taken(body.name, other)
        t = Tenant(id=new_id("ten"), name=body.name, limits=body.limits(), metadata=body.metadata,
                   created_at=self.clock.now())
        try:
            await self.db.add_tenant(t)
        except UniqueViolation:  # a concurrent call took the name after the check above
            raise _tenant_taken(body.name) from None
        return 201, tenant_out(t)

    async def list_tenants(self, req: HttpRequest, p: Principal) -> tuple[int, JSON]:
        q = list_query(req)
        scope = admin_scope(p)
        limit = page_size(q.get("limit"))
        after = await self.tenant(ident, scope) if (ident := q.get("after")) else None
        if scope is not None:  # a tenant admin: its own tenant, one item (none after it: it is the last)
            return 200, listing([] if after else [await self.tenant(scope, scope)], limit, tenant_out)
        return 200, listing(await self.db.list_tenants(one_more(limit), after), limit, tenant_out)

    async def tenant_item(self, req: HttpRequest, p: Principal) -> tuple[int, JSON]:
        strict_query(req, ())
        ident = req.path.removeprefix("/admin/tenants/").strip("/")
        t = await self.tenant(ident, admin_scope(p))
        if req.method == "GET":
            return 200, tenant_out(t)
        if admin_scope(p) is not None:
            raise errors.PermissionDenied("Only the master key can change tenants.")
        change: Callable[[Tenant], set[str]] = disable_tenant
        name = ""
        if req.method == "DELETE":
            await parse_optional_body(req, NoBody)
        if req.method == "PATCH":
            body = await parse_body(req, TenantPatch)
            if (name := body.name or "") and (other := await self.db.find_tenant(name)) and other.id != t.id:
                raise _tenant_taken(name, other)
            change = partial(apply_patch, body=body)
        try:  # applied to the tenant as saved now, under its row lock: a change saved meanwhile stands
            saved = await self.db.update_tenant(t.id, change)
        except UniqueViolation:  # renamed to a name a concurrent call took after the check above
            raise _tenant_taken(name) from None
        if saved is None:
            raise _not_found("tenant", ident)
        before, t = saved
        await self._budget_changed(req, BudgetChange("tenant", t.id, t.id, before.limits, t.limits, req.request_id))
        await self._changed(t.id, t.id)
        return 200, tenant_out(t)

    # -- projects ----------------------------------------------------------------------
    async def create_project(self, req: HttpRequest, p: Principal) -> tuple[int, JSON]:
        strict_query(req, ())
        body = await parse_body(req, ProjectIn)
        scope = admin_scope(p)
        if not body.tenant and scope is None:
            raise errors.InvalidRequest("tenant: required (a tenant id or name)", param="tenant")
        t = await self.tenant(body.tenant or str(scope), scope)
        if await self.db.find_project(body.name, t.id) is not None:
            raise _project_taken(t.name, body.name)
        proj = Project(id=new_id("prj"), tenant_id=t.id, name=body.name, limits=body.limits(),
                       metadata=guarded_metadata(None, body.metadata, p), created_at=self.clock.now())
        try:
            await self.db.add_project(proj)
        except UniqueViolation:  # a concurrent call took the name after the check above
            raise _project_taken(t.name, body.name) from None
        return 201, project_out(proj)

    async def list_projects(self, req: HttpRequest, p: Principal) -> tuple[int, JSON]:
        q = list_query(req, "tenant")
        scope = admin_scope(p)
        tenant_id = scope
        if ident := q.get("tenant"):
            tenant_id = (await self.tenant(ident, scope)).id
        limit = page_size(q.get("limit"))  # `after` is read in the list's tenant, as a key list's `project`
        after = await self.project(ident, tenant_id) if (ident := q.get("after")) else None
        return 200, listing(await self.db.list_projects(tenant_id, one_more(limit), after), limit, project_out)

    async def project_item(self, req: HttpRequest, p: Principal) -> tuple[int, JSON]:
        strict_query(req, ())
        ident = req.path.removeprefix("/admin/projects/").strip("/")
        proj = await self.project(ident, admin_scope(p))
        if req.method == "GET":
            return 200, project_out(proj)
        change: Callable[[Project], set[str]] = partial(switch, enabled=False, by=p)
        name = ""
        if req.method == "DELETE":
            await parse_optional_body(req, NoBody)
        if req.method == "PATCH":
            body = await parse_body(req, ProjectPatch)
            if (name := body.name or "") and (other := await self.db.find_project(name, proj.tenant_id)) \
                    and other.id != proj.id:
                raise _project_taken((await self.tenant(proj.tenant_id, None)).name, name)
            change = partial(patch_project, body=body, by=p)
        try:  # applied to the project as saved now, under its row lock: a change saved meanwhile stands
            saved = await self.db.update_project(proj.id, change, tenant_admin=admin_scope(p) is not None)
        except UniqueViolation:  # renamed to a name a concurrent call took after the check above
            raise _project_taken((await self.tenant(proj.tenant_id, None)).name, name) from None
        if saved is None:
            raise _not_found("project", ident)
        before, proj = saved
        await self._budget_changed(req, BudgetChange("project", proj.id, proj.tenant_id, before.limits, proj.limits,
                                                     req.request_id))
        await self._changed(proj.id, proj.tenant_id)
        return 200, project_out(proj)

    # -- keys --------------------------------------------------------------------------
    async def create_key(self, req: HttpRequest, p: Principal) -> tuple[int, JSON]:
        strict_query(req, ())
        body = await parse_body(req, KeyIn)
        if body.expires_at is not None and body.expires_at <= self.clock.now():  # a key that could never work
            raise errors.InvalidRequest("expires_at is in the past", param="expires_at")
        proj = await self.project(body.project, admin_scope(p))
        secret = new_secret()
        k = ApiKey(id=new_id("key"), tenant_id=proj.tenant_id, project_id=proj.id, key_hash=hash_secret(secret),
                   prefix=display_prefix(secret), name=body.name, allowed_models=body.models,
                   limits=body.limits(), expires_at=body.expires_at, role=body.role,
                   metadata=guarded_metadata(None, body.metadata, p),
                   created_at=self.clock.now())
        if (own := await self._own_key(p)) is not None:
            check_within(own, k)
        await self.db.add_key(k)  # no version bump: a fresh random secret cannot be cached anywhere yet
        if self._on_new_secret is not None:
            self._on_new_secret(k.key_hash)
        return 201, key_out(k, secret, (await self._statuses([k]))[k.id])

    async def list_keys(self, req: HttpRequest, p: Principal) -> tuple[int, JSON]:
        q = list_query(req, "tenant", "project")
        scope = admin_scope(p)
        tenant_id, project_id = scope, None
        if ident := q.get("tenant"):
            tenant_id = (await self.tenant(ident, scope)).id
        if ident := q.get("project"):
            project_id = (await self.project(ident, tenant_id)).id
        limit = page_size(q.get("limit"))
        after = await self._key_in_list(ident, tenant_id, project_id) if (ident := q.get("after")) else None
        keys = await self.db.list_keys(tenant_id, project_id, one_more(limit), after)
        statuses = await self._statuses(keys)
        return 200, listing(keys, limit, lambda k: key_out(k, status=statuses[k.id]))

    async def _key_in_list(self, ident: str, tenant_id: str | None, project_id: str | None) -> ApiKey:
        """A key list's ``after``, read in the list's tenant and project (as a project list's): one outside it
        would page from where it sits in time, a page that skips or repeats keys; a 404 instead."""
        k = await self.key(ident, tenant_id)
        if project_id is not None and k.project_id != project_id:
            raise _not_found("key", ident)
        return k

    async def key_item(self, req: HttpRequest, p: Principal) -> tuple[int, JSON]:
        strict_query(req, ())
        ident, _, action = req.path.removeprefix("/admin/keys/").strip("/").partition("/")
        k = await self.key(ident, admin_scope(p))
        secret: str | None = None
        if req.method == "GET" and not action:
            return 200, key_out(k, status=(await self._statuses([k]))[k.id])
        # Each change is applied to the key as saved when it writes, under its row lock, and writes only the
        # columns it changed: a call that waited (for its body, say) after reading the key must not undo what
        # another call saved meanwhile (a revoke, a rotated-out secret, a limit or guardrails entry it left out)
        change: Callable[[ApiKey], set[str]]
        if (req.method == "POST" and action == "revoke") or (req.method == "DELETE" and not action):
            await parse_optional_body(req, NoBody)
            change = partial(revoke_key, now=self.clock.now())
        elif req.method == "POST" and action == "rotate":
            if k.revoked_at is not None:
                raise errors.InvalidRequest("A revoked key cannot be rotated.", code="key_revoked")
            grace_s = (await parse_optional_body(req, RotateIn)).grace_s
            secret = new_secret()
            change = partial(rotate_key, key_hash=hash_secret(secret), prefix=display_prefix(secret),
                             previous_until=self.clock.now() + grace_s if grace_s > 0 else None,
                             own=await self._own_key(p))
        elif req.method == "PATCH" and not action:
            body = await parse_body(req, KeyPatch)  # a revoked key's limits, models, expiry, switch: a 400
            change = partial(patch_key, body=body, by=p, own=await self._own_key(p))
        else:
            raise errors.NotFound(f"Unknown endpoint {req.method} {req.path}.")
        saved = await self.db.update_key(k.id, change, tenant_admin=admin_scope(p) is not None)
        if saved is None:
            raise _not_found("key", ident)
        before, k = saved
        if secret is not None and self._on_new_secret is not None:
            self._on_new_secret(hash_secret(secret))
        if k.revoked_at is None:
            await self._budget_changed(req, BudgetChange("key", k.id, k.tenant_id, before.limits, k.limits,
                                                         req.request_id))
        elif self._on_revoke is not None:  # never seeded again (a `total` window would stay for good); dropped on
            await self._on_revoke(k)  # every call and before the bump, so a revoke repeated after a 503 finishes it
        await self._changed(k.id, k.tenant_id)
        return 200, key_out(k, secret, (await self._statuses([k]))[k.id])

    async def _statuses(self, keys: list[ApiKey]) -> dict[str, str]:
        """Key id -> ``key_status``: one read of the keys' projects and tenants."""
        states = await self.db.enabled_states({k.project_id for k in keys})
        now = self.clock.now()
        return {k.id: key_status(k, states, now) for k in keys}

    async def _own_key(self, p: Principal) -> ApiKey | None:
        """A tenant admin's own key as saved now (what it may grant: ``admin_bounds``); None for the master key."""
        if (scope := admin_scope(p)) is None:
            return None
        own = await self.db.get_key(p.key_id, scope)
        if own is None:  # cannot be while its key authenticates; refused rather than unbounded if it ever is
            raise errors.PermissionDenied("This admin key is not found.")
        return own


def register(app: Any, auth: Authenticator, api: AdminApi) -> None:
    """Add the routes to a GatewayApp (called from app.py)."""
    g = guarded
    app.route("POST", "/admin/tenants", g(auth, api.create_tenant, audit=True))
    app.route("GET", "/admin/tenants", g(auth, api.list_tenants))
    app.route("POST", "/admin/projects", g(auth, api.create_project, audit=True))
    app.route("GET", "/admin/projects", g(auth, api.list_projects))
    app.route("POST", "/admin/keys", g(auth, api.create_key, audit=True))
    app.route("GET", "/admin/keys", g(auth, api.list_keys))
    for method in ("GET", "PATCH", "DELETE"):
        change = method != "GET"
        app.route_prefix(method, "/admin/tenants/", g(auth, api.tenant_item, audit=change))
        app.route_prefix(method, "/admin/projects/", g(auth, api.project_item, audit=change))
        app.route_prefix(method, "/admin/keys/", g(auth, api.key_item, audit=change))
    app.route_prefix("POST", "/admin/keys/", g(auth, api.key_item, audit=True))  # revoke, rotate
