"""The one Redis connection pool, with short timeouts so an outage never stalls a request."""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis


def make_redis(url: str, socket_timeout_s: float = 0.25) -> Any:
    """Build a ``redis.asyncio.Redis`` for ``url``. Calls fail fast instead of hanging."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=socket_timeout_s,
        socket_connect_timeout=socket_timeout_s,
        health_check_interval=0,
        retry_on_timeout=False,
        decode_responses=False,
        max_connections=256,
    )
