"""A worker's semantic index under ``aigw serve --workers N`` without Redis: the one its parent keeps.

Each worker matched a question only against the questions it had embedded itself, so a near repeat answered
by one worker was a miss in the others. The parent's ``cache_host`` keeps one ``MemorySemanticIndex`` for
every worker, beside their shared entries, reached over the same connection (``HostedCache``). A lookup
already costs an embedding (milliseconds); the call to the parent adds about 0.1 ms. Vectors travel as
float32 bytes. Needs numpy (the ``semantic`` extra), as every index does.
"""

from __future__ import annotations

import numpy as np

from aigw.stores.cache_base import SemanticMatch, Vector
from aigw.stores.counter_client import HostClient


class HostedSemanticIndex:
    name = "memory"
    in_process = False  # kept by the parent: a purge another worker announces was applied to it already

    def __init__(self, client: HostClient) -> None:
        self.client = client  # the worker's connection to its parent, shared with its cache entries

    async def search(self, bucket: str, vector: Vector, threshold: float,
                     mark: bytes = b"") -> SemanticMatch | None:
        found = await self.client.call("cache.index_search", bucket, _wire(vector), threshold, mark)
        return SemanticMatch(found[0], found[1]) if found is not None else None

    async def add(self, bucket: str, vector: Vector, entry_id: str, ttl_s: float, mark: bytes = b"") -> None:
        await self.client.call("cache.index_add", bucket, _wire(vector), entry_id, ttl_s, mark)

    async def discard(self, bucket: str, entry_id: str) -> None:
        await self.client.call("cache.index_discard", bucket, entry_id)

    async def purge(self, patterns: list[str] | None) -> int:
        return int(await self.client.call("cache.index_purge", patterns))


def _wire(vector: Vector) -> bytes:
    return np.asarray(vector, dtype=np.float32).tobytes()


def from_wire(data: bytes) -> Vector:
    """A vector as the worker sent it (the parent's side)."""
    return np.frombuffer(data, dtype=np.float32)
