"""The response cache's two store contracts: an entry store and a semantic index.

Each has an in-process implementation (embedded) and a Redis one (scaled). The
cache stage sees only these protocols; ``app.py`` picks the implementations.
Stores raise on a backend failure: the stage turns that into "skip the cache".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vector = npt.NDArray[np.float32]
else:
    Vector = object


class CacheStore(Protocol):
    """Opaque values by key, each with its own time to live."""

    name: str
    in_process: bool  # True: calls cannot hang (no timeout needed around them)

    async def get(self, key: str) -> bytes | None: ...

    async def set(self, key: str, value: bytes, ttl_s: float) -> None: ...

    async def ping(self) -> None:
        """Raise if the backend cannot serve right now."""
        ...

    async def purge(self, patterns: list[str] | None, counts: Callable[[str], bool] | None = None) -> int:
        """Delete the entries whose key matches one of ``patterns`` (``key_glob`` syntax; None: every
        entry of this gateway's); how many went (of the keys ``counts`` accepts, when given: the others
        are deleted uncounted, as a fallback's mark beside its answer)."""
        ...


@runtime_checkable
class LocalCacheStore(CacheStore, Protocol):
    """A store in this process's memory: it also answers ``get`` as a plain call."""

    def get_now(self, key: str) -> bytes | None: ...


@dataclass(slots=True, frozen=True)
class SemanticMatch:
    entry_id: str  # what was stored with the vector (the exact entry's key)
    score: float  # cosine similarity, 1.0 = same direction


class SemanticIndex(Protocol):
    """Unit vectors grouped by a bucket (tenant scope + hash of everything but the last turn)."""

    async def search(self, bucket: str, vector: Vector, threshold: float,
                     mark: bytes = b"") -> SemanticMatch | None:
        """The closest live vector at or above ``threshold`` whose question is not ``mark``'s words in another
        order (``cache_keys.word_order_mark``)."""
        ...

    async def add(self, bucket: str, vector: Vector, entry_id: str, ttl_s: float, mark: bytes = b"") -> None: ...

    async def discard(self, bucket: str, entry_id: str) -> None:
        """Drop ``entry_id``'s vector: its entry is gone (evicted, purged), so it must not shadow the next best."""
        ...

    async def purge(self, patterns: list[str] | None) -> int:
        """Delete the buckets whose name matches one of ``patterns`` (None: all); how many went."""
        ...


def swapped(mark: bytes, other: bytes) -> bool:
    """Two questions' marks (``cache_keys.word_order_mark``: the bag of words, then each word in order) say the
    same words in another order, not one block of them moved: not the same question. False when either has
    no mark. A block moved ("In Python, how do I ..." / "How do I ... in Python?") leaves the part between the
    common start and end a rotation of the other's; two neighbouring words swapped count as a swap."""
    if len(mark) != len(other) or len(mark) <= 8 or mark[:8] != other[:8] or mark == other:
        return False
    a, b = mark[8:], other[8:]
    start = 0
    while start < len(a) and a[start:start + 2] == b[start:start + 2]:
        start += 2
    end = len(a)
    while end > start and a[end - 2:end] == b[end - 2:end]:
        end -= 2
    a, b = a[start:end], b[start:end]
    if len(a) == 4:  # two neighbours swapped ("milk chocolate" / "chocolate milk"): a moved block of one word, but
        return True  # it changes the meaning more often than not; a miss costs a call, a wrong answer more
    twice = a + a
    at = twice.find(b)
    while at != -1 and at % 2:  # a rotation starts at a word's first byte
        at = twice.find(b, at + 1)
    return at == -1
