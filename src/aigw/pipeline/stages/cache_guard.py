"""Keeps a slow or dead cache backend from slowing or failing requests.

Every backend call gets a short timeout, and one request's lookups share it
(``Lookups``: a semantic lookup makes several calls in a row, which together
may not take longer); a failure marks the backend as failing
and for ``retry_after_s`` it is not even tried (requests go straight upstream).
A timeout alone is a strike, not yet a failure: one slow answer is more often a
pause of this process (a full garbage collection, a busy core) than a sick
backend, so only ``TIMEOUT_STRIKES`` timeouts in a row mark it as failing. The
request that timed out is served without the cache either way.
Counters say how often that happened; the health check reports "degraded"
(never "down": the gateway serves without its cache).

A Redis that is full (``maxmemory`` reached under ``noeviction``) refuses writes
only: then only stores and index adds are skipped for ``retry_after_s``, and
lookups go on (the entries it holds are still good answers).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from aigw.stores.failures import out_of_memory
from aigw.types import Clock

log = logging.getLogger("aigw.cache")
T = TypeVar("T")
TIMEOUT_STRIKES = 2  # timeouts in a row that mark a backend as failing (an error does at once)
WRITES = frozenset({"set", "add"})  # the calls a full Redis refuses (lookups still work)
Status = Literal["ok", "degraded", "down"]


@dataclass(slots=True)
class CacheStats:
    """Counters since start; exported as metrics and shown in /health/ready."""

    hits: int = 0
    semantic_hits: int = 0
    misses: int = 0
    stores: int = 0
    not_stored: int = 0  # unfinished, filtered or too big answers
    backend_errors: int = 0  # calls that failed or timed out
    backend_skipped: int = 0  # calls not tried because the backend failed recently
    embed_errors: int = 0
    purged: int = 0  # entries deleted by admin purges

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}  # type: ignore[attr-defined]


class Lookups(list[str]):
    """One request's calls to shared backends: the backends that failed or were skipped (the list, as any
    ``trouble`` list), and the time the calls taken with the guard's own timeout took so far: together they may
    take ``timeout_s``, not each of them (an exact lookup, a search and the match's entry, say)."""

    __slots__ = ("spent",)

    def __init__(self) -> None:
        super().__init__()
        self.spent = 0.0


@dataclass(slots=True)
class _State:
    failed_at: float | None = None
    error: str = ""
    logged: bool = False
    timeouts: int = 0  # in a row
    full_at: float | None = None  # the last write refused for want of memory
    full_error: str = ""


@dataclass(slots=True)
class Guard:
    clock: Clock
    timeout_s: float
    retry_after_s: float
    metrics: Any = None  # observability Metrics (store_error), when metrics are on
    stats: CacheStats = field(default_factory=CacheStats)
    _state: dict[str, _State] = field(default_factory=dict)

    def clear(self, name: str) -> bool:
        """No failure or strike on record for ``name`` (a caller may then skip the guard's bookkeeping)."""
        state = self._state.get(name)
        return state is None or (state.failed_at is None and state.timeouts == 0)

    def failing(self, name: str) -> bool:
        state = self._state.get(name)
        return (state is not None and state.failed_at is not None
                and self.clock.monotonic() - state.failed_at < self.retry_after_s)

    async def call(self, name: str, what: str, op: Callable[[], Awaitable[T]],
                   timeout_s: float | None = None, trouble: list[str] | None = None) -> T | None:
        """``op()`` within the timeout (0 = none), or None if it failed, timed out or was
        skipped (then ``name`` is appended to ``trouble``, so the caller can tell that from a miss).
        With ``trouble`` a ``Lookups`` and the guard's own timeout, the call gets what its request's earlier
        calls left of it, and is skipped (no strike against the backend) when they left nothing."""
        shared = trouble if timeout_s is None and isinstance(trouble, Lookups) else None
        limit = timeout_s or self.timeout_s
        if shared is not None:
            limit -= shared.spent
        if self.failing(name) or (what in WRITES and self.full(name)) or limit <= 0:
            self.stats.backend_skipped += 1
            if trouble is not None:
                trouble.append(name)
            return None
        started = asyncio.get_running_loop().time() if shared is not None else 0.0
        try:
            if timeout_s == 0:  # an in-process store: nothing to wait for, skip the timer
                result = await op()
            else:
                async with asyncio.timeout(limit):
                    result = await op()
        except Exception as exc:  # any backend failure means "no cache", never a failed request
            full = out_of_memory(exc)
            if full:
                self.filled(name, exc)
            elif isinstance(exc, TimeoutError):
                self.timed_out(name, exc)
            else:
                self.failed(name, exc)
            if self.metrics is not None:
                self.metrics.store_error(f"cache_{name}", what)
                if full:
                    self.metrics.store_full(f"cache_{name}")
            if trouble is not None:
                trouble.append(name)
            return None
        finally:
            if shared is not None:
                shared.spent += asyncio.get_running_loop().time() - started
        self.recovered(name, what in WRITES)
        return result

    def full(self, name: str) -> bool:
        """``name`` refused a write for want of memory less than ``retry_after_s`` ago."""
        state = self._state.get(name)
        return (state is not None and state.full_at is not None
                and self.clock.monotonic() - state.full_at < self.retry_after_s)

    def filled(self, name: str, exc: BaseException) -> None:
        """A write refused by a full Redis: writes skip it for ``retry_after_s``; logged once until it takes one."""
        self.stats.backend_errors += 1
        state = self._state.setdefault(name, _State())
        if state.full_at is None:
            log.warning("cache backend %s is out of memory (Redis maxmemory reached, policy noeviction): new "
                        "answers are not stored, tried again every %.1fs; lookups go on. Give the cache a Redis "
                        "with an evicting policy (allkeys-lru) or more maxmemory (%s)", name, self.retry_after_s,
                        str(exc)[:120])
        state.full_at = self.clock.monotonic()
        state.full_error = f"out of memory, not storing: {str(exc)[:120]}"

    def timed_out(self, name: str, exc: BaseException) -> None:
        """A strike; ``TIMEOUT_STRIKES`` in a row are a failure."""
        state = self._state.setdefault(name, _State())
        state.timeouts += 1
        if state.timeouts >= TIMEOUT_STRIKES:
            self.failed(name, exc)
        else:
            self.stats.backend_errors += 1

    def failed(self, name: str, exc: BaseException) -> None:
        self.stats.backend_errors += 1
        state = self._state.setdefault(name, _State())
        state.failed_at = self.clock.monotonic()
        state.error = type(exc).__name__ if not str(exc) else f"{type(exc).__name__}: {str(exc)[:120]}"
        if not state.logged:
            log.warning("cache backend %s failed, skipping it for %.1fs at a time: %s",
                        name, self.retry_after_s, state.error)
            state.logged = True

    def recovered(self, name: str, wrote: bool = False) -> None:
        state = self._state.get(name)
        if state is None:
            return
        state.timeouts = 0
        if wrote and state.full_at is not None:
            log.warning("cache backend %s takes writes again", name)
            state.full_at = None
        if state.failed_at is not None:
            log.warning("cache backend %s is back", name)
            state.failed_at, state.logged = None, False

    def problems(self) -> dict[str, str]:
        """Backends that failed recently, with their last error."""
        out = {name: s.full_error for name, s in self._state.items() if self.full(name)}
        out.update({name: s.error for name, s in self._state.items() if self.failing(name)})
        return out


async def health_of(guard: Guard, stores: dict[str, Any], near_hits: int | None) -> tuple[Status, str]:
    """The cache's health line: degraded naming each of ``stores`` (those in use) that failed or does not
    answer a ping; ``near_hits``: hits from near copies of Redis entries (None: no near copies kept)."""
    problems = dict(guard.problems())
    for name in sorted(stores):
        if name in problems:
            continue
        try:
            async with asyncio.timeout(guard.timeout_s * 4):
                await stores[name].ping()
        except Exception as exc:
            problems[name] = type(exc).__name__
    counts = guard.stats.as_dict()
    summary = f"hits={counts['hits']} misses={counts['misses']} errors={counts['backend_errors']}"
    if near_hits is not None:  # hits answered from this process's copy of a Redis entry (a part of hits)
        summary += f" near_hits={near_hits}"
    if problems:
        return "degraded", "; ".join(f"{k}: {v}" for k, v in problems.items()) + f" ({summary})"
    return "ok", summary
