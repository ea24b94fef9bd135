"""Delete the keys that match a pattern: SCAN in pages, then UNLINK (freed off Redis's main thread).

For admin calls (a cache purge), never the request path: SCAN walks the whole
keyspace a page at a time without blocking Redis, and keys written meanwhile may
or may not be seen, which is what a purge of a live cache can promise anyway.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

PAGE = 500


async def unlink_matching(redis: Any, patterns: Iterable[str], counts: Callable[[bytes], bool] | None = None) -> int:
    """UNLINK every key matching one of ``patterns``; the number of keys gone (only those
    ``counts`` accepts, when given: e.g. one of the two keys that make up an entry)."""
    gone = 0
    for pattern in patterns:
        page: list[bytes] = []
        async for key in redis.scan_iter(match=pattern, count=1000):
            page.append(key)
            if len(page) >= PAGE:
                gone += await _unlink(redis, page, counts)
                page = []
        if page:
            gone += await _unlink(redis, page, counts)
    return gone


async def _unlink(redis: Any, keys: list[bytes], counts: Callable[[bytes], bool] | None) -> int:
    """UNLINK one page; what Redis removed of the keys that count (one that expired meanwhile does not)."""
    if counts is None:
        return int(await redis.unlink(*keys))
    counted = [k for k in keys if counts(k)]
    rest = [k for k in keys if not counts(k)]
    if rest:
        await redis.unlink(*rest)
    return int(await redis.unlink(*counted)) if counted else 0
