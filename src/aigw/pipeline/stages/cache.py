"""The response cache stage: answer a repeated question from the cache, store new answers.

On the way in: find the request's policy (global <- model <- key <- request), look up the exact key, then
(semantic mode, when safe) the nearest earlier question with the same context. A hit is answered here, as a
plain body or a replayed stream. On the way out: a finished answer is stored off the request path; a stream
only once it ended well. Backend trouble never fails a request (``cache_guard``). Entries are scoped by
tenant, so no answer crosses tenants.

For accounting, a hit sets ``ctx.handled_by = "cache"`` (cost 0) and leaves the stored usage in ``ctx.usage``
and ``ctx.state["cache_saved_usage"]`` (priced as the saving), its origin in ``ctx.state["cache_hit"]``.

A hit is the path to keep lean: it reads only the entry's header line (``cache_entry``) and answers with the
stored body bytes (``Prerendered``), untouched unless a stage or the client's API needs the body; a stream is
replayed from a known list of chunks (``Replay``), sent in one write.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from aigw.config.cache import CacheConfig
from aigw.pipeline.context import Completed, Prerendered, Replay, RequestContext, Result
from aigw.pipeline.deps import StageDeps
from aigw.pipeline.stage import Stage
from aigw.pipeline.stages.cache_entry import Decoded, body_of, counted_usage, encode
from aigw.pipeline.stages.cache_guard import CacheStats, Guard, Lookups, Status, health_of
from aigw.pipeline.stages.cache_keys import ExactKeys, context_key, fallback_mark, semantic_blocker, word_order_mark
from aigw.pipeline.stages.cache_near import NearCache
from aigw.pipeline.stages.cache_pending import Pending, put
from aigw.pipeline.stages.cache_policy import Controls, Policies, read_controls
from aigw.pipeline.stages.cache_purge import Purger
from aigw.pipeline.stages.cache_semantic import Embedders, embedding
from aigw.pipeline.stages.cache_stream import StreamAssembler, replay, storable
from aigw.schema.openai import last_user_text
from aigw.schema.replay import replay_chunks
from aigw.stores.cache_base import CacheStore, LocalCacheStore, SemanticIndex
from aigw.stores.purge_log import PurgeLog
from aigw.supervise import Supervisor
from aigw.types import JSON, Clock

log = logging.getLogger("aigw.cache")
HEADER = "x-aigw-cache"
PENDING = "cache.pending"  # ctx.state: what to store after a miss
CACHED_ENDPOINTS = frozenset({"chat", "completions", "embeddings"})
_ANSWERS = frozenset({"chat", "completions"})  # generated text: stored only when it finished well


class _AskBackend:
    """``_get_now``'s answer when only a call to the backend can tell."""


_ASK_BACKEND = _AskBackend()


@dataclass(slots=True, frozen=True)
class _Unvouched:
    """``_serve``'s answer for another model's answer (a fallback's): served only while its mark is there."""

    served: str


