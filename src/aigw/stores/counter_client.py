"""A worker's side of the counters its ``aigw serve --workers N`` parent keeps (``counter_host``).

``HostedCounters`` is the Gate, RateLimiter and BudgetCounter of a worker without Redis: each call goes
to the parent over its Unix socket, the calls made in one loop turn in one write (as the Redis gate
batches), and comes back as the memory store there answered it. Failures look like a Redis outage's: a
call unanswered in ``timeout_s`` or on a connection that dropped raises (it may have run), and for
``retry_after_s`` after one the calls raise ``StoreSkipped`` without trying (nothing ran), so the
limits and budget stages apply their ``*_on_store_error`` policy at once instead of waiting each time.
"""

from __future__ import annotations

import asyncio
from typing import Any

from aigw.stores.base import Admission, Reservation, Scope
from aigw.stores.counter_wire import CounterHostError, ScopeRow, decode_result, frame, scope_rows, unframe
from aigw.stores.failures import StoreSkipped

TIMEOUT_S = 2.0
ROWS_MAX = 10_000  # scope lists kept as rows (a key's list is shared by its requests: made once per key)


class _Link(asyncio.Protocol):
    """One connection to the host: calls out, answers matched back by id."""

    def __init__(self, lost: Any) -> None:
        self._lost = lost
        self.transport: asyncio.Transport | None = None
        self.pending: dict[int, tuple[asyncio.Future[Any], float]] = {}
        self._buf = bytearray()
        self._out: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, data: bytes) -> None:
        if not self._out:  # the first call of this loop turn: the turn's calls leave together
            asyncio.get_running_loop().call_soon(self._flush)
        self._out.append(data)

    def _flush(self) -> None:
        out, self._out = self._out, []
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(b"".join(out))

    def data_received(self, data: bytes) -> None:
        self._buf += data
        try:
            answers = unframe(self._buf)
        except Exception as exc:
            self.fail(ConnectionError(f"the counter host sent a bad frame ({exc})"))
            return
        for cid, ok, value in answers:
            entry = self.pending.pop(cid, None)
            if entry is None or entry[0].done():  # timed out meanwhile
                continue
            if ok:
                entry[0].set_result(value)
            else:
                entry[0].set_exception(CounterHostError(value))

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"the counter host closed the connection ({exc or 'EOF'})"))

    def fail(self, exc: Exception) -> None:
        """Every call in flight fails (each may have run), and the link is dropped."""
        pending, self.pending = self.pending, {}
        for fut, _ in pending.values():
            if not fut.done():
                fut.set_exception(exc)
        if self.transport is not None:
            self.transport.close()
            self.transport = None
        self._lost(self)


class HostClient:
    """One worker's connection to its parent's host (``counter_host``): calls by name, answers by id, a timeout
    and a skip window after a failure. ``HostedCounters`` and the cache's ``HostedCache`` speak through it."""

    def __init__(self, path: str, timeout_s: float = TIMEOUT_S, retry_after_s: float = 1.0) -> None:
        self.path = path
        self.timeout_s = timeout_s
        self.retry_after_s = retry_after_s
        self._link: _Link | None = None
        self._connecting: asyncio.Future[_Link] | None = None
        self._next_id = 0
        self._skip_until = 0.0
        self._last_error = ""
        self._sweeping = False

    async def call(self, method: str, *args: Any) -> Any:
        loop = asyncio.get_running_loop()
        now = loop.time()
        if now < self._skip_until:
            raise StoreSkipped(f"the counter host failed moments ago ({self._last_error}); not tried until its "
                               "skip window ends")
        link = self._link or await self._connect()
        self._next_id += 1
        cid = self._next_id
        fut: asyncio.Future[Any] = loop.create_future()
        link.pending[cid] = (fut, loop.time())  # its timeout runs from now, not from before a connect
        link.send(frame((cid, method, args)))
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(self.timeout_s / 2, self._sweep)
        try:
            return decode_result(method, await fut)
        except (OSError, EOFError) as exc:  # timed out or the link dropped: skip the host for a moment
            self._failed(exc)
            raise

    async def _connect(self) -> _Link:
        """One connection for every call (the first callers of a turn share its opening)."""
        if self._connecting is None:
            self._connecting = asyncio.ensure_future(self._open())
        connecting = self._connecting
        try:
            return await asyncio.shield(connecting)
        except OSError as exc:
            self._failed(exc)
            raise
        finally:
            if connecting.done():
                self._connecting = None

    async def _open(self) -> _Link:
        loop = asyncio.get_running_loop()
        _, link = await asyncio.wait_for(loop.create_unix_connection(lambda: _Link(self._dropped), self.path),
                                         self.timeout_s)
        self._link = link
        return link

    def _dropped(self, link: _Link) -> None:
        if self._link is link:
            self._link = None

    def _failed(self, exc: BaseException) -> None:
        self._last_error = f"{type(exc).__name__}: {exc}"
        self._skip_until = asyncio.get_running_loop().time() + self.retry_after_s

    def _sweep(self) -> None:
        """Calls unanswered for ``timeout_s`` time out (the caller skips the host for a moment after one); runs
        every half timeout while calls are in flight."""
        link = self._link
        if link is None:  # dropped: its calls failed with it
            self._sweeping = False
            return
        loop = asyncio.get_running_loop()
        late = loop.time() - self.timeout_s
        for cid, (fut, sent) in list(link.pending.items()):
            if sent <= late:
                del link.pending[cid]
                if not fut.done():
                    fut.set_exception(TimeoutError(f"the counter host did not answer in {self.timeout_s:g} s"))
        if link.pending:
            loop.call_later(self.timeout_s / 2, self._sweep)
        else:
            self._sweeping = False

    async def health(self) -> tuple[bool, str]:
        """(answering, detail) for /health/ready: not answering while calls skip the host."""
        if asyncio.get_running_loop().time() < self._skip_until:
            return False, f"the workers' shared counters (parent process) failed: {self._last_error}"
        return True, "shared by the workers (kept by the parent process)"

    async def close(self) -> None:
        if self._link is not None:
            self._link.fail(ConnectionError("closed"))


