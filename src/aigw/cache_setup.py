"""Composition of the response cache's stores (part of the composition root, split out of ``app.py``).

The cache may have a Redis of its own (``cache.redis_url``): limits and budgets want a Redis that
never evicts (``noeviction``, docs/tenancy.md), a cache one that does (``allkeys-lru``), so one shared
Redis lets a full cache make budgets fail closed. Entries, the semantic index and the purge log live
where the entries live; without ``cache.redis_url`` that is ``redis_url``, as before.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from aigw.config.cache import CacheConfig
from aigw.config.models import GatewayConfig


def cache_redis_url(config: GatewayConfig) -> str:
    """The URL of the Redis the cache's entries live in: ``cache.redis_url``, else ``redis_url`` ("" = none)."""
    own = config.cache.redis_url if config.cache is not None else ""
    return own or config.redis_url


def cache_configured(config: GatewayConfig) -> bool:
    """Whether a ``cache:`` block is set anywhere in the file (keys may then choose a cache at run time)."""
    return config.cache is not None or any(r.cache is not None for r in config.routing.values())


def cache_bounds(config: GatewayConfig) -> CacheConfig:
    """The global block's store bounds (``max_entries``, ``max_bytes``), the defaults without one."""
    return config.cache or CacheConfig(mode="off")


def cache_services(config: GatewayConfig, redis: Any) -> dict[str, Any]:
    """The response cache's stores: memory (under ``--workers N``, each worker's own before the parent's
    shared one: ``cache_hosted``), Redis when the cache has one (``redis``: its client), semantic indexes with
    numpy, and the purge log."""
    if not cache_configured(config):
        return {}
    from aigw.providers.local_embed import LocalEmbedder, local_embedder_available
    from aigw.stores.cache_memory import MemoryCacheStore
    from aigw.stores.redis.cache import RedisCacheStore
    from aigw.stores.redis.pipe import RedisPipe

    bounds = cache_bounds(config)
    shared = None  # a worker of `aigw serve --workers N`: what its parent keeps for every worker (``cache_hosted``)
    if config.server.counter_socket:
        from aigw.stores.cache_hosted import HostedCache, LayeredCacheStore
        from aigw.stores.counter_client import TIMEOUT_S

        # the stage bounds each lookup by timeout_ms; the link's own timeout also bounds a purge: never under 2 s
        shared = HostedCache(config.server.counter_socket, timeout_s=max(TIMEOUT_S, bounds.timeout_ms / 1000),
                             retry_after_s=bounds.retry_after_s)
        own = MemoryCacheStore(bounds.max_entries, min(bounds.max_bytes, bounds.near_max_bytes))  # its copies
        stores: dict[str, Any] = {"memory": LayeredCacheStore(own, shared, bounds.near_ttl_s)}
    else:
        stores = {"memory": MemoryCacheStore(bounds.max_entries, bounds.max_bytes)}
    indexes: dict[str, Any] = {}
    if redis is not None:
        stores["redis"] = RedisCacheStore(redis, config.redis_prefix, RedisPipe.from_url(cache_redis_url(config)))
    if importlib.util.find_spec("numpy") is not None:
        from aigw.stores.redis.semantic import RedisSemanticIndex
        from aigw.stores.semantic_hosted import HostedSemanticIndex
        from aigw.stores.semantic_memory import MemorySemanticIndex

        # its own byte bound, a quarter of the store's: 10,000 vectors of 3,072 floats would be ~250 MB
        indexes["memory"] = HostedSemanticIndex(shared) if shared is not None else MemorySemanticIndex(
            bounds.max_entries, bounds.semantic.max_per_context, max_bytes=bounds.max_bytes // 4)
        if redis is not None:
            indexes["redis"] = RedisSemanticIndex(redis, config.redis_prefix, bounds.semantic.max_per_context)
    embedders = {"local": LocalEmbedder()} if local_embedder_available() else {}
    return {"cache_stores": stores, "cache_indexes": indexes, "cache_embedders": embedders,
            "cache_purge_log": _purge_log(config, redis)}


def _purge_log(config: GatewayConfig, redis: Any) -> Any:
    """How a purge reaches the other processes' own copies: the cache's Redis (every replica that shares its
    entries; a cache Redis down fails a purge of those entries anyway), the workers' shared file, or nothing
    (one process without Redis holds all there is)."""
    if redis is not None:
        from aigw.stores.redis.purge_log import RedisPurgeLog

        return RedisPurgeLog(redis, config.redis_prefix)
    if config.server.purge_log:
        from aigw.stores.purge_log import FilePurgeLog

        return FilePurgeLog(config.server.purge_log)
    return None
