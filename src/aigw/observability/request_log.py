"""The request log: one metadata record per request, written off the request path.

``RequestLogWriter.add`` only appends to a bounded buffer; a supervised task
writes batches every ``flush_interval_s`` to a ``RequestLogStore`` (memory,
SQLite or PostgreSQL, chosen by ``app.py``). A store outage keeps the records
buffered (up to ``max_buffer``, oldest dropped and counted) and retries; shutdown
flushes what is left. Retention drops whole day buckets, never row by row.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Protocol

import orjson

log = logging.getLogger("aigw.request_log")
DAY_S = 86400
MAX_PAGE = 500
RETRY_BACKOFF_MAX_S = 30.0  # the longest wait between tries while the store is away (as the spend ledger)


@dataclass(slots=True)
class RequestRecord:
    request_id: str
    ts: float  # wall-clock start, seconds since the epoch
    api: str = ""
    endpoint: str = ""
    model: str = ""  # asked for
    served_model: str = ""
    provider: str = ""
    deployment: str = ""
    tenant_id: str = ""
    project_id: str = ""
    key_id: str = ""
    key_prefix: str = ""
    status: int = 200
    error_kind: str = ""
    stream: bool = False
    cache: str = ""  # "", "cache", "rules": a stage answered
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    reasoning_tokens: int = 0
    cost_usd: float = 0.0
    latency_ms: float = 0.0
    upstream_ms: float = 0.0
    overhead_ms: float = 0.0
    ttft_ms: float | None = None
    attempts: int = 0
    retries: int = 0
    fallbacks: list[str] = field(default_factory=list)
    request_body: str | None = None  # only with observability.log_bodies; redacted and capped
    response_body: str | None = None
    guardrails: dict[str, Any] | None = None  # guardrail stage -> verdict (action, kinds, counts; never values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


COLUMNS = tuple(f.name for f in fields(RequestRecord))


@dataclass(slots=True)
class RequestQuery:
    since: float | None = None  # epoch seconds, inclusive
    until: float | None = None  # exclusive
    key_id: str = ""
    tenant_id: str = ""
    model: str = ""  # matches the asked or the served model
    status: int | None = None
    status_class: int | None = None  # 2, 4 or 5: any 2xx / 4xx / 5xx
    min_latency_ms: float | None = None
    limit: int = 50
    cursor: tuple[float, str] | None = None  # (ts, request_id) of the last item of the previous page

    def matches(self, r: RequestRecord) -> bool:
        """The same filter the SQL stores apply, for the memory store and tests."""
        if (self.since is not None and r.ts < self.since) or (self.until is not None and r.ts >= self.until):
            return False
        if (self.key_id and r.key_id != self.key_id) or (self.tenant_id and r.tenant_id != self.tenant_id):
            return False
        if self.model and self.model not in (r.model, r.served_model):
            return False
        if self.status is not None and r.status != self.status:
            return False
        if self.status_class is not None and r.status // 100 != self.status_class:
            return False
        if self.min_latency_ms is not None and r.latency_ms < self.min_latency_ms:
            return False
        return self.cursor is None or (r.ts, r.request_id) < self.cursor


def encode_cursor(ts: float, request_id: str) -> str:
    return base64.urlsafe_b64encode(orjson.dumps([ts, request_id])).decode().rstrip("=")


def decode_cursor(raw: str) -> tuple[float, str]:
    ts, rid = orjson.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
    if not math.isfinite(ts := float(ts)):  # "nan" or "inf" is no time we gave out (and names no day table)
        raise ValueError(f"cursor time {ts} is not finite")
    return ts, str(rid)


@dataclass(slots=True)
class RequestPage:
    items: list[RequestRecord]
    next_cursor: str | None


class RequestLogStore(Protocol):
    name: str

    async def open(self) -> None: ...

    async def write(self, records: Sequence[RequestRecord]) -> None:
        """Insert; a record whose request_id is already stored is ignored (idempotent replays)."""
        ...

    async def query(self, q: RequestQuery) -> list[RequestRecord]:
        """Newest first, at most ``q.limit`` records."""
        ...

    async def get(self, request_id: str, tenant_id: str = "") -> RequestRecord | None: ...

    async def drop_before(self, day: int) -> int:
        """Drop every day bucket older than ``day`` (days since the epoch); return how many."""
        ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class MemoryRequestLog:
    """In-process store (no database configured, a database that could not be opened, and tests).

    Keyed by ``(ts, request_id)`` as the SQL stores are: clients choose their request ids, so two tenants' apps
    may send the same one, and keeping the first record of an id dropped the other tenant's."""

    name = "memory"

    def __init__(self) -> None:
        self._days: dict[int, dict[tuple[float, str], RequestRecord]] = {}
        self._by_id: dict[str, list[RequestRecord]] = {}  # ``get``'s index: every record of an id

    async def open(self) -> None:
        return None

    async def write(self, records: Sequence[RequestRecord]) -> None:
        for r in records:
            day = self._days.setdefault(int(r.ts // DAY_S), {})
            if (r.ts, r.request_id) not in day:  # a replayed record is ignored
                day[(r.ts, r.request_id)] = r
                self._by_id.setdefault(r.request_id, []).append(r)

    async def query(self, q: RequestQuery) -> list[RequestRecord]:
        found = [r for day in self._days.values() for r in day.values() if q.matches(r)]
        found.sort(key=lambda r: (r.ts, r.request_id), reverse=True)
        return found[: q.limit]

    async def get(self, request_id: str, tenant_id: str = "") -> RequestRecord | None:
        """The newest record of ``request_id`` (of ``tenant_id``'s, when given), as the SQL stores answer."""
        mine = [r for r in self._by_id.get(request_id, ()) if not tenant_id or r.tenant_id == tenant_id]
        return max(mine, key=lambda r: r.ts) if mine else None

    async def drop_before(self, day: int) -> int:
        old = [d for d in self._days if d < day]
        for d in old:
            for r in self._days.pop(d).values():
                kept = [x for x in self._by_id.get(r.request_id, ()) if x is not r]
                if kept:
                    self._by_id[r.request_id] = kept
                else:
                    self._by_id.pop(r.request_id, None)
        return len(old)

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None


class RequestLogWriter:
    """Buffers records and writes them in batches; never blocks or fails a request."""

    def __init__(self, store: RequestLogStore, *, flush_interval_s: float = 1.0, batch_size: int = 500,
                 max_buffer: int = 50_000, retention_days: int = 30, now: Callable[[], float],
                 on_error: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.flush_interval_s, self.batch_size, self.retention_days = flush_interval_s, batch_size, retention_days
        self._buffer: deque[RequestRecord] = deque(maxlen=max_buffer)
        self._now = now
        self._on_error = on_error or (lambda op: None)
        self._stop = asyncio.Event()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()  # one flush at a time: the loop and readers that want fresh data
        self.dropped = 0
        self.healthy = True

    def add(self, record: RequestRecord) -> None:
        if len(self._buffer) == self._buffer.maxlen:
            self.dropped += 1
            self._on_error("buffer_full")
        self._buffer.append(record)
        if len(self._buffer) >= self.batch_size:
            self._wake.set()

    @property
    def pending(self) -> int:
        return len(self._buffer)

    async def flush(self) -> bool:
        """Write everything buffered; False (records kept) when the store fails."""
        async with self._lock:
            return await self._flush()

    async def _flush(self) -> bool:
        while self._buffer:
            batch = [self._buffer.popleft() for _ in range(min(self.batch_size, len(self._buffer)))]
            try:
                await self.store.write(batch)
            except asyncio.CancelledError:  # stopped mid-write: keep the batch (a rewrite is ignored)
                self._put_back(batch)
                raise
            except Exception as exc:
                self.healthy = False
                self._on_error("write")
                self._put_back(batch)
                log.warning("request log write failed, %d records kept for retry: %s", len(self._buffer),
                            type(exc).__name__)
                return False
            self.healthy = True
        return True

    def _put_back(self, batch: list[RequestRecord]) -> None:
        """Return a failed batch to the front; if new records filled the room, the oldest go."""
        room = (self._buffer.maxlen or 0) - len(self._buffer)
        keep = batch[-room:] if room > 0 else []
        self.dropped += len(batch) - len(keep)
        self._buffer.extendleft(reversed(keep))

    async def enforce_retention(self) -> None:
        """Drop the day buckets past ``retention_days``. A failure warns and counts, bar one the shutdown caused
        (``close`` closed the store under this pass, as when a gateway stops just after it started)."""
        if self._stop.is_set():  # shutting down: the store is closing, and retention can wait for the next start
            return
        try:
            dropped = await self.store.drop_before(int(self._now() // DAY_S) - self.retention_days)
        except Exception as exc:
            if self._stop.is_set():
                log.debug("request log retention cut short by the shutdown: %s", type(exc).__name__)
                return
            self._on_error("retention")
            log.warning("request log retention failed: %s", type(exc).__name__)
            return
        if dropped:
            log.info("request log: dropped %d day bucket(s) past retention", dropped)

    async def run(self) -> None:
        """The background loop: flush on a timer or a full batch; retention once an hour."""
        await self.enforce_retention()
        last_retention = self._now()
        backoff = self.flush_interval_s
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_interval_s)
            self._wake.clear()
            if await self.flush():
                backoff = self.flush_interval_s
            else:  # the store is away: wait before the next try (a full buffer wakes the loop at every add)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                backoff = min(backoff * 2, RETRY_BACKOFF_MAX_S)
            if self._now() - last_retention > 3600:
                last_retention = self._now()
                await self.enforce_retention()

    async def close(self) -> None:
        """Stop the loop and flush what is left (a few tries), then close the store."""
        self._stop.set()
        self._wake.set()
        for _ in range(3):
            if await self.flush():
                break
            await asyncio.sleep(0.2)
        if self._buffer:
            log.error("request log: %d records could not be written at shutdown", len(self._buffer))
        await self.store.close()
