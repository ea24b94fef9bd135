"""Composition root: config -> providers -> router -> pipeline -> http.

The only module that picks concrete implementations and wires them together.
"""

from __future__ import annotations

import importlib.util
import logging
from functools import partial
from typing import Any

from aigw.config.cache import CacheConfig
from aigw.config.load import load_config
from aigw.config.models import GatewayConfig
from aigw.gc_tuning import tune_gc
from aigw.http.admin_deployments import AdminDeployments
from aigw.http.admin_requests import PREFIX as ADMIN_REQUESTS
from aigw.http.admin_requests import AdminRequests
from aigw.http.auth import Authenticator
from aigw.http.flow import Flow
from aigw.http.health import Health, database_check, redis_check, register_breakers
from aigw.http.metrics_endpoint import MetricsEndpoint
from aigw.http.openai_api import OpenAIApi
from aigw.http.server import GatewayApp
from aigw.observability.setup import build_observability
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.observed import ObservedPipeline, traced_provider, traced_stages
from aigw.pipeline.route import RouteTerminal
from aigw.pipeline.stage import Stage
from aigw.pipeline.stages.registry import build_stages, default_order
from aigw.providers.http import HttpClients
from aigw.providers.registry import build_provider
from aigw.routing.report import breaker_refresher, deployment_report
from aigw.routing.router import Router, Target
from aigw.routing.setup import build_router
from aigw.supervise import Supervisor
from aigw.tenancy import Tenancy
from aigw.types import SystemClock

log = logging.getLogger("aigw")


def build_app(config: GatewayConfig) -> GatewayApp:
    clients = HttpClients()
    supervisor = Supervisor()
    targets = [Target(d, build_provider(d, clients)) for d in config.models]
    obs = build_observability(config, SystemClock())
    if obs.tracing is not None:  # a CLIENT span per upstream attempt, its traceparent sent upstream
        targets = [Target(t.deployment, traced_provider(t.provider, t.deployment, obs.tracing)) for t in targets]
    redis = _redis_for(config.redis_url) if config.redis_url else None
    router = build_router(config, targets, supervisor, redis)
    deps = StageDeps(config=config, router=router, supervisor=supervisor, redis=redis,
                     redis_prefix=config.redis_prefix)
    deps.services.update(obs.services())
    deps.services.update(_cache_services(config, redis))
    tenancy = Tenancy(config, redis, supervisor, clients) if config.tenancy.enabled else None
    if tenancy is not None:  # virtual keys, limits, budgets, spend ledger
        tenancy.services.metrics = obs.metrics  # budget alerts count in aigw_events_total
        if obs.metrics is not None:  # failed ledger writes and dropped rows count in aigw_store_errors_total
            tenancy.ledger.on_error = partial(obs.metrics.store_error, "ledger")
        deps.services.update(tenancy.stage_services())
    stages: list[Stage] = build_stages(config.pipeline if config.pipeline is not None else default_order(), deps)
    if obs.tracing is not None:
        stages = traced_stages(stages, obs.tracing)
    pipeline = ObservedPipeline(stages, RouteTerminal(router))
    auth = Authenticator(config.server.master_key, tenancy.keys.lookup if tenancy is not None else None,
                         tenancy.keys.cached if tenancy is not None else None,
                         tenancy.keys.why_refused if tenancy is not None else None)
    flow = Flow(auth, pipeline, config.server.max_body_bytes)
    health = Health()
    if redis is not None:
        health.register("redis", redis_check(redis), critical=False)
    if obs.writer is not None:
        health.register("database", database_check(lambda: obs.writer.store.ping()), critical=False)  # type: ignore[union-attr]
    register_breakers(health, [t.deployment.id for t in targets],
                      lambda: {r["id"]: r["breaker"] for r in deployment_report(router)})
    for name, (check, critical) in deps.services.get("health_checks", {}).items():  # stages' own checks
        health.register(name, check, critical)

    async def shutdown() -> None:
        await supervisor.drain()
        for t in targets:
            await t.provider.aclose()
        await clients.aclose()
        for store in deps.services.get("cache_stores", {}).values():
            if hasattr(store, "aclose"):
                await store.aclose()
        if redis is not None:
            await redis.aclose()

    app = GatewayApp(on_startup=[], on_shutdown=[shutdown])
    app.on_startup.append(lambda: obs.start(supervisor))
    app.on_shutdown.append(obs.stop)  # shutdown hooks run in reverse: the request log flushes first
    app.on_startup.append(router.start)  # shared breaker state sync, optional probe
    app.on_shutdown.append(router.stop)
    tenant_of, key_of = None, None
    if tenancy is not None:  # stops first on the way out: the ledger drains before the supervisor
        app.on_startup.append(tenancy.start)
        app.on_shutdown.append(tenancy.stop)
        admin = tenancy.register_routes(app, auth)
        tenant_of, key_of = admin.tenant, admin.key
        health.register("ledger", tenancy.health, critical=False)  # type: ignore[arg-type]
        if redis is not None:  # limits and budgets skipping a failed Redis (not critical: policies apply)
            health.register("gate", tenancy.gate_health, critical=False)  # type: ignore[arg-type]
    cache = deps.services.get("cache_stage")
    if cache is not None:  # the cache modules load only when a cache is configured
        from aigw.http import admin_cache

        app.on_startup.append(cache.start)  # follows the purges other processes announce
        app.on_shutdown.append(cache.stop)

        admin_cache.register(app, auth, cache, tenant_of, lambda model: bool(router.targets(model)))
    app.state.update(config=config, router=router, pipeline=pipeline, auth=auth, health=health,
                     supervisor=supervisor, clients=clients, deps=deps, observability=obs)

    openai_api = OpenAIApi(flow, router, debug=config.server.debug_errors)
    app.route("POST", "/v1/chat/completions", openai_api.chat)
    app.route("POST", "/v1/completions", openai_api.completions)
    app.route("POST", "/v1/embeddings", openai_api.embeddings)
    app.route("GET", "/v1/models", openai_api.list_models)
    app.route_prefix("GET", "/v1/models/", openai_api.get_model)
    _add_anthropic_api(app, flow, config, router)
    app.route("GET", "/health/live", health.live)
    app.route("GET", "/health/ready", health.ready)
    app.route("GET", "/health", health.live)
    app.route("GET", "/admin/deployments", AdminDeployments(router, auth).list)
    if obs.metrics is not None:
        app.route("GET", "/metrics", MetricsEndpoint(obs.metrics, auth, config.observability.metrics.require_key))
        obs.metrics.on_scrape(breaker_refresher(router, obs.metrics.set_breaker))
    if obs.writer is not None:
        admin_requests = AdminRequests(auth, obs.writer, key_of)
        app.route("GET", "/admin/requests", admin_requests.list)
        app.route_prefix("GET", ADMIN_REQUESTS, admin_requests.get)
    return app


