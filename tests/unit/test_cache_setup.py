"""The response cache's stores as the composition root builds them (``cache_setup``)."""

from __future__ import annotations

from aigw.cache_setup import cache_services
from aigw.config.models import GatewayConfig
from aigw.stores.cache_hosted import LayeredCacheStore


def test_a_workers_link_to_the_parents_cache_keeps_the_caches_timeout_and_retry_after() -> None:
    """`aigw serve --workers N` without Redis: the worker's calls to its parent's shared cache used the counters'
    fixed 2 s timeout and 1 s skip window, not the cache's own settings: with `timeout_ms: 3000` a lookup the
    config allowed 3 s was cut at 2 s, and after a failure the parent was not asked for 1 s whatever
    `retry_after_s` said (docs/cache.md: "reached like Redis: within timeout_ms, skipped for retry_after_s")."""
    config = GatewayConfig.model_validate({
        "server": {"counter_socket": "/nonexistent/counters.sock"},
        "models": [{"name": "m", "provider": "mock"}],
        "cache": {"mode": "exact", "timeout_ms": 3000, "retry_after_s": 0.25}})
    store = cache_services(config, None)["cache_stores"]["memory"]
    assert isinstance(store, LayeredCacheStore)
    assert (store.shared.timeout_s, store.shared.retry_after_s) == (3.0, 0.25)


def test_a_short_cache_timeout_leaves_the_link_its_own_longer_one_for_purges() -> None:
    """The stage bounds each lookup by ``timeout_ms`` itself; the link's own timeout also bounds a purge of the
    parent's whole store (unguarded, an admin call), so it never drops below the counters' 2 s."""
    config = GatewayConfig.model_validate({
        "server": {"counter_socket": "/nonexistent/counters.sock"},
        "models": [{"name": "m", "provider": "mock"}], "cache": {"mode": "exact"}})
    store = cache_services(config, None)["cache_stores"]["memory"]
    assert store.shared.timeout_s == 2.0 and store.shared.retry_after_s == 2.0
