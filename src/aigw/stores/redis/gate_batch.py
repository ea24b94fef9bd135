"""The Redis gate's batching: the enter/leave steps that concurrent requests issue in one loop turn
travel as one script call (``batch_source``), sent so that no caller's cancellation loses another's
answer (``GateBatcher``), and not sent at all for a short while after Redis failed (its skip window).
Kept apart from ``counters`` (what the steps mean) because this is only how they travel.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any, Protocol, cast

import redis.exceptions as redis_errors

from aigw.stores.failures import StoreSkipped, out_of_memory
from aigw.stores.redis.gate_owed import OWED_MAX, OwedSettles, Steps
from aigw.stores.redis.pipe import ReplyError, Script, bulk_int

log = logging.getLogger("aigw.gate")
# failures that say Redis is away or stalled (the lean pipe's, and redis-py's for the URLs it keeps);
# an error reply is Redis answering, and opens no skip window, bar one: out of memory (``out_of_memory``)
_OUTAGE = (TimeoutError, OSError, redis_errors.ConnectionError, redis_errors.TimeoutError)
SHUTDOWN_WAIT_S = 2.0  # at shutdown, how long owed settles may wait for Redis to answer


def lua_source(name: str) -> str:
    return resources.files("aigw.stores.redis").joinpath("lua", f"{name}.lua").read_text(encoding="utf-8")


class ScriptRunner(Protocol):
    async def evalsha(self, script: Script, keys: Sequence[bytes], args: Sequence[bytes]) -> Any: ...

    def evalsha_now(self, script: Script, keys: Sequence[bytes],
                    args: Sequence[bytes]) -> asyncio.Future[Any] | None:
        """Send now and return the reply's future, or None when that takes an await (connecting)."""


def batch_source() -> str:
    """One script running many enter/leave steps, built from enter.lua and leave.lua themselves.

    ARGV[1] = number of steps; then per step: kind ('e' | 'l'), key count, argument count and
    its arguments; KEYS holds every step's keys in order. One reply per step, exactly as the
    single-step script would have answered (each step runs as that script, atomically, in order).
    """
    def as_function(name: str, fn: str) -> str:
        body = [ln for ln in lua_source(name).splitlines() if not ln.startswith("--")]
        text = "\n".join("  " + ln if ln else ln for ln in body).replace("KEYS", "K").replace("ARGV", "A")
        return f"local function {fn}(K, A)\n{text}\nend\n"

    return (as_function("enter", "enter") + as_function("leave", "leave") + """
local out = {}
local kpos, apos = 1, 2
for step = 1, tonumber(ARGV[1]) do
  local kind, nk, na = ARGV[apos], tonumber(ARGV[apos + 1]), tonumber(ARGV[apos + 2])
  apos = apos + 3
  local K, A = {}, {}
  for i = 1, nk do K[i] = KEYS[kpos + i - 1] end
  for i = 1, na do A[i] = ARGV[apos + i - 1] end
  kpos, apos = kpos + nk, apos + na
  if kind == 'e' then out[step] = enter(K, A) else out[step] = leave(K, A) end
end
return out
""")


@dataclass(slots=True)
class Outage:
    """Redis timed out or failed; once ``confirmed``, until ``until`` (loop time) no step is sent, then one
    probe at a time."""

    since: float  # the first failure (loop time)
    until: float
    error: str
    # batches sent when it began, then when it was confirmed or its window renewed: a failure of a batch sent
    # before that says nothing new (before confirmation one sent later must fail too; after it, only the probe
    # is sent, and a stale batch's failure must neither renew the window nor let a second probe go)
    after: int
    confirmed: bool = False
    probing: bool = False  # a step (or the health check's ping) is on its way to find out
    full: bool = False  # Redis answers but refuses writes (maxmemory reached): nothing of a refused batch ran


