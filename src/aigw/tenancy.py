"""Composition of tenancy (part of the composition root, split out of ``app.py``).

Picks the stores: SQLite or PostgreSQL for durable state (``database_url``),
process memory or Redis for hot state (``redis_url``), and wires them into the
key cache (auth), the limits / budget / accounting stages, the ledger writer
and the admin API. ``start``/``stop`` are lifespan hooks: migrations (on start
for SQLite; ``aigw db upgrade`` for PostgreSQL), budget counters seeded from the
rollups, the ledger drained on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine
from typing import Any

from aigw import errors
from aigw.accounting.ledger import Ledger
from aigw.accounting.pricing import PriceBook
from aigw.accounting.tokens import LOCAL_COUNTER
from aigw.config.models import GatewayConfig
from aigw.http import admin_api, admin_spend
from aigw.http.auth import Authenticator
from aigw.http.key_filter import KeyFilter
from aigw.http.key_lookup import KeyCache
from aigw.pipeline.tenancy import SERVICE, TenancyServices
from aigw.providers.http import HttpClients
from aigw.sqlite_process import shareable
from aigw.stores.base import ApiKey, BudgetCounter, Gate, KeyVersion, RateLimiter, Scope, window_of
from aigw.stores.database import SqlDatabase, open_database
from aigw.stores.database_name import shown_database
from aigw.stores.memory import MemoryGate, MemoryRateLimiter
from aigw.stores.memory_budgets import MemoryBudgets
from aigw.stores.sqlite.db import path_of
from aigw.stores.sqlite.ledger_writer import SqliteLedgerWriter
from aigw.supervise import Supervisor
from aigw.types import Clock, SystemClock

log = logging.getLogger("aigw.tenancy")
SEED_CHECK_S = 0.5  # how soon budget counters are seeded again after Redis lost them
WEBHOOK_TRIES = 4  # a budget alert's webhook: tries in all (waits 1, 2, 4 s between them)
WEBHOOK_TIMEOUT_S = 10.0  # each try's


class _DbVersion:
    """The key version kept in the database (embedded mode: shared by uvicorn workers)."""

    def __init__(self, db: SqlDatabase) -> None:
        self._db = db

    async def get(self) -> int:
        return await self._db.key_version()

    async def bump(self) -> int:
        return await self._db.bump_key_version()


class Tenancy:
    def __init__(self, config: GatewayConfig, redis: Any, supervisor: Supervisor, clients: HttpClients,
                 clock: Clock | None = None) -> None:
        self.config = config
        self.cfg = config.tenancy
        self.clock = clock or SystemClock()
        self.supervisor = supervisor
        self._clients = clients
        self.db = open_database(config.database_url)
        limiter: RateLimiter
        budgets: BudgetCounter
        gate: Gate
        version: KeyVersion
        self._redis = redis
        self._pipe: Any = None  # the gate's lean Redis client (stores/redis/pipe.py)
        self._redis_gate: Any = None  # RedisCounters, in Redis mode (its skip window shows in /health/ready)
        self._hosted: Any = None  # HostedCounters, a worker's counters kept by its parent (no Redis)
        if redis is not None:
            from aigw.stores.redis.counters import RedisCounters, RedisKeyVersion
            from aigw.stores.redis.pipe import RedisPipe

            self._pipe = RedisPipe.from_url(config.redis_url)  # None (TLS, options): the gate keeps redis-py
            if self._pipe is None:
                log.info("redis_url is not plain redis:// or unix://: the gate's script calls use redis-py")
            limiter = budgets = gate = self._redis_gate = RedisCounters(
                redis, config.redis_prefix, config.server.request_timeout_s + 60, self._pipe,
                self.cfg.store_retry_after_s, report=self._owed_settles)
            version = RedisKeyVersion(redis, config.redis_prefix)
        elif config.server.counter_socket:  # `aigw serve --workers N` without Redis: the parent's counters
            from aigw.stores.counter_client import HostedCounters

            limiter = budgets = gate = self._hosted = HostedCounters(config.server.counter_socket,
                                                                     retry_after_s=self.cfg.store_retry_after_s)
            version = _DbVersion(self.db)
        else:
            memory_limits = MemoryRateLimiter(self.clock, config.server.request_timeout_s + 60)
            memory_budgets = MemoryBudgets(config.server.request_timeout_s + 60)
            limiter, budgets, gate = memory_limits, memory_budgets, MemoryGate(memory_limits, memory_budgets)
            version = _DbVersion(self.db)
        self.version = version
        # Workers without Redis keep budget counters each in its own memory: a budget added or changed through
        # another worker is seeded there, not here. Every such change moves the key version, so seed again
        # when it moves (seeding only raises a counter to the ledger's figure). One process seeds in the PATCH.
        # In the background, after the keys are dropped: it reads every budgeted scope (about a second for
        # 50,000 keys), and a revoked key must not wait for it.
        reseed = self._reseed_soon if redis is None and config.server.workers > 1 and self._hosted is None else None
        self._reseeding: asyncio.Task[Any] | None = None
        self._reseed_again = False
        self.key_filter = KeyFilter(self.db, self.clock, lambda coro, name: supervisor.spawn(coro, name=name),
                                    self.cfg.unknown_key_reads_per_s, min(self.cfg.key_refresh_s, 0.25))
        self.keys = KeyCache(self.db, version, self.clock, self.cfg.key_refresh_s, self.cfg.key_cache_size,
                             on_move=reseed, key_filter=self.key_filter)
        self._ledger_writer = _ledger_writer(config, self.db)
        self.ledger = Ledger(self._ledger_writer or self.db,
                             self.cfg.ledger.model_copy(update={"spill_file": _spill_path(config)}))
        self.services = TenancyServices(config=self.cfg, limiter=limiter, budgets=budgets, gate=gate,
                                        prices=PriceBook(config.models), tokens=LOCAL_COUNTER, ledger=self.ledger,
                                        alert=self._alert, spawn=self._spawn_alert)
        self._watch: asyncio.Task[Any] | None = None
        self._seeding: asyncio.Task[Any] | None = None

    def stage_services(self) -> dict[str, Any]:
        return {SERVICE: self.services}

    async def start(self) -> None:
        try:
            await self.db.open()
        except Exception as exc:  # a wrong URL, a database down or silent: one line that says so, not a traceback
            why = f"{type(exc).__name__}: {str(exc) or 'no answer in time'}"
            raise errors.StartupError(f"the database {shown_database(self.config.database_url)} cannot be opened "
                                      f"({why}); check database_url and that the database is up") from exc
        migrate = self.cfg.migrate_on_start
        if migrate if migrate is not None else self.db.kind == "sqlite":
            applied = await self.db.migrate()
            if applied:
                log.info("database migrated to version %s", applied[-1])
        elif missing := await self.db.pending_migrations():
            raise errors.StartupError(f"the database needs migrations {missing}: run `aigw db upgrade` with the "
                                      "same --config, or set tenancy.migrate_on_start: true")
        spent = await self.db.budgeted_spend(self.clock.now())
        try:  # Redis away at start: serve anyway, under the configured failure policies
            await self.services.budgets.seed(spent)
            await self.keys.check_version()
        except Exception as exc:
            log.warning("hot-state store unavailable at start (%s: %s); limits fail %s, budgets fail %s until "
                        "it answers", type(exc).__name__, exc, self.cfg.limits_on_store_error,
                        self.cfg.budget_on_store_error)
        if self._redis is not None:  # an evicting Redis loses budget counters in silence: say so once
            from aigw.stores.redis.eviction import warn_if_evicting

            await warn_if_evicting(self._redis)
        self.ledger.replay_spill()
        self.ledger.start(self.supervisor)
        self._watch = self.supervisor.spawn(self.keys.watch(), name="key-version-watch")
        if self.config.redis_url:
            self._seeding = self.supervisor.spawn(self._keep_seeded(), name="budget-seed-watch")
        if self.config.server.workers > 1 and not self.config.redis_url and self._hosted is None:
            log.warning("%d workers without redis_url: each keeps its own rate-limit and budget counters, so "
                        "limits apply per worker; set redis_url to share them", self.config.server.workers)
        if self.services.prices.unknown:
            log.warning("no price for %s: their calls cost 0 (set `prices:` on those models)",
                        ", ".join(sorted(self.services.prices.unknown)))
        if self.services.prices.partial:
            log.warning("the `prices:` of %s set no input or no output rate and the price table has none: those "
                        "tokens cost 0 (set input_per_mtok and output_per_mtok)",
                        ", ".join(sorted(self.services.prices.partial)))

    def _reseed_soon(self) -> None:
        """Seed this worker's budget counters again, off the version watch: one reseed at a time, and one more
        after it when the version moved meanwhile (its change may have come after the running one read)."""
        if self._reseeding is not None and not self._reseeding.done():
            self._reseed_again = True
            return
        self._reseeding = self.supervisor.spawn(self._reseed(), name="budget-reseed")

    async def _reseed(self) -> None:
        """Raise this worker's budget counters to the ledger's figures (``--workers N`` without Redis: a
        budget another worker added or changed, docs/tenancy.md), until no move is left unseen."""
        while True:
            self._reseed_again = False
            try:
                await self.services.budgets.seed(await self.db.budgeted_spend(self.clock.now()))
            except Exception as exc:  # the next move seeds again; the counters only ever lag, never drop
                log.warning("key version moved, but budget counters could not be seeded again (%s: %s)",
                            type(exc).__name__, exc)
            if not self._reseed_again:
                return

    async def _keep_seeded(self) -> None:
        """Budget counters in Redis start from the ledger again whenever Redis has lost them (a restart without
        persistence drops the mark ``seed`` leaves) or seeding failed at start: checked every ``SEED_CHECK_S``.
        Seeding only raises counters, so a replica that re-seeds after another did changes nothing.

        Calls that a failed store let through unreserved (``budget_on_store_error: open``) hold no lease, and
        calls in flight when the store lost its data hold one no more, so no settle counts them: once their count
        stops moving and the ledger has written every row recorded by then, the counters are seeded again too
        (else the outage's spend, or the calls in flight's, was never counted: tested)."""
        failures = 0
        caught_up = seen = 0  # uncounted calls ended: whose cost the counters have; at the last check
        rows_then: tuple[int, int] | None = None  # (uncounted calls ended, ledger rows recorded) to wait for
        while True:
            await asyncio.sleep(SEED_CHECK_S)
            ended, ledger = self.services.uncounted_ended, self.ledger
            if rows_then is None and ended != caught_up and ended == seen:
                rows_then = (ended, ledger.written + ledger.dropped + ledger.pending)
            seen = ended
            try:
                if await self.services.budgets.seeded():
                    failures = 0
                    if rows_then is not None and ledger.written + ledger.dropped >= rows_then[1]:
                        await self.services.budgets.seed(await self.db.budgeted_spend(self.clock.now()))
                        caught_up, rows_then = rows_then[0], None
                        log.info("budget counters seeded from the ledger: calls that no lease counted (admitted "
                                 "unreserved while the store failed, or in flight when it lost its data) count now")
                    continue
                self.services.seed_generation += 1  # the leases of calls in flight are gone too: see them end
                await self.services.budgets.seed(await self.db.budgeted_spend(self.clock.now()))
                log.warning("budget counters seeded from the ledger again (the store had lost them)")
            except Exception as exc:  # still away: the budgets follow their failure policy meanwhile
                failures += 1
                if failures == 1 or failures % 60 == 0:
                    log.warning("budget counters cannot be checked or seeded (%s: %s)", type(exc).__name__, exc)

    async def stop(self) -> None:
        await self.key_filter.stop()
        for task in (self._seeding, self._reseeding):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await asyncio.wait_for(task, 2)
        if self._watch is not None:
            # redis-py's own timeouts can swallow a cancel that lands inside a call, so ask the
            # loop to end as well and cancel again until it has; shutdown never hangs on it
            self.keys.stop_watching()
            while not self._watch.done():
                self._watch.cancel()
                await asyncio.wait({self._watch}, timeout=0.5)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._watch
        if self._redis_gate is not None:  # settles owed through an outage: sent now, or logged as lost
            await self._redis_gate.close()
        if self._hosted is not None:
            await self._hosted.close()
        await self.ledger.close(self.cfg.ledger.shutdown_timeout_s)
        if self._ledger_writer is not None:
            await self._ledger_writer.close()
        await self.db.close()
        if self._pipe is not None:
            await self._pipe.aclose()

    async def health(self) -> tuple[str, str]:
        status, detail = self.ledger.status()
        if status != "ok":
            return status, detail
        writer = self._ledger_writer
        if writer is not None:  # how the writer processes have fared (docs/tenancy.md)
            detail += (f"; writer processes: {writer.children.switches} switches to the saturation writer, "
                       f"{writer.children.fallbacks} batches written by the database thread instead")
        return "ok", detail

    async def keys_health(self) -> tuple[str, str]:
        """The key-version poll: degraded while it fails (``KeyCache.health``)."""
        return self.keys.health()

    async def gate_health(self) -> tuple[str, str]:
        """Redis mode, or workers' counters kept by their parent: degraded while the limits and budget steps
        skip that store (it timed out or failed moments ago; docs/tenancy.md, "Failure policies"), ok otherwise."""
        store = self._redis_gate or self._hosted
        if store is None:
            return "ok", "in memory"
        answering, detail = await store.health()
        if answering:
            return "ok", detail
        return "degraded", (f"{detail}; meanwhile limits fail {self.cfg.limits_on_store_error}, budgets fail "
                            f"{self.cfg.budget_on_store_error}")

    def _owed_settles(self, outcome: str, n: int) -> None:
        """Settles owed through a Redis outage: counted in ``aigw_gate_owed_settles_total``."""
        metrics = self.services.metrics
        if metrics is not None:
            metrics.owed_settles(outcome, n)

    def _spawn_alert(self, coro: Coroutine[Any, Any, Any]) -> None:
        """A budget alert raised by a settle sent after an outage, when no request waits for it."""
        self.supervisor.spawn(coro, name="budget-alert")

    async def _alert(self, event: dict[str, Any]) -> None:
        url = self.cfg.alert_webhook
        if url:
            self.supervisor.spawn(self._post(url, event), name="budget-alert-webhook")

    async def _post(self, url: str, event: dict[str, Any]) -> None:
        """Deliver one alert, at least once: a connection error, a timeout, a 429 or a 5xx is tried again
        (``WEBHOOK_TRIES`` in all, waits doubling from 1 s); the event's ``event_id`` lets the receiver drop a
        repeat (a slow receiver may have taken the first try after its timeout)."""
        what = f"{event.get('scope')} {event.get('id')} {round(float(event.get('threshold', 0)) * 100)}% " \
               f"(window {event.get('window')}, event {event.get('event_id')})"
        tries = [0]
        try:
            await self._deliver(url, event, what, tries)
        except asyncio.CancelledError:  # the gateway stopping (its drain's grace is over): lost, and said so
            log.error("budget alert webhook for %s not delivered: the gateway stopped after %d of %d tries", what,
                      tries[0], WEBHOOK_TRIES)
            raise

    async def _deliver(self, url: str, event: dict[str, Any], what: str, tries: list[int]) -> None:
        wait = 1.0
        for attempt in range(1, WEBHOOK_TRIES + 1):
            tries[0] = attempt
            try:
                async with self._clients.session_for(url).post(
                        url, json=event, timeout=WEBHOOK_TIMEOUT_S) as resp:  # type: ignore[arg-type]
                    if resp.status < 300:
                        return
                    if resp.status != 429 and resp.status < 500:  # the receiver refuses it: trying again won't help
                        log.warning("budget alert webhook for %s answered %s; not retried", what, resp.status)
                        return
                    problem = f"answered {resp.status}"
            except Exception as exc:
                problem = f"failed ({type(exc).__name__})"
            if attempt == WEBHOOK_TRIES:
                log.error("budget alert webhook for %s %s; gave up after %d tries", what, problem, attempt)
                return
            log.warning("budget alert webhook for %s %s; trying again in %.0f s", what, problem, wait)
            await asyncio.sleep(wait)
            wait *= 2

    async def _budget_changed(self, change: admin_api.BudgetChange) -> None:
        """A budget added or changed mid-window counts what the window has spent already (from the rollups;
        a row still in the ledger's buffer is not there yet), not from zero until the next restart. Its
        thresholds that the counters' settled spend has reached alert now: no call will cross them (a budget
        lowered below its spend would otherwise refuse every call without its 100 % alert); those that calls
        still settling under the old amount reach alert at their settle."""
        kind, ident, limits = change.kind, change.ident, change.after
        if limits.budget_usd is None:
            return
        now = self.clock.now()
        window = window_of(limits.budget_period, now)
        try:
            spent = await self.db.scope_spend(kind, ident, limits.budget_period, now)
            await self.services.budgets.seed({(kind, ident, window): spent})
        except Exception as exc:  # saved all the same: the caller repeats the call, which seeds again
            log.warning("budget of %s %s changed, but its spend so far could not be loaded (%s: %s)", kind, ident,
                        type(exc).__name__, exc)
            raise errors.Unavailable("The change is saved, but the budget's spend so far could not be loaded "
                                     "(store unavailable); repeat the call to apply it.", retry_after=1.0) from None
        if not change.budget_moved:
            return  # the same budget: its alerts fired as its spend crossed them
        scope = Scope(kind, ident, limits)  # type: ignore[arg-type]
        try:  # measured on the counters (the rollups lag by the ledger's buffer), marked there: each fires once
            reached = await self.services.budgets.reached(scope, now, self.cfg.alert_thresholds)
        except Exception as exc:  # saved and seeded: only the change's own alerts are lost
            log.warning("budget of %s %s changed, but its alert thresholds could not be checked (%s: %s)", kind,
                        ident, type(exc).__name__, exc)
            return
        for threshold in reached:
            await self.services.raise_alert(scope, change.tenant_id, window, threshold, change.request_id)

    async def _key_revoked(self, key: ApiKey) -> None:
        """A revoked key never spends again: its budget counters go (in Redis a `total` window's would stay for
        good; its spend is in the ledger, and a revoked key is not seeded again). A store that cannot be
        reached now leaves them, logged: the revocation stands."""
        if key.limits.budget_usd is None:
            return
        try:
            await self.services.budgets.forget(Scope("key", key.id, key.limits), self.clock.now())
        except Exception as exc:
            log.warning("key %s revoked, but its budget counters could not be dropped (%s: %s)", key.id,
                        type(exc).__name__, exc)

    def register_routes(self, app: Any, auth: Authenticator) -> admin_api.AdminApi:
        """The admin routes of tenants, projects, keys and spend; their API, for others that name tenants."""
        api = admin_api.AdminApi(self.db, self.version, self.clock, self.keys.invalidate, self._budget_changed,
                                 self.keys.owe_bump, self._key_revoked, self.key_filter.add)
        admin_api.register(app, auth, api)
        admin_spend.register(app, auth, admin_spend.SpendApi(api))
        return api


def _ledger_writer(config: GatewayConfig, db: SqlDatabase) -> SqliteLedgerWriter | None:
    """Writer processes for a SQLite file (``ledger.writer: process``), the database as their
    fallback; None where the database store writes itself (PostgreSQL, in-memory SQLite,
    ``writer: thread``)."""
    if config.tenancy.ledger.writer != "process" or not config.database_url.startswith("sqlite:"):
        return None
    path = path_of(config.database_url)
    return SqliteLedgerWriter(path, fallback=db) if shareable(path) else None


def _spill_path(config: GatewayConfig) -> str:
    """Where unwritten ledger rows wait for the next start (see ``LedgerConfig.spill_file``)."""
    chosen = config.tenancy.ledger.spill_file
    if chosen == "off":
        return ""
    if chosen:
        return chosen
    url = config.database_url
    if url.startswith("sqlite:"):
        path = path_of(url)
        return "" if path == ":memory:" else path + ".ledger-spill.jsonl"
    return "aigw-ledger-spill.jsonl"
