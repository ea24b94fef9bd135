"""Builds the cache stage from config and the stores ``app.py`` chose, checking the setup.

Mistakes that would otherwise show up as silent misses fail at startup with
the config path: a Redis backend without ``redis_url`` or ``cache.redis_url``, ``backend: memory`` beside
a ``cache.redis_url``, a store bound set per model, an embedding model that does not exist or cannot embed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aigw.accounting.tokens import upper_estimate
from aigw.config.cache import CacheConfig, global_only_fields_set, memory_with_url, semantic_extra_missing
from aigw.ids import unique_id
from aigw.pipeline.context import RequestContext
from aigw.pipeline.deployment_caps import DeploymentCaps, capped_deployments
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stages.cache import CacheStage
from aigw.pipeline.stages.cache_keys import semantic_blocker
from aigw.pipeline.stages.cache_policy import Policies, policies_from
from aigw.pipeline.stages.cache_semantic import CapsFor, DeploymentEmbedder, Embedders
from aigw.pipeline.stages.guardrail_policy import policies_for
from aigw.pipeline.tenancy import SERVICE as TENANCY
from aigw.pipeline.tenancy import TenancyServices
from aigw.routing.router import Router
from aigw.types import JSON

CACHE_SERVICES = ("cache_stores", "cache_indexes", "cache_embedders")


class CacheSetupError(ValueError):
    """The cache config cannot work with what is installed or configured."""


def build_stage(deps: StageDeps) -> CacheStage | None:
    policies = policies_from(deps)
    if policies is None:
        return None
    stores: dict[str, Any] = deps.services.get("cache_stores") or {}
    indexes: dict[str, Any] = deps.services.get("cache_indexes") or {}
    embedders = Embedders(deps.services.get("cache_embedders") or {}, deps.router, _embedding_caps(deps))
    _check_blocks(deps)
    placed = _placed(deps, policies.default, policies.by_model)
    for where, policy in placed:
        _check_policy(where, policy, stores, indexes, embedders)
    for _, policy in placed:  # load a local model now, not on the first request
        if policy.mode == "semantic":
            warm = getattr(embedders.get(policy.semantic.embedding_model), "load", None)
            if callable(warm):
                warm()
    stage = CacheStage(policies, stores, indexes, embedders, deps.supervisor, deps.clock,
                       deps.services.get("metrics"), deps.services.get("cache_purge_log"),
                       guard_tag=_guard_tag(deps))
    svc = deps.services.get(TENANCY)
    if isinstance(svc, TenancyServices) and deps.router is not None:  # a budget reserves the embedding too
        svc.side_plan = _embedding_plan(policies, embedders, deps.router)
    deps.services["cache_stats"] = stage.stats
    deps.services["cache_stage"] = stage  # for the admin purge (app.py)
    deps.services.setdefault("health_checks", {})["cache"] = (stage.health, False)
    return stage


def _embedding_caps(deps: StageDeps) -> CapsFor | None:
    """With tenancy on, an embedding deployment's own rpm/tpm caps count the cache's calls exactly, as they count
    requests' (shared by every replica: ``deployment_caps``); None without tenancy or capped deployments."""
    svc = deps.services.get(TENANCY)
    capped = capped_deployments(deps.config.models)
    if not isinstance(svc, TenancyServices) or not capped:
        return None
    now = deps.clock.now

    def caps(body: JSON) -> DeploymentCaps:
        return DeploymentCaps(svc, capped, unique_id("slot_"), upper_estimate(body), body, now)
    return caps


def _embedding_plan(policies: Policies, embedders: Embedders, router: Router
                    ) -> Callable[[RequestContext], tuple[str, int] | None]:
    """The embedding deployment a semantic lookup of a request would call, and the tries the router may make of
    it (each billed its prompt, a try cut short too), for the budget's worst case: a local model costs nothing,
    a lookup that will not run (not chat, or tools or turns block it) calls nothing."""
    def plan(ctx: RequestContext) -> tuple[str, int] | None:
        if ctx.endpoint != "chat":
            return None
        policy = policies.for_request(ctx)
        if policy.mode != "semantic":
            return None
        sem = policy.semantic
        if not isinstance(embedders.get(sem.embedding_model), DeploymentEmbedder) or \
                semantic_blocker(ctx.body, sem.max_turns, sem.with_tools):
            return None
        return sem.embedding_model, router.policy(sem.embedding_model).num_retries + 1
    return plan


def _guard_tag(deps: StageDeps) -> Callable[[RequestContext], str] | None:
    """A hit skips the output checks (they run after the cache), so an answer is shared only by requests
    under the same ones: a key whose metadata loosens them must not fill the cache for keys they bind."""
    guardrails = policies_for(deps, "output")
    return guardrails.cache_tag if guardrails is not None else None


def _placed(deps: StageDeps, default: CacheConfig, by_model: dict[str, CacheConfig]
            ) -> list[tuple[str, CacheConfig]]:
    out = [("cache", default)] if deps.config.cache is not None else []
    return out + [(f"routing.{name}.cache", p) for name, p in by_model.items()]


def _check_blocks(deps: StageDeps) -> None:
    if problem := memory_with_url(deps.config.cache):
        raise CacheSetupError(problem)
    for name, routing in deps.config.routing.items():
        if routing.cache is None:
            continue
        bad = global_only_fields_set(routing.cache)
        if bad:
            raise CacheSetupError(f"routing.{name}.cache: {', '.join(bad)} may only be set in the global "
                                  "cache block (they size or place the shared store)")


def _check_policy(where: str, policy: CacheConfig, stores: dict[str, Any], indexes: dict[str, Any],
                  embedders: Embedders) -> None:
    if policy.mode == "off":
        return
    if policy.backend not in stores:
        hint = " (set cache.redis_url or redis_url)" if policy.backend == "redis" else ""
        raise CacheSetupError(f"{where}.backend: the {policy.backend} cache store is not available{hint}")
    if policy.mode != "semantic":
        return
    model = policy.semantic.embedding_model
    missing = semantic_extra_missing(model)
    if missing:
        raise CacheSetupError(f"{where}.semantic: needs {', '.join(missing)}: pip install 'aigw[semantic]'")
    if policy.backend not in indexes:
        raise CacheSetupError(f"{where}.semantic: no {policy.backend} semantic index is available")
    problem = embedders.check(model)
    if problem:
        raise CacheSetupError(f"{where}.semantic.embedding_model: {problem}")
