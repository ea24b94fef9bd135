"""Composition root: config -> providers -> router -> pipeline -> http.

The only module that picks concrete implementations and wires them together.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from aigw.accounting import tokens
from aigw.cache_setup import cache_redis_url, cache_services
from aigw.config.load import load_config
from aigw.config.models import GatewayConfig
from aigw.gc_tuning import tune_gc
from aigw.http.admin_deployments import AdminDeployments
from aigw.http.admin_requests import PREFIX as ADMIN_REQUESTS
from aigw.http.admin_requests import AdminRequests
from aigw.http.auth import Authenticator
from aigw.http.flow import ApiFormat, Flow
from aigw.http.health import Health, database_check, redis_check, register_breakers
from aigw.http.metrics_endpoint import MetricsEndpoint
from aigw.http.models_api import MODELS_PREFIX, ModelsApi
from aigw.http.openai_api import OpenAIApi
from aigw.http.server import GatewayApp
from aigw.observability.setup import build_observability
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.observed import ObservedPipeline, traced_provider, traced_stages
from aigw.pipeline.route import RouteTerminal
from aigw.pipeline.stage import Stage
from aigw.pipeline.stages.registry import build_stages, default_order, tenancy_left_out
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
    cache_url = cache_redis_url(config)  # the cache's own Redis (cache.redis_url), else this one: one client
    cache_redis = redis if cache_url == config.redis_url else _redis_for(cache_url)
    router = build_router(config, targets, supervisor, redis)
    deps = StageDeps(config=config, router=router, supervisor=supervisor, redis=redis,
                     redis_prefix=config.redis_prefix)
    deps.services.update(obs.services())
    deps.services.update(cache_services(config, cache_redis))
    tenancy = Tenancy(config, redis, supervisor, clients) if config.tenancy.enabled else None
    if tenancy is not None:  # virtual keys, limits, budgets, spend ledger
        tenancy.services.metrics = obs.metrics  # budget alerts count in aigw_events_total
        if obs.metrics is not None:  # failed ledger writes and dropped rows count in aigw_store_errors_total
            tenancy.ledger.on_error = partial(obs.metrics.store_error, "ledger")
        deps.services.update(tenancy.stage_services())
    stages: list[Stage] = build_stages(config.pipeline if config.pipeline is not None else default_order(), deps)
    if tenancy is not None and config.pipeline is not None and (off := tenancy_left_out(config.pipeline)):
        log.warning("tenancy is on but pipeline: leaves out %s", "; ".join(off))
    if obs.tracing is not None:
        stages = traced_stages(stages, obs.tracing)
    pipeline = ObservedPipeline(stages, RouteTerminal(router))
    auth = Authenticator(config.server.master_key, tenancy.keys.lookup if tenancy is not None else None,
                         tenancy.keys.cached if tenancy is not None else None,
                         tenancy.keys.why_refused if tenancy is not None else None)
    if obs.metrics is not None:  # 401s and 403s outside the pipeline (admin API, /v1/models, ...): counted
        auth.on_refused = obs.metrics.auth_failed
    flow = Flow(auth, pipeline, config.server.max_body_bytes, obs.metrics.refused if obs.metrics is not None else None,
                config.server.stream_keepalive_s)
    health = Health()
    if redis is not None:
        health.register("redis", redis_check(redis), critical=False)
    if cache_redis is not None and cache_redis is not redis:  # its own line: a cache Redis down degrades the cache only
        health.register("cache_redis", redis_check(cache_redis), critical=False)
    if obs.writer is not None:
        health.register("database", database_check(obs.ping), critical=False)
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
        if cache_redis is not None and cache_redis is not redis:
            await cache_redis.aclose()
        if redis is not None:
            await redis.aclose()

    app = GatewayApp(on_startup=[], on_shutdown=[shutdown])
    if cache_redis is not None and cache_redis is not redis:  # the cache's own Redis under noeviction: say so once
        app.on_startup.append(partial(_warn_if_cache_refuses, cache_redis, redis))
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
        health.register("keys", tenancy.keys_health, critical=False)  # type: ignore[arg-type]
        if redis is not None or config.server.counter_socket:  # limits and budgets skipping a failed Redis, or
            # the workers' parent (not critical: the failure policies apply)
            health.register("gate", tenancy.gate_health, critical=False)  # type: ignore[arg-type]
    cache = deps.services.get("cache_stage")
    if cache is not None:  # the cache modules load only when a cache is configured
        from aigw.http import admin_cache

        app.on_startup.append(cache.start)  # follows the purges other processes announce
        app.on_shutdown.append(cache.stop)

        admin_cache.register(app, auth, cache, tenant_of, lambda model: bool(router.targets(model)))
    app.state.update(config=config, router=router, pipeline=pipeline, auth=auth, health=health,
                     supervisor=supervisor, clients=clients, deps=deps, observability=obs, tenancy=tenancy)

    openai_api = OpenAIApi(flow, router, debug=config.server.debug_errors)
    app.route("POST", "/v1/chat/completions", openai_api.chat)
    app.route("POST", "/v1/completions", openai_api.completions)
    app.route("POST", "/v1/embeddings", openai_api.embeddings)
    models = ModelsApi(router, auth, openai_api.format, _add_anthropic_api(app, flow, config, router))
    app.route("GET", "/v1/models", models.list_models)
    app.route_prefix("GET", MODELS_PREFIX, models.get_model)
    app.route("GET", "/health/live", health.live)
    app.route("GET", "/health/ready", health.ready)
    app.route("GET", "/health", health.live)
    app.route("GET", "/admin/deployments", AdminDeployments(router, auth).list)
    if obs.metrics is not None:
        app.route("GET", "/metrics", MetricsEndpoint(obs.metrics, auth, config.observability.metrics.require_key))
        obs.metrics.on_scrape(breaker_refresher(router, obs.metrics.set_breaker))
        router.observe_attempts(obs.metrics.attempt)  # each upstream call, under the deployment that made it
        app.on_unrouted = partial(obs.metrics.refused, "none")  # no route: no inbound API either
    if obs.writer is not None:
        admin_requests = AdminRequests(auth, obs.writer, key_of, tenant_of)
        app.route("GET", "/admin/requests", admin_requests.list)
        app.route_prefix("GET", ADMIN_REQUESTS, admin_requests.get)
    return app


def _redis_for(url: str) -> Any:
    """A Redis client; redis-py is imported only when a Redis URL is set (~85 ms at start-up)."""
    from aigw.stores.redis.client import make_redis

    return make_redis(url)


async def _warn_if_cache_refuses(cache_redis: Any, redis: Any) -> None:
    from aigw.stores.redis.eviction import warn_if_cache_refuses

    await warn_if_cache_refuses(cache_redis, redis)


def _add_anthropic_api(app: GatewayApp, flow: Flow, config: GatewayConfig, router: Router) -> ApiFormat:
    """The Anthropic Messages endpoints; their format, for the model list Anthropic's SDK reads."""
    from aigw.http.anthropic_api import AnthropicApi

    api = AnthropicApi(flow, debug=config.server.debug_errors, known_model=lambda model: bool(router.targets(model)))
    app.route("POST", "/v1/messages", api.messages)
    app.route("POST", "/v1/messages/count_tokens", api.count_tokens)
    return api.format


def create_app() -> GatewayApp:
    """Factory for ``uvicorn --factory`` (multi-worker): reads config like ``aigw serve`` did."""
    config = load_config()
    return for_serving(build_app(config), config)


def for_serving(app: GatewayApp, config: GatewayConfig) -> GatewayApp:
    """What only a serving process wants (not a test building apps in its own process): the tokenizer loaded
    where requests may need it, and GC tuning, after every other start-up hook so that what they built is
    frozen too."""

    async def tune() -> None:
        if counts_locally(config):  # ~0.1 s, before any request can wait for it, and frozen with the rest
            tokens.LOCAL_COUNTER.load()
        tune_gc(config.server.gc_young_threshold)

    app.on_startup.append(tune)
    return app


def counts_locally(config: GatewayConfig) -> bool:
    """Whether requests may need a local token count (``accounting.tokens``): the ledger and limits when
    tenancy is on, and a cache storing an answer that came without usage."""
    return config.tenancy.enabled or config.cache is not None or any(
        r.cache is not None for r in config.routing.values())
