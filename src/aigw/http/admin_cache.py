"""DELETE /admin/cache: drop cached answers: a tenant's, a model's, both, or all.

    DELETE /admin/cache[?tenant=ID|NAME][&model=NAME]

For when an answer must not be served again before its TTL: a model behind a name
changed, a prompt template was fixed, a bad answer got cached. The master key
purges every entry, or one tenant's with ``tenant=``; a tenant admin key purges
its own tenant's only (another tenant is a 404, as everywhere in the admin API).
``model=`` (a public model name; an unknown one is a 404) narrows either to that
model's answers. An empty, repeated or unknown parameter (``?tenat=acme``) is a 400 and purges
nothing: read as absent it would purge every tenant's or every model's answers. So is a body with any field
(``{"tenant": "acme"}``): the filters go in the query string.

Exact entries and semantic buckets go, in every backend: this process's memory
store and Redis (shared by all replicas). What other processes hold on their own
(memory stores, near copies of Redis entries) they drop when they read the purge
in the purge log, within about a quarter of a second (``stores/purge_log.py``). The workers of one
``aigw serve --workers N`` without Redis drop their copies of the parent's entries before the call returns
(``stores/cache_hosted.py``): no worker serves a purged answer once it has.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aigw import errors
from aigw.http.admin_guard import MAX_BODY, admin_scope, guarded
from aigw.http.admin_query import strict_query
from aigw.http.auth import Authenticator
from aigw.http.request import HttpRequest, json_object
from aigw.pipeline.context import Principal
from aigw.pipeline.stages.cache import CacheStage
from aigw.pipeline.stages.cache_purge import PurgeFailed
from aigw.stores.base import Tenant
from aigw.types import JSON

log = logging.getLogger("aigw.admin")
PARAMS = ("tenant", "model")  # none: every tenant's (the caller's) answers of every model; ``admin_query``
TenantLookup = Callable[[str, str | None], Awaitable[Tenant]]  # (id or name, caller's scope) -> tenant or 404


class CacheAdmin:
    def __init__(self, cache: CacheStage, tenant_of: TenantLookup | None, known_model: Callable[[str], bool]) -> None:
        self.cache = cache
        self.tenant_of = tenant_of  # None without tenancy: there are no tenants to name
        self.known_model = known_model

    async def purge(self, req: HttpRequest, p: Principal) -> tuple[int, JSON]:
        q = strict_query(req, PARAMS)
        raw = await req.read_body(MAX_BODY)  # read as absent, {"tenant": "acme"} purged every tenant's answers
        if raw.strip() and (body := json_object(raw)):
            field = next(iter(body))
            raise errors.InvalidRequest(f"{field}: the purge reads no body; give `tenant` and `model` in the query "
                                        "string (DELETE /admin/cache?tenant=...&model=...)", param=field)
        tenant = admin_scope(p)
        if ident := q.get("tenant"):
            if self.tenant_of is None:
                raise errors.NotFound(f"No tenant `{ident}`.", code="tenant_not_found")
            tenant = (await self.tenant_of(ident, tenant)).id
        model = q.get("model")
        if model is not None and not self.known_model(model):
            raise errors.NotFound(f"The model `{model}` does not exist.", param="model", code="model_not_found")
        try:
            deleted = await self.cache.purge(tenant, model)
        except PurgeFailed as exc:
            done = ", ".join(f"{name}: {n}" for name, n in exc.done.items()) or "none"
            where = "the purge log" if exc.backend == "purge log" else f"the {exc.backend} cache backend"
            raise errors.Unavailable(f"The cache purge failed at {where} ({exc}); entries deleted so far: {done}. "
                                     "Repeat the call.", retry_after=1.0) from None
        total = sum(deleted.values())
        log.info("cache purge by %s: tenant=%s model=%s deleted=%d %s", p.key_id or "master",
                 tenant or "*", model or "*", total, deleted)
        return 200, {"object": "cache.purge", "tenant": tenant, "model": model, "deleted": total,
                     "by_backend": deleted}


def register(app: Any, auth: Authenticator, cache: CacheStage, tenant_of: TenantLookup | None,
             known_model: Callable[[str], bool]) -> None:
    """Add the route to a GatewayApp (called from app.py when the pipeline has a cache stage)."""
    app.route("DELETE", "/admin/cache", guarded(auth, CacheAdmin(cache, tenant_of, known_model).purge))