def _redis_for(url: str) -> Any:
    """The shared Redis client; redis-py is imported only when a redis_url is set (~85 ms at start-up)."""
    from aigw.stores.redis.client import make_redis

    return make_redis(url)


def _cache_services(config: GatewayConfig, redis: Any) -> dict[str, Any]:
    """The response cache's stores: memory, Redis when redis_url is set, semantic indexes with numpy."""
    if config.cache is None and all(r.cache is None for r in config.routing.values()):
        return {}
    from aigw.providers.local_embed import LocalEmbedder, local_embedder_available
    from aigw.stores.cache_memory import MemoryCacheStore
    from aigw.stores.redis.cache import RedisCacheStore
    from aigw.stores.redis.pipe import RedisPipe

    bounds = config.cache or CacheConfig(mode="off")
    stores: dict[str, Any] = {"memory": MemoryCacheStore(bounds.max_entries, bounds.max_bytes)}
    indexes: dict[str, Any] = {}
    if redis is not None:
        stores["redis"] = RedisCacheStore(redis, config.redis_prefix, RedisPipe.from_url(config.redis_url))
    if importlib.util.find_spec("numpy") is not None:
        from aigw.stores.redis.semantic import RedisSemanticIndex
        from aigw.stores.semantic_memory import MemorySemanticIndex

        indexes["memory"] = MemorySemanticIndex(bounds.max_entries, bounds.semantic.max_per_context)
        if redis is not None:
            indexes["redis"] = RedisSemanticIndex(redis, config.redis_prefix, bounds.semantic.max_per_context)
    embedders = {"local": LocalEmbedder()} if local_embedder_available() else {}
    return {"cache_stores": stores, "cache_indexes": indexes, "cache_embedders": embedders,
            "cache_purge_log": _purge_log(config, redis)}


def _purge_log(config: GatewayConfig, redis: Any) -> Any:
    """How a purge reaches the other processes' own copies: Redis (every replica), the workers' shared
    file, or nothing (one process without Redis holds all there is)."""
    if redis is not None:
        from aigw.stores.redis.purge_log import RedisPurgeLog

        return RedisPurgeLog(redis, config.redis_prefix)
    if config.server.purge_log:
        from aigw.stores.purge_log import FilePurgeLog

        return FilePurgeLog(config.server.purge_log)
    return None


def _add_anthropic_api(app: GatewayApp, flow: Flow, config: GatewayConfig, router: Router) -> None:
    from aigw.http.anthropic_api import AnthropicApi

    api = AnthropicApi(flow, debug=config.server.debug_errors, known_model=lambda model: bool(router.targets(model)))
    app.route("POST", "/v1/messages", api.messages)
    app.route("POST", "/v1/messages/count_tokens", api.count_tokens)


def create_app() -> GatewayApp:
    """Factory for ``uvicorn --factory`` (multi-worker): reads config like ``aigw serve`` did."""
    config = load_config()
    return for_serving(build_app(config), config)


def for_serving(app: GatewayApp, config: GatewayConfig) -> GatewayApp:
    """What only a serving process wants (not a test building apps in its own process): GC tuning,
    applied after every other start-up hook so that what they built is frozen too."""

    async def tune() -> None:
        tune_gc(config.server.gc_young_threshold)

    app.on_startup.append(tune)
    return app
