"""Breaker state and deployment statistics shared by every replica through Redis.

Nothing here runs on the happy path. Failures and trial results are pushed by
background tasks (one Lua call each); a half-open breaker asks Redis for a trial
permit (one short call, only while recovering); and a loop every
``sync_interval_s`` pushes this replica's in-flight count, latency averages,
successes, requests and tokens and reads back everyone's, plus the breaker verdict,
in one round trip for all deployments.

Every call has a short timeout. When Redis fails the router keeps routing on this
replica's own state, logs once, and picks the shared state up again when Redis answers.

Keys (under the gateway's ``redis_prefix``): ``rt:<deployment id>:{cb,w,r,q}`` =
breaker hash, breaker window, per-replica numbers, per-minute quota counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from importlib import resources
from typing import Any

from aigw.config.models import CircuitBreakerConfig
from aigw.routing.book import HealthBook
from aigw.routing.breaker import CLOSED, OPEN
from aigw.routing.state import DeploymentState

log = logging.getLogger("aigw.routing")

TTL_MS = 24 * 3600 * 1000  # idle deployments' keys go away after a day
DOWN_AFTER = 2  # consecutive failed calls before Redis counts as down
_PER_DEPLOYMENT = 11


def _script(name: str) -> str:
    lua = resources.files("aigw.routing") / "lua"
    return (lua / "common.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


def _us(seconds: float | None) -> int:
    return -1 if seconds is None else int(seconds * 1_000_000)


class SharedState:
    def __init__(
        self, redis: Any, prefix: str, book: HealthBook, cfg: CircuitBreakerConfig,
        replica: str | None = None, timeout_s: float = 0.25,
    ) -> None:
        self.redis = redis
        self.book = book
        self.cfg = cfg
        self.clock = book.clock
        self.replica = replica or uuid.uuid4().hex[:12]
        self.timeout_s = timeout_s
        self._keys = {i: [f"{prefix}rt:{i}:{k}" for k in ("cb", "w", "r", "q")] for i in book.states}
        self._record = redis.register_script(_script("record"))
        self._acquire = redis.register_script(_script("acquire"))
        self._sync = redis.register_script(_script("sync"))
        self._up = True
        self._failures = 0  # consecutive failed calls
        self._stop = asyncio.Event()
        self.last_sync = 0.0  # monotonic time of the last good sync

    @property
    def up(self) -> bool:
        return self._up

    # -- calls on the request's behalf --------------------------------------------
    async def acquire(self, s: DeploymentState) -> int | None:
        """A shared trial permit: 1 taken, 2 none needed (the breaker closed meanwhile), 0 refused, None
        when Redis did not answer. A permit taken is kept in ``s.shared_permits`` (its half-open period
        and lease), so that giving it back frees only it."""
        lease_ms = int(self.cfg.cooldown_s * 1000)
        reply = await self._call(self._acquire, self._keys[s.id][:1], [self.cfg.half_open_calls, lease_ms])
        if reply is None:
            return None
        granted = int(reply[0])
        self._adopt(s, reply[1], reply[2], reply[3], reply[4])
        if granted == 1:  # a permit of the shared count (2: the breaker was closed, nothing taken)
            s.shared_permits.append((int(reply[3]), int(reply[5])))
        return granted

    async def record(self, s: DeploymentState, fails: int, outcome: str,
                     permit: tuple[int, int] = (-1, -1), kinds: str = "") -> None:
        """``kinds`` (``record.lua``): the dead kind a failure was; for ``probe_ok`` the dead kinds the probe did
        not show gone; for ``trial_ok`` those to forget."""
        c = self.cfg
        args = [fails, outcome, c.failures, int(c.window_s * 1000), c.error_ratio or 0, c.min_calls,
                int(c.cooldown_s * 1000), TTL_MS, *permit, kinds]
        reply = await self._call(self._record, self._keys[s.id][:2], args)
        opened = reply is not None and self._adopt(s, *reply[:4]) and reply[0] == OPEN.encode()
        if opened:
            log.warning("circuit opened for deployment %s (shared by all replicas)", s.id)

    # -- the background exchange ----------------------------------------------------
    async def sync_once(self) -> bool:
        states = list(self.book.states.values())
        keys: list[str] = []
        stale_ms = int(max(0.5, 4 * self.cfg.sync_interval_s) * 1000)
        args: list[Any] = [self.replica, stale_ms, int(self.cfg.window_s * 1000), TTL_MS]
        now = self.clock.monotonic()
        taken = []
        for s in states:
            keys += self._keys[s.id]
            took = (s.pending_calls, s.rpm.take_pending(), s.tpm.take_pending())
            s.pending_calls = 0
            taken.append(took)
            cool_ms = max(0, int((s.cool_until - now) * 1000))
            args += [s.local_inflight, _us(s.own_latency_s), _us(s.own_ttft_s), *took, cool_ms]
        reply = await self._call(self._sync, keys, args)
        if reply is None:
            for s, (calls, reqs, toks) in zip(states, taken, strict=True):  # push them next time
                s.pending_calls += calls
                s.rpm.pending += reqs
                s.tpm.pending += toks
            return False
        self._apply(states, reply)
        return True

    def _apply(self, states: list[DeploymentState], reply: list[Any]) -> None:
        now_ms = int(reply[0])
        mono = self.clock.monotonic()
        self.last_sync = mono
        for i, s in enumerate(states):
            v = reply[1 + i * _PER_DEPLOYMENT : 1 + (i + 1) * _PER_DEPLOYMENT]
            self._adopt(s, v[0], v[1], v[2], now_ms)
            s.others_inflight = int(v[3])
            if int(v[4]) >= 0:
                s.latency_s = int(v[4]) / 1_000_000
            if int(v[5]) >= 0:
                s.ttft_s = int(v[5]) / 1_000_000
            s.rpm.shared = float(v[6])
            s.tpm.shared = float(v[7])
            if int(v[8]) > now_ms:
                s.cool_until = max(s.cool_until, mono + (int(v[8]) - now_ms) / 1000)
            s.shared_window = (int(v[9]), int(v[10]))
            s.shared_at = mono

    async def run(self) -> None:
        """Sync until stopped; a failed sync is logged once and retried every interval."""
        await self._preload()
        while not self._stop.is_set():
            await self.sync_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.cfg.sync_interval_s)

    def stop(self) -> None:
        self._stop.set()

    async def _preload(self) -> None:
        """Load the scripts once with a generous timeout, so the first short-timeout calls need one trip."""
        for script in (self._record, self._acquire, self._sync):
            try:
                async with asyncio.timeout(2.0):
                    await self.redis.script_load(script.script)
            except Exception:  # Redis away at start: the calls below will say so
                return

    # -- plumbing ---------------------------------------------------------------------
    def _adopt(self, s: DeploymentState, state: Any, until_ms: Any, gen: Any, now_ms: Any) -> bool:
        name = state.decode() if isinstance(state, bytes) else str(state)
        until = self.clock.monotonic() + (int(until_ms) - int(now_ms)) / 1000
        return s.breaker.adopt(OPEN if name == OPEN else CLOSED, until, int(gen))

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> list[Any] | None:
        try:
            async with asyncio.timeout(self.timeout_s):
                reply = await script(keys=keys, args=args)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any Redis trouble: route on local state, say so once
            self._failures += 1
            if self._failures >= DOWN_AFTER:  # one slow call is a blip, not an outage
                self._went_down(exc)
            return None
        self._failures = 0
        if not self._up:
            self._up = True
            log.warning("shared routing state: Redis answers again; replicas share breaker state again")
        return list(reply)

    def _went_down(self, exc: BaseException) -> None:
        if self._up:
            self._up = False
            log.warning("shared routing state: Redis unavailable (%s); routing on this replica's own state",
                        type(exc).__name__)
        for s in self.book.states.values():  # fall back to purely local numbers
            s.others_inflight = 0
            s.rpm.shared = s.tpm.shared = None
            s.shared_window = None
