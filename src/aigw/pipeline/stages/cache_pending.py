"""What the cache stage keeps from a miss until its answer is in (``Pending``), and how that answer is stored."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aigw.config.cache import CacheConfig

if TYPE_CHECKING:
    from aigw.stores.cache_base import Vector


@dataclass(slots=True)
class Pending:
    key: str
    policy: CacheConfig
    ttl_s: float
    bucket: str = ""
    vector: Vector | None = None
    mark: bytes = b""  # the last turn's words as a bag and in order (``word_order_mark``)
    guard: str = ""  # the output checks' tag (``scope_of``)
    trouble: list[str] = field(default_factory=list)  # backends that failed during the lookup
    mark_key: str = ""  # a fallback's answer: the key that vouches for it (``cache_keys.fallback_mark``)


Setter = Callable[[str, bytes, float], Awaitable[None]]


async def put(set_: Setter, pending: Pending, value: bytes) -> bool:
    """The answer and, for a fallback's, its mark first (so the entry is never unvouched), through ``set_``: a
    store's ``set``, or under ``--workers`` a worker's own ``LayeredCacheStore.copy`` when its parent's store did
    not take it (failed, or skipped for ``retry_after_s``), so the worker still answers its own repeats."""
    if pending.mark_key:
        await set_(pending.mark_key, b"", pending.ttl_s)
    await set_(pending.key, value, pending.ttl_s)
    return True
