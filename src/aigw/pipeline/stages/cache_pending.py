"""What the cache stage keeps from a miss until its answer is in (``Pending``), and how that answer is stored."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from aigw.config.cache import CacheConfig
from aigw.stores.cache_base import CacheStore

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


async def put(store: CacheStore, pending: Pending, value: bytes) -> bool:
    """The answer and, for a fallback's, its mark first (so the entry is never unvouched)."""
    if pending.mark_key:
        await store.set(pending.mark_key, b"", pending.ttl_s)
    await store.set(pending.key, value, pending.ttl_s)
    return True


async def keep_own(store: CacheStore, pending: Pending, value: bytes) -> None:
    """A worker's own copy of an answer its parent's store did not take (``cache_hosted``: it failed, or is skipped
    for ``retry_after_s`` after a failure): the worker still answers its own repeats, as one process would."""
    copy = getattr(store, "copy", None)  # ``LayeredCacheStore.copy``: the worker's own memory alone
    if copy is None:
        return
    if pending.mark_key:
        await copy(pending.mark_key, b"", pending.ttl_s)
    await copy(pending.key, value, pending.ttl_s)