class HostedCounters(HostClient):
    """Rate limits and budgets kept by the parent process: one set for every worker."""

    def __init__(self, path: str, timeout_s: float = TIMEOUT_S, retry_after_s: float = 1.0) -> None:
        super().__init__(path, timeout_s, retry_after_s)
        self._rows: dict[int, tuple[list[Scope], tuple[ScopeRow, ...]]] = {}

    def _wire(self, scopes: list[Scope]) -> tuple[ScopeRow, ...]:
        """``scopes`` as rows for the wire, made once per list (a key's list is shared by its requests)."""
        known = self._rows.get(id(scopes))
        if known is not None and known[0] is scopes:  # the entry holds the list: its id is not reused
            return known[1]
        if len(self._rows) >= ROWS_MAX:
            self._rows.clear()
        rows = scope_rows(scopes)
        self._rows[id(scopes)] = (scopes, rows)
        return rows

    # -- Gate
    async def enter(self, rate: list[Scope], slot: str, est_tokens: int, budget: list[Scope],
                    amount_nano: int, now: float) -> tuple[Admission, Reservation | None]:
        return await self.call("gate.enter", self._wire(rate), slot, est_tokens,  # type: ignore[no-any-return]
                                self._wire(budget), amount_nano, now)

    async def peek(self, rate: list[Scope]) -> list[Admission]:
        return await self.call("gate.peek", self._wire(rate))  # type: ignore[no-any-return]

    async def leave(self, rate: list[Scope], slot: str, token_delta: int, taken_at: int, budget: list[Scope],
                    reserved_nano: int, actual_nano: int, entered: float,
                    thresholds: list[float], request_back: bool = False) -> list[tuple[str, str, float]]:
        return await self.call("gate.leave", self._wire(rate), slot, token_delta, taken_at, self._wire(budget),  # type: ignore[no-any-return]
                                reserved_nano, actual_nano, entered, thresholds, request_back)

    # -- RateLimiter
    async def admit(self, scopes: list[Scope], slot: str, est_tokens: int) -> Admission:
        return await self.call("limiter.admit", self._wire(scopes), slot, est_tokens)  # type: ignore[no-any-return]

    async def release(self, scopes: list[Scope], slot: str, token_delta: int, taken_at: int = 0,
                      request_back: bool = False) -> None:
        await self.call("limiter.release", self._wire(scopes), slot, token_delta, taken_at, request_back)

    # -- BudgetCounter
    async def reserve(self, scopes: list[Scope], amount_nano: int, now: float, slot: str = "") -> Reservation:
        return await self.call("budgets.reserve", self._wire(scopes), amount_nano, now, slot)  # type: ignore[no-any-return]

    async def settle(self, scopes: list[Scope], reserved_nano: int, actual_nano: int, now: float,
                     thresholds: list[float], slot: str) -> list[tuple[str, str, float]]:
        return await self.call("budgets.settle", self._wire(scopes), reserved_nano, actual_nano, now,  # type: ignore[no-any-return]
                                thresholds, slot)

    async def seed(self, spent: dict[tuple[str, str, str], int]) -> None:
        await self.call("budgets.seed", spent)

    async def reached(self, scope: Scope, now: float, thresholds: list[float]) -> list[float]:
        return await self.call("budgets.reached", scope_rows([scope]), now, thresholds)  # type: ignore[no-any-return]

    async def forget(self, scope: Scope, now: float) -> None:
        await self.call("budgets.forget", scope_rows([scope]), now)

    async def seeded(self) -> bool:
        return await self.call("budgets.seeded")  # type: ignore[no-any-return]

    async def spent(self, scope: Scope, now: float) -> int:
        return await self.call("budgets.spent", scope_rows([scope]), now)  # type: ignore[no-any-return]