class GateBatcher:
    """Runs the gate steps that concurrent requests issue in the same loop turn as one script call.

    The first step of a batch yields once (so that steps issued in this turn join it), then
    sends them all; a step waits for its own reply only, which a callback on the batch's reply
    hands out. So a caller that goes away (its client left: its task is cancelled) takes no
    one else's answer with it: the batch is sent even when its opener is cancelled in that
    yield, and its replies reach the other steps whatever becomes of the opener. Under load
    this divides the Redis round trips (and the client's CPU per call, the larger cost) by the
    batch size; alone, a step costs what the single call did. Keys and arguments arrive as bulk
    strings.

    A step whose caller went away still runs, maybe later than steps sent after it (its batch
    sent again after a NOSCRIPT, or once connected): ``gone`` holds, by slot, its batch's end
    until then, and ``leave`` for that slot waits for it, or the step would take the slot and
    lease after their settle had run (held until they expire).

    After a batch fails with a timeout or a broken connection, and a batch sent after that failure fails
    too, steps raise ``StoreSkipped`` at once for ``retry_after_s`` (nothing is sent; the callers apply
    their store-error policies), then one step is sent as a probe while the others still skip: its answer
    ends the outage, another failure starts a new window. So a stalled Redis costs two timeouts, then one
    per window, not one per request; while it answers, ``run`` pays two attribute checks for this. Why
    two: a pause of this process (a long GC) times out whatever was in flight although Redis answered;
    one failure alone would then refuse a second of budgeted calls. 0 turns the window off (every step
    tries Redis).

    A skipped step its caller marks ``replayable`` (a leave: the settle after a call) is not lost: it is
    owed (``gate_owed.OwedSettles``, up to ``owed_max``) and raises ``SettleOwed``; when Redis answers
    again (the probe, the health check's or any step) the owed steps are sent in the background, exactly
    once. So is a settle a full Redis refused (its own answer that the script did not run), whatever the
    window: with it off (nothing skipped), the owed settles go with the next step Redis answers, or the
    health check. ``report(outcome, n)`` counts them: owed, replayed, dropped, failed.
    """

    def __init__(self, runner: ScriptRunner, retry_after_s: float = 1.0, owed_max: int = OWED_MAX,
                 report: Callable[[str, int], None] | None = None) -> None:
        self._runner = runner
        self.retry_after_s = retry_after_s
        self.owed_settles = OwedSettles(self._start, lambda: self.outage is None, owed_max, report)
        self.outage: Outage | None = None  # set while Redis is failing (the skip window, then the probe)
        self.skipped = 0  # steps not sent because of an outage, since start
        self.outages = 0
        # (since, error): settles owed because a full Redis refused them with no window open (off, or not yet);
        # /health/ready says degraded until they are sent (with the window on, the outage says it)
        self.refused: tuple[float, str] | None = None
        self._sent = 0  # batches sent since start (numbers them, for telling a later failure from the first)
        self._script = Script(batch_source())
        self._steps: Steps = []
        self._sending: set[asyncio.Task[None]] = set()  # a running task needs a reference held
        self._ended: asyncio.Future[None] | None = None  # the gathering batch's end (answered or failed)
        self.gone: dict[str, asyncio.Future[None]] = {}  # slot -> the end of the batch its gone caller's step is in

    async def run(self, kind: bytes, keys: list[bytes], args: list[bytes], slot: str = "",
                  replayable: bool = False) -> Any:
        """Run one step; ``replayable``: safe to send later if skipped now (it is then owed)."""
        if self.outage is not None:
            try:
                self._skip_or_probe(self.outage)
            except StoreSkipped as skipped:
                if replayable:
                    raise self.owed_settles.owe(kind, keys, args, skipped) from None
                raise
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self._steps.append((kind, keys, args, fut))
        if len(self._steps) == 1:  # this step opens the batch: gather the turn's others, then send
            ended = self._ended = loop.create_future()
            try:
                await asyncio.sleep(0)
            except BaseException:  # cancelled: nobody waits for this step's reply (a failed batch's error
                fut.cancel()  # set on it would be logged as "Future exception was never retrieved")
                self._left(slot, ended)
                raise
            finally:  # cancelled or not: the turn's steps go out (else every later step would wait for good)
                steps, self._steps = self._steps, []
                self._start(steps, ended)
        else:
            ended = cast("asyncio.Future[None]", self._ended)  # set by the batch's opener
        try:
            return await fut
        except asyncio.CancelledError:
            self._left(slot, ended)
            raise
        except Exception as exc:  # Redis full: the batch did not run, so a settle is kept for when it has room
            if replayable and out_of_memory(exc):  # window or none (one that timed out: ``RedisCounters.leave``)
                self._refused(exc)
                raise self.owed_settles.owe(kind, keys, args, exc) from None
            raise

    def _refused(self, exc: Exception) -> None:
        """A settle a full Redis refused is about to be owed: note since when (once per spell of owed settles)."""
        if self.refused is not None and self.owed_settles.pending:
            return
        self.refused = (asyncio.get_running_loop().time(), f"{type(exc).__name__}: {exc}"[:160])
        if self.retry_after_s <= 0:  # with the window on, the outage it opened logs it
            log.warning("Redis is out of memory (used memory > maxmemory, policy noeviction): it refuses the "
                        "gate's writes; settles are kept until it takes writes again; free memory or raise "
                        "maxmemory (%s)", self.refused[1])

    def _skip_or_probe(self, outage: Outage) -> None:
        """Raise ``StoreSkipped`` in the window and while a probe is out; else this step is the probe."""
        if not outage.confirmed:
            return  # one failure so far: steps still go to Redis (a second one sent after it decides)
        now = asyncio.get_running_loop().time()
        if outage.probing or now < outage.until:
            self.skipped += 1
            raise StoreSkipped(f"Redis failed {now - outage.since:.1f} s ago ({outage.error}); not tried until "
                               "its skip window ends")
        outage.probing = True

    @property
    def owed(self) -> int:
        return len(self.owed_settles)

    async def close(self, timeout_s: float = SHUTDOWN_WAIT_S) -> None:
        """Shutdown: the settles still owed are sent if Redis answers within ``timeout_s`` (probed once its
        skip window is over); those left are given up, logged with their number and counted as dropped."""
        owed = self.owed_settles
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        while owed and loop.time() < deadline:
            if self.outage is not None:
                await self.status()  # the probe: an answer ends the outage and starts the replay
                if self.outage is not None:
                    await asyncio.sleep(0.05)
                    continue
            owed.replay_soon()
            if owed.replaying is not None:
                await asyncio.wait([owed.replaying], timeout=max(0.0, deadline - loop.time()))
        owed.give_up()

    def _settled(self, exc: BaseException | None, batch: int) -> None:
        """Batch number ``batch`` (or a probe) ended: an answer ends the outage; a timeout or a lost
        connection begins one, confirms it (a batch sent after its first failure) or renews its skip
        window; anything else (a cancel) only lets the next step probe."""
        outage = self.outage
        full = exc is not None and out_of_memory(exc)
        if exc is None or (isinstance(exc, ReplyError) and not full):
            if outage is not None:
                self.outage = None
                if outage.confirmed:
                    log.warning("Redis answers the gate again after %.1f s%s", asyncio.get_running_loop().time()
                                - outage.since, f"; sending the {n} settles owed" if (n := self.owed) else "")
            self.owed_settles.replay_soon()  # (no window: those a full Redis refused, while it may have room)
            return
        if (full or isinstance(exc, _OUTAGE)) and self.retry_after_s > 0:
            now = asyncio.get_running_loop().time()
            error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if outage is None and full:  # Redis's own word, not a pause of ours: no second failure needed
                self.outage = Outage(now, now + self.retry_after_s, error[:160], self._sent, True, full=True)
                self.outages += 1
                log.warning("Redis is out of memory (used memory > maxmemory, policy noeviction): it refuses the "
                            "gate's writes, so limits and budgets skip it for %.1f s at a time and their settles "
                            "are kept until it takes writes again; free memory or raise maxmemory (%s)",
                            self.retry_after_s, error)
            elif outage is None:
                self.outage = Outage(now, now + self.retry_after_s, error[:160], self._sent)
            elif not outage.confirmed:
                if batch > outage.after or full:  # sent after the first failure, and failed as well: Redis is down
                    outage.confirmed, outage.until, outage.error = True, now + self.retry_after_s, error[:160]
                    outage.full = full
                    outage.after = self._sent  # what is still out was sent before: its failure is stale
                    self.outages += 1
                    log.warning("Redis failed the gate (%s): limits and budgets skip it for %.1f s at a time",
                                error, self.retry_after_s)
            elif batch > outage.after:  # the probe failed (not a batch sent before the window: the probe may be out)
                outage.until, outage.error, outage.probing = now + self.retry_after_s, error[:160], False
                outage.after, outage.full = self._sent, full
        elif outage is not None and (not outage.confirmed or batch > outage.after):
            outage.probing = False

    async def status(self) -> tuple[bool, str]:
        """(answering, a line for /health/ready). When the window is over and no step came to probe (no
        traffic), this probes, with an empty batch, so an idle gateway does not report an old outage. Settles
        owed without an outage (a full Redis refused them, the window off) are sent again from here too."""
        outage = self.outage
        if outage is not None and outage.confirmed and not outage.probing \
                and asyncio.get_running_loop().time() >= outage.until:
            outage.probing = True
            await self._empty_batch()
        elif outage is None and self.owed:  # no window (settles a full Redis refused): the check sends them
            self.owed_settles.replay_soon()
        elif outage is not None and not outage.confirmed and self.owed:
            # one failure (a settle that timed out, owed again), then no step to tell whether Redis is back: this
            # check's empty batch tells (answered, the owed settles go; failed as well, the window opens)
            await self._empty_batch()
        skipped = f"{self.skipped} calls skipped in {self.outages} outages since start; {self.owed} settles owed"
        outage = self.outage
        if not self.owed_settles.pending:  # a replay out may be refused again: the spell is not over yet
            self.refused = None
        if outage is None or not outage.confirmed:
            if self.refused is None:
                return True, skipped
            since, error = self.refused  # no window open: each step still tries Redis, settles wait their turn
            ago = asyncio.get_running_loop().time() - since
            return False, (f"Redis out of memory (maxmemory reached), refusing writes, for {ago:.1f} s ({error}); "
                           f"the settles it refused are sent again with the next step it answers; " + skipped)
        ago = asyncio.get_running_loop().time() - outage.since
        what = "out of memory (maxmemory reached), refusing writes," if outage.full else "failing"
        return False, (f"Redis {what} for {ago:.1f} s ({outage.error}); tried again every {self.retry_after_s} s; "
                       + skipped)

    async def _empty_batch(self) -> None:
        """A batch of no steps, sent to learn whether Redis answers; its end is settled as any batch's."""
        self._sent = batch = self._sent + 1
        try:
            await self._runner.evalsha(self._script, [], [bulk_int(0)])
        except BaseException as exc:
            self._settled(exc, batch)
            if not isinstance(exc, Exception):
                raise
        else:
            self._settled(None, batch)

    def _left(self, slot: str, ended: asyncio.Future[None]) -> None:
        """The caller of ``slot``'s step went away: until its batch ends, ``leave`` for the slot waits."""
        if not slot or ended.done():
            return
        self.gone[slot] = ended

        def forget(_: asyncio.Future[None]) -> None:
            if self.gone.get(slot) is ended:
                del self.gone[slot]
        ended.add_done_callback(forget)

    def _start(self, steps: Steps, ended: asyncio.Future[None]) -> None:
        self._sent = batch = self._sent + 1
        keys: list[bytes] = []
        args: list[bytes] = [bulk_int(len(steps))]
        for kind, k, a, _ in steps:
            keys += k
            args += (kind, bulk_int(len(k)), bulk_int(len(a)))
            args += a
        try:
            reply = self._runner.evalsha_now(self._script, keys, args)
        except Exception as exc:
            _fail(steps, exc)
            self._settled(exc, batch)
            _end(ended)
            return
        if reply is None:  # connecting first (or redis-py): a task of its own, so no caller's cancel stops it
            self._spawn(steps, keys, args, ended, batch)
            return
        reply.add_done_callback(lambda done: self._hand_out(steps, keys, args, done, ended, batch))

    def _spawn(self, steps: Steps, keys: list[bytes], args: list[bytes], ended: asyncio.Future[None],
               batch: int) -> None:
        task = asyncio.ensure_future(self._send(steps, keys, args, ended, batch))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    def _hand_out(self, steps: Steps, keys: list[bytes], args: list[bytes], done: asyncio.Future[Any],
                  ended: asyncio.Future[None], batch: int) -> None:
        exc = asyncio.CancelledError() if done.cancelled() else done.exception()
        if isinstance(exc, ReplyError) and str(exc).startswith("NOSCRIPT"):  # Redis lost its scripts: load, again
            self._spawn(steps, keys, args, ended, batch)
            return
        if exc is not None:
            _fail(steps, exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            self._settled(exc, batch)
        else:
            _deliver(steps, done.result())
            if self.outage is not None or self.owed_settles:  # the healthy path pays these checks only
                self._settled(None, batch)
        _end(ended)

    async def _send(self, steps: Steps, keys: list[bytes], args: list[bytes], ended: asyncio.Future[None],
                    batch: int) -> None:
        try:
            replies = await self._runner.evalsha(self._script, keys, args)
        except BaseException as exc:
            _fail(steps, exc if isinstance(exc, Exception) else ConnectionError("cancelled"))
            self._settled(exc, batch)
            if not isinstance(exc, Exception):
                raise
        else:
            _deliver(steps, replies)
            if self.outage is not None or self.owed_settles:
                self._settled(None, batch)
        finally:
            _end(ended)


def _end(ended: asyncio.Future[None]) -> None:
    if not ended.done():
        ended.set_result(None)


def _fail(steps: Steps, exc: Exception) -> None:
    for *_, fut in steps:
        if not fut.done():
            fut.set_exception(exc)


def _deliver(steps: Steps, replies: Any) -> None:
    for (*_, fut), reply in zip(steps, replies, strict=True):
        if not fut.done():
            fut.set_result(reply)