class CacheStage(Stage):
    name = "cache"

    def __init__(self, policies: Policies, stores: dict[str, CacheStore], indexes: dict[str, SemanticIndex],
                 embedders: Embedders, supervisor: Supervisor, clock: Clock, metrics: Any = None,
                 purge_log: PurgeLog | None = None, purge_poll_s: float = 0.25,
                 guard_tag: Callable[[RequestContext], str] | None = None) -> None:
        self.policies = policies
        self.guard_tag = guard_tag  # the output checks' tag of a request (None: no output checks configured)
        self.stores = stores
        self.indexes = indexes
        self.embedders = embedders
        self.supervisor = supervisor
        self.clock = clock
        default = policies.default
        self.metrics = metrics
        self.guard = Guard(clock, default.timeout_ms / 1000, default.retry_after_s, metrics)
        self.stats: CacheStats = self.guard.stats
        self.embed_timeout_s = default.semantic.embed_timeout_ms / 1000
        self._storing: set[asyncio.Task[Any]] = set()
        self._in_process = {name: bool(getattr(store, "in_process", False)) for name, store in stores.items()}
        self._local: dict[str, Callable[[str], bytes | None]] = {  # in-memory stores' plain-call get
            name: store.get_now for name, store in stores.items()
            if isinstance(store, LocalCacheStore) and self._in_process[name]}
        self._layered = {name: store.get_now for name, store in stores.items()  # a worker's memory, then its
                         if isinstance(store, LocalCacheStore) and getattr(store, "layered", False)}  # parent's
        self._counters: dict[tuple[str, str], Any] = {}  # (model, result) -> the labelled lookup counter
        self._decoded = Decoded()
        self._exact_key = ExactKeys()
        self._near = {name: NearCache(default.near_ttl_s, default.near_max_bytes, clock)
                      for name, local in self._in_process.items()
                      if not local and name not in self._layered and default.near_ttl_s > 0}
        self.purger = Purger(stores, indexes, self._near, self.stats, self.flush, supervisor, purge_log, purge_poll_s)

    # -- way in ----------------------------------------------------------------------
    async def on_request(self, ctx: RequestContext) -> Result | None:
        if ctx.endpoint not in CACHED_ENDPOINTS:
            return None
        controls = read_controls(ctx)
        policy = self.policies.for_request(ctx)
        if policy.mode == "off" or policy.backend not in self.stores:  # e.g. a key asking for redis without one
            return None
        guard = self.guard_tag(ctx) if self.guard_tag is not None else ""
        key = self._exact_key(ctx, policy.scope, guard)
        trouble: list[str] = [] if self._in_process[policy.backend] else Lookups()  # one time budget for all
        if not controls.no_cache:
            raw = self._get_now(policy.backend, key, trouble)  # memory, or a near copy: no await
            if isinstance(raw, _AskBackend):
                raw = await self._fetch(policy.backend, key, trouble)
            if raw is not None:
                hit = self._serve(ctx, raw, "exact")
                if isinstance(hit, _Unvouched):
                    hit = await self._vouch(ctx, raw, "exact", key, hit.served, policy.backend, trouble)
                if hit is not None:
                    return hit
        ctx.response_headers[HEADER] = "miss"
        pending = Pending(key, policy, min(controls.ttl_s or policy.ttl_s, policy.max_ttl_s), trouble=trouble,
                          guard=guard)
        if self._semantic_wanted(ctx, policy, controls):
            hit = await self._semantic(ctx, policy, controls, pending)
            if hit is not None:
                return hit
        self.stats.misses += 1
        self._count(ctx, "error" if pending.trouble else "miss")
        if not controls.no_store:
            ctx.state[PENDING] = pending
        return None

    def _get_now(self, backend: str, key: str, trouble: list[str]) -> bytes | _AskBackend | None:
        """A lookup that needs no await: a store in process memory, or the near copy of a shared
        one's entry; else ``_ASK_BACKEND`` (then ``_get``)."""
        local = self._local.get(backend)
        if local is not None and self.guard.clear(backend):
            try:  # a dict lookup: no timer, no closure (the guard's bookkeeping only on failure)
                return local(key)
            except Exception as exc:
                self.guard.failed(backend, exc)
                if self.metrics is not None:
                    self.metrics.store_error(f"cache_{backend}", "get")
                trouble.append(backend)
                return None
        if (first := self._layered.get(backend)) is not None:
            return raw if (raw := first(key)) is not None else _ASK_BACKEND
        near = self._near.get(backend)  # only shared backends have one
        if near is not None and (raw := near.get(key)) is not None:
            return raw
        return _ASK_BACKEND

    async def _get(self, backend: str, key: str, trouble: list[str]) -> bytes | None:
        raw = self._get_now(backend, key, trouble)
        return await self._fetch(backend, key, trouble) if isinstance(raw, _AskBackend) else raw

    async def _fetch(self, backend: str, key: str, trouble: list[str]) -> bytes | None:
        """From the backend, through the guard (timeout, failure bookkeeping); a near copy is kept."""
        store = self.stores[backend]
        near = self._near.get(backend)
        epoch = near.epoch if near is not None else 0
        raw = await self.guard.call(backend, "get", lambda: store.get(key), self._timeout(backend), trouble)
        if near is not None and raw is not None and (entry := self._decoded(raw)) is not None:
            near.put(key, raw, entry.expires_at(), epoch)  # not if a purge ran meanwhile
        return raw

    def _timeout(self, backend: str) -> float | None:
        return 0 if self._in_process[backend] else None

    def _count(self, ctx: RequestContext, result: str) -> None:
        ctx.state["cache_result"] = result
        if self.metrics is not None:
            counter = self._counters.get((ctx.model, result))
            if counter is None:
                if len(self._counters) >= 1024:  # model names come from clients: keep the memo bounded
                    self._counters.clear()
                metrics = self.metrics
                counter = self._counters[(ctx.model, result)] = metrics.cache_total.labels(
                    metrics.model_label(ctx.model), result)
            counter.inc()

    def _semantic_wanted(self, ctx: RequestContext, policy: CacheConfig, controls: Controls) -> bool:
        if policy.mode != "semantic" or not controls.semantic or ctx.endpoint != "chat":
            return False
        sem = policy.semantic
        return not semantic_blocker(ctx.body, sem.max_turns, sem.with_tools)

    async def _semantic(self, ctx: RequestContext, policy: CacheConfig, controls: Controls,
                        pending: Pending) -> Result | None:
        """Embed the last user turn; on a close enough match, serve that entry."""
        text = last_user_text(ctx.body)
        embedder = self.embedders.get(policy.semantic.embedding_model)
        index = self.indexes.get(policy.backend)
        if not text.strip() or embedder is None or index is None:  # whitespace is no question: all of it embeds alike
            return None
        if policy.backend in pending.trouble:  # the exact lookup just failed or timed out: one wait per request
            return None
        guarded = f"embedder:{policy.semantic.embedding_model}"  # one failing embedder leaves the others on
        vector = await self.guard.call(guarded, "embed", embedding(embedder, text, ctx), self.embed_timeout_s,
                                       pending.trouble)  # a deployment's call is billed to ``ctx``
        if vector is None:  # failed, or a text the embedder cannot tell apart from others: exact only
            if guarded in pending.trouble:
                self.stats.embed_errors += 1
            return None
        pending.vector = vector
        pending.bucket = f"{context_key(ctx, policy.scope, pending.guard)}:{policy.semantic.embedding_model}"
        pending.mark = word_order_mark(text)
        if controls.no_cache:
            return None
        backend, search = policy.backend, lambda: index.search(pending.bucket, vector, policy.semantic.threshold,
                                                               pending.mark)
        raw = None
        for _ in range(2):  # a vector whose entry is gone (evicted, purged) is dropped, and the next best tried once
            match = await self.guard.call(backend, "search", search, trouble=pending.trouble)
            if match is None or (raw := await self._get(backend, match.entry_id, pending.trouble)) is not None \
                    or backend in pending.trouble:
                break
            await self.guard.call(backend, "discard", partial(index.discard, pending.bucket, match.entry_id),
                                  trouble=pending.trouble)
        if match is None or raw is None:
            return None
        served = self._serve(ctx, raw, "semantic", match.score)
        if isinstance(served, _Unvouched):
            served = await self._vouch(ctx, raw, "semantic", match.entry_id, served.served, policy.backend,
                                       pending.trouble, match.score)
        if served is not None:
            ctx.response_headers["x-aigw-cache-similarity"] = f"{match.score:.4f}"
        return served

    async def _vouch(self, ctx: RequestContext, raw: bytes, match: str, key: str, served: str, backend: str,
                     trouble: list[str], score: float | None = None) -> Result | None:
        """A fallback's answer: served while its mark is there (a purge of the model that gave it deletes it)."""
        mark = await self._get(backend, fallback_mark(key, served), trouble)
        hit = self._serve(ctx, raw, match, score, vouched=True) if mark is not None else None
        return hit if not isinstance(hit, _Unvouched) else None

    def _serve(self, ctx: RequestContext, raw: bytes, match: str, score: float | None = None,
               vouched: bool = False) -> Result | _Unvouched | None:
        entry = self._decoded(raw)
        body = entry.body if entry is not None else None
        if entry is not None and body is None and (ctx.stream or entry.private):
            body = body_of(entry)  # a replay or a private part to render: the body is needed
        if entry is None or (body is None and not entry.raw):
            log.warning("unreadable cache entry ignored")
            return None
        if entry.model != ctx.model and entry.model and not vouched:
            return _Unvouched(entry.model)
        self.stats.hits += 1
        if match == "semantic":
            self.stats.semantic_hits += 1
        self._count(ctx, "semantic_hit" if match == "semantic" else "hit")
        ctx.handled_by = "cache"  # the ledger: cost 0, and the usage below priced as the saving
        usage = entry.usage
        ctx.usage = dict(usage) if usage is not None else None
        ctx.state["cache_saved_usage"] = usage
        hit: JSON = {"match": match, "deployment": entry.deployment, "model": entry.model, "stored_at": entry.at}
        if score is not None:
            hit["similarity"] = round(score, 4)
        ctx.state["cache_hit"] = hit
        headers = ctx.response_headers
        headers[HEADER] = "hit"
        headers["x-aigw-cache-match"] = match
        headers["x-aigw-cache-age"] = str(max(0, int(self.clock.now() - entry.at)))
        if body is None:
            return Prerendered(entry.raw)  # sent as stored unless a stage needs the body
        if ctx.stream:
            return Replay(replay(replay_chunks(body)))
        return Completed(body)

    # -- way out ---------------------------------------------------------------------
    async def on_response(self, ctx: RequestContext, body: JSON) -> JSON:
        pending = ctx.state.pop(PENDING, None)
        if pending is not None:
            await self._keep(ctx, pending, body)
        return body

    def on_stream(self, ctx: RequestContext, chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
        pending = ctx.state.pop(PENDING, None)
        if pending is None:
            return chunks
        return self._watch(ctx, chunks, pending)

    async def _watch(self, ctx: RequestContext, chunks: AsyncIterator[JSON], pending: Pending
                     ) -> AsyncIterator[JSON]:
        """Pass chunks through; store the assembled answer only if the stream ran to its end.

        A chunk the assembler cannot read (an odd upstream: a null index, arguments that are not text) is
        passed on all the same: the cache never breaks a stream, it only leaves that answer unstored."""
        assembler: StreamAssembler | None = StreamAssembler(completion=ctx.endpoint == "completions")
        try:
            async for chunk in chunks:
                if assembler is not None:
                    try:
                        assembler.feed(chunk)
                    except Exception as exc:
                        log.debug("stream chunk the cache cannot read (answer not stored): %r", exc)
                        assembler = None
                yield chunk
        except BaseException:  # failed upstream, or the client left (GeneratorExit): never stored
            self.stats.not_stored += 1
            raise
        try:
            body = assembler.body() if assembler is not None else None
        except Exception as exc:
            log.debug("streamed answer the cache cannot assemble (not stored): %r", exc)
            body = None
        if body is None or ctx.error is not None:
            self.stats.not_stored += 1
            return
        await self._keep(ctx, pending, body)

    async def _keep(self, ctx: RequestContext, pending: Pending, body: JSON) -> None:
        """Store a finished answer: inline in process memory, else in a background task."""
        if ctx.endpoint in _ANSWERS and not storable(body):
            self.stats.not_stored += 1
            return
        counted = None
        if ctx.endpoint in _ANSWERS and not isinstance(body.get("usage"), dict):  # the upstream reported none
            counted = counted_usage(ctx.body, body)
        served = ctx.served_model or ctx.model
        value = encode(body, self.clock.now(), served, ctx.served_by.id if ctx.served_by is not None else "",
                       pending.ttl_s, counted)
        if served != ctx.model:  # a fallback answered: its mark goes first, so the entry is never unvouched
            pending.mark_key = fallback_mark(pending.key, served)
        if len(value) > pending.policy.max_entry_bytes:
            self.stats.not_stored += 1
            return
        if self._in_process[pending.policy.backend]:
            await self._store(pending, value)  # a dict insert: cheaper than a task, and done before the reply
            return
        task = self.supervisor.spawn(self._store(pending, value), name="cache-store")
        self._storing.add(task)
        task.add_done_callback(self._storing.discard)

    async def _store(self, pending: Pending, value: bytes) -> None:
        backend = pending.policy.backend
        store = self.stores[backend]
        done = await self.guard.call(backend, "set", lambda: put(store.set, pending, value), self._timeout(backend))
        if not done and backend in self._layered:  # the parent's store failed or is skipped: the worker keeps its own
            await put(store.copy, pending, value)  # type: ignore[attr-defined]  # LayeredCacheStore
        if done:
            self.stats.stores += 1
            if (near := self._near.get(backend)) is not None:
                near.put(pending.key, value, self.clock.now() + pending.ttl_s)
        index = self.indexes.get(backend)
        if done and pending.vector is not None and index is not None:
            vector = pending.vector
            await self.guard.call(backend, "add",
                                  lambda: index.add(pending.bucket, vector, pending.key, pending.ttl_s, pending.mark))

    async def flush(self) -> None:
        """Wait for the stores in flight (tests, shutdown)."""
        while self._storing:
            await asyncio.gather(*list(self._storing), return_exceptions=True)

    # -- admin (cache_purge.py) ----------------------------------------------------------
    async def purge(self, tenant: str | None, model: str | None = None) -> dict[str, int]:
        return await self.purger.purge(tenant, model)

    async def start(self) -> None:
        """Follow the purges other processes announce (when there are other processes to hear from)."""
        await self.purger.start()

    async def stop(self) -> None:
        await self.purger.stop()

    # -- health ----------------------------------------------------------------------
    async def health(self) -> tuple[Status, str]:
        """Degraded (not down) when a backend in use fails: requests then skip the cache."""
        in_use = {p.backend for p in self.policies.all() if p.mode != "off"} or {self.policies.default.backend}
        near_hits = sum(n.hits for n in self._near.values()) if self._near else None
        return await health_of(self.guard, {n: s for n, s in self.stores.items() if n in in_use}, near_hits)


def build(deps: StageDeps) -> Stage | None:
    from aigw.pipeline.stages.cache_build import build_stage

    return build_stage(deps)
