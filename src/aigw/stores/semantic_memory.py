"""In-process semantic index: unit vectors per bucket, a dot product per lookup.

Buckets are (tenant scope, hash of everything but the last user turn), so a
lookup compares only answers that could be right. Bounded per bucket (oldest
out) and in total, by count and by bytes (least recently used bucket gives up
its oldest): at 3,072 dimensions 10,000 vectors are ~250 MB with the stacked copy.
Needs numpy (the ``semantic`` extra); imported only when this module is.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from aigw.stores.cache_base import SemanticMatch, Vector, swapped
from aigw.stores.key_glob import matcher
from aigw.types import Clock, SystemClock


@dataclass(slots=True)
class _Bucket:
    ids: list[str] = field(default_factory=list)
    vectors: list[Vector] = field(default_factory=list)
    expires: list[float] = field(default_factory=list)
    marks: list[bytes] = field(default_factory=list)  # each question's words, as a bag and in order
    matrix: Vector | None = None  # stacked vectors, rebuilt after a change

    def remove(self, i: int) -> int:
        """Drop the ``i``-th vector; the bytes it held (``cost``)."""
        size = cost(self.ids[i], self.vectors[i], self.marks[i])
        del self.ids[i], self.vectors[i], self.expires[i], self.marks[i]
        self.matrix = None
        return size

    def stacked(self) -> Vector:
        if self.matrix is None:
            self.matrix = np.vstack(self.vectors)
        return self.matrix


class MemorySemanticIndex:
    name = "memory"

    def __init__(self, max_entries: int, max_per_bucket: int, clock: Clock | None = None,
                 max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_entries = max_entries
        self.max_per_bucket = max_per_bucket
        self.max_bytes = max_bytes
        self.clock = clock or SystemClock()
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self.size = 0
        self.bytes = 0

    async def search(self, bucket: str, vector: Vector, threshold: float,
                     mark: bytes = b"") -> SemanticMatch | None:
        b = self._buckets.get(bucket)
        if b is None or not b.ids:
            return None
        self._buckets.move_to_end(bucket)
        if b.vectors[0].shape != np.shape(vector):  # another embedder's vectors (its deployment changed): no match
            return None
        scores = b.stacked() @ vector
        now = self.clock.now()
        for i in np.argsort(-scores)[:8]:  # best first; skip the expired, and the same words in another order
            score = float(scores[i])
            if not score >= threshold:  # also NaN (a vector that overflowed): never a match
                return None
            if b.expires[i] > now and not swapped(mark, b.marks[i]):
                return SemanticMatch(b.ids[i], score)
        return None

    async def add(self, bucket: str, vector: Vector, entry_id: str, ttl_s: float, mark: bytes = b"") -> None:
        vector = np.asarray(vector, dtype=np.float32)
        if cost(entry_id, vector, mark) > self.max_bytes:
            return
        b = self._buckets.get(bucket)
        if b is None:
            b = self._buckets[bucket] = _Bucket()
        self._buckets.move_to_end(bucket)
        now = self.clock.now()
        stale = bool(b.vectors) and b.vectors[0].shape != vector.shape  # the embedder changed: old vectors go
        for i in reversed(range(len(b.ids))):
            if stale or b.ids[i] == entry_id or b.expires[i] <= now:
                self._drop(b, i)
        b.ids.append(entry_id)
        b.vectors.append(vector)
        b.expires.append(now + ttl_s)
        b.marks.append(mark)
        b.matrix = None
        self.size += 1
        self.bytes += cost(entry_id, vector, mark)
        while len(b.ids) > self.max_per_bucket:
            self._drop(b, 0)
        self._trim()

    async def discard(self, bucket: str, entry_id: str) -> None:
        b = self._buckets.get(bucket)
        if b is not None and entry_id in b.ids:
            self._drop(b, b.ids.index(entry_id))

    async def purge(self, patterns: list[str] | None) -> int:
        match = matcher(patterns) if patterns is not None else None
        doomed = [name for name in self._buckets if match is None or match(name)]
        for name in doomed:
            b = self._buckets.pop(name)
            self.size -= len(b.ids)
            self.bytes -= sum(map(cost, b.ids, b.vectors, b.marks))
        return len(doomed)

    def _drop(self, b: _Bucket, i: int) -> None:
        self.bytes -= b.remove(i)
        self.size -= 1

    def _trim(self) -> None:
        while (self.size > self.max_entries or self.bytes > self.max_bytes) and self._buckets:
            name, oldest = next(iter(self._buckets.items()))
            if oldest.ids:
                self._drop(oldest, 0)
            if not oldest.ids:
                del self._buckets[name]


def cost(entry_id: str, vector: Vector, mark: bytes) -> int:
    """What one vector holds: itself twice (the list's and the bucket's stacked copy), its id and mark."""
    return 2 * int(np.asarray(vector).nbytes) + len(entry_id) + len(mark) + 160
