"""A lean asyncio Redis client for the gate's hot path: script calls on one pipelined connection.

redis-py spends tens of microseconds of Python on every command (a pool behind locks, an
encoder going argument by argument, response callbacks), and the gate calls Redis twice per
request. This client does only what those calls need: one persistent connection, commands
written as prepared bytes (callers pre-encode what repeats with ``bulk``), replies parsed by
hiredis and handed to a FIFO of futures, ``EVALSHA`` with one ``SCRIPT LOAD`` and retry on
``NOSCRIPT`` (Redis restarted, or ``SCRIPT FLUSH``). Everything else keeps redis-py.

Failures, as with redis-py built by ``make_redis``: every call is bounded by ``timeout_s``
(0.25 s, the connect included). A timeout fails the connection: every pending call raises
``TimeoutError``; a connection that breaks fails them with ``ConnectionError``; the next call
reconnects (one attempt per call; callers that queued behind a failed attempt fail with it
instead of trying again). A call that was never written (no connection could be made, or it had
closed) raises ``NotSent`` (``ConnectTimeout``, ``ConnectFailed``): it did not run, so the gate may
send it again. A caller cancelled while waiting keeps its place in the FIFO: its
reply is read and dropped. An error reply raises ``ReplyError``.

Addresses: ``redis://[[user]:password@]host[:port][/db]`` and ``unix://path[?db=N]``. For any
other URL (``rediss://`` TLS, query options) ``RedisPipe.from_url`` returns None and the caller
keeps redis-py, through ``ViaRedisPy`` which offers the same ``evalsha``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

TIMEOUT_S = 0.25  # as make_redis (client.py): an outage never stalls a request


class ReplyError(Exception):
    """Redis answered with an error (``-ERR ...``, ``-NOSCRIPT ...``)."""


class NotSent(Exception):
    """The call was never written to Redis (no connection could be made, or it had closed): it did not run."""


class ConnectTimeout(NotSent, TimeoutError):
    pass


class ConnectFailed(NotSent, ConnectionError):
    pass


def bulk(value: bytes) -> bytes:
    """``value`` as one RESP bulk string, the unit ``evalsha`` takes (encode what repeats once)."""
    return b"$%d\r\n%s\r\n" % (len(value), value)


_SMALL = [bulk(b"%d" % i) for i in range(256)]


def bulk_int(n: int) -> bytes:
    return _SMALL[n] if 0 <= n < 256 else b"$%d\r\n%d\r\n" % (len(b"%d" % n), n)


def unbulk(item: bytes) -> bytes:
    """The value inside a bulk string made by ``bulk``."""
    return item[item.index(b"\r\n") + 2 : -2]


def command(*parts: bytes) -> bytes:
    return b"*%d\r\n%s" % (len(parts), b"".join(bulk(p) for p in parts))


class Script:
    """A Lua script called by SHA; its source is sent again when Redis no longer has it."""

    def __init__(self, source: str) -> None:
        self.source = source.encode()
        self.sha = hashlib.sha1(self.source, usedforsecurity=False).hexdigest().encode()
        self.head = bulk(b"EVALSHA") + bulk(self.sha)


@dataclass(frozen=True, slots=True)
class Address:
    host: str = "127.0.0.1"
    port: int = 6379
    path: str = ""  # a unix socket, instead of host and port
    username: str = ""
    password: str = ""
    db: int = 0

    @classmethod
    def parse(cls, url: str) -> Address | None:
        """The address in ``url``, or None for what this client does not speak (TLS, options)."""
        try:
            u = urlsplit(url)
            query = parse_qs(u.query, keep_blank_values=True)
            if set(query) - {"db"} or u.fragment or (u.username and u.password is None):
                return None
            db = int(query["db"][0]) if "db" in query else 0
            user, password = unquote(u.username or ""), unquote(u.password or "")
            if u.scheme == "unix":
                return cls(path=unquote(u.path), username=user, password=password, db=db) if u.path else None
            if u.scheme != "redis":
                return None
            path = u.path.strip("/")
            if path:
                db = int(path)
            return cls(host=u.hostname or "127.0.0.1", port=u.port or 6379, username=user, password=password,
                       db=db)
        except (ValueError, IndexError):
            return None

    def __str__(self) -> str:
        return f"unix:{self.path}" if self.path else f"{self.host}:{self.port}"


class _Conn(asyncio.Protocol):
    """One connection: requests written in order, replies matched to a FIFO of futures.

    One timer watches the oldest pending request (replies come in order, so it is the one due
    first); when it is overdue the connection is failed, with everything pending on it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self._loop = loop
        self._timeout = timeout_s
        self._reader = hiredis.Reader(replyError=ReplyError)
        self._pending: deque[tuple[asyncio.Future[Any], float]] = deque()
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.broken = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's

    def request(self, data: bytes) -> asyncio.Future[Any]:
        fut = self._loop.create_future()
        if self.broken or self._transport is None:
            fut.set_exception(ConnectFailed("connection to Redis is closed"))
            return fut
        deadline = self._loop.time() + self._timeout
        self._pending.append((fut, deadline))
        if self._timer is None:
            self._timer = self._loop.call_at(deadline, self._check)
        self._transport.write(data)
        return fut

    def data_received(self, data: bytes) -> None:
        self._reader.feed(data)
        pending = self._pending
        while True:
            try:
                reply = self._reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(ConnectionError(f"Redis protocol error: {exc}"))
                return
            if reply is False:
                return
            if not pending:
                self.fail(ConnectionError("Redis sent a reply nobody asked for"))
                return
            fut = pending.popleft()[0]
            if fut.done():  # its caller was cancelled: the reply is dropped, the FIFO stays in step
                continue
            if isinstance(reply, ReplyError):
                fut.set_exception(reply)
            else:
                fut.set_result(reply)

    def eof_received(self) -> bool | None:
        self.fail(ConnectionError("connection closed by Redis"))
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.fail(ConnectionError(f"connection to Redis lost ({exc or 'closed by the server'})"))

    def _check(self) -> None:
        self._timer = None
        if not self._pending:
            return
        deadline = self._pending[0][1]
        if deadline - self._loop.time() <= 0.001:
            self.fail(TimeoutError(f"Redis did not answer within {self._timeout} s"))
        else:
            self._timer = self._loop.call_at(deadline, self._check)

    def fail(self, exc: Exception) -> None:
        """Close the connection; every pending request raises ``exc`` (a fresh copy each)."""
        self.broken = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._transport is not None:
            self._transport.abort()
        pending, self._pending = self._pending, deque()
        for fut, _ in pending:
            if not fut.done():
                fut.set_exception(type(exc)(*exc.args))


def _evalsha(script: Script, keys: Sequence[bytes], args: Sequence[bytes]) -> bytes:
    return b"".join((b"*%d\r\n" % (3 + len(keys) + len(args)), script.head, bulk_int(len(keys)), *keys, *args))


class RedisPipe:
    """Pipelined script calls on one connection to ``address``; see the module docstring."""

    def __init__(self, address: Address, timeout_s: float = TIMEOUT_S) -> None:
        self.address = address
        self._timeout = timeout_s
        self._conn: _Conn | None = None
        self._lock = asyncio.Lock()
        self._attempts = 0
        self._failed: Exception | None = None  # the last connect attempt's error, until one succeeds
        self._closed = False

    @classmethod
    def from_url(cls, url: str, timeout_s: float = TIMEOUT_S) -> RedisPipe | None:
        """A pipe to ``url``, or None when this client cannot speak it (the caller keeps redis-py)."""
        address = Address.parse(url)
        return None if address is None else cls(address, timeout_s)

    async def evalsha(self, script: Script, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        """Run ``script``; ``keys`` and ``args`` are bulk strings (``bulk``, ``bulk_int``)."""
        data = _evalsha(script, keys, args)
        try:
            return await self._send(data)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
        await self.call(b"SCRIPT", b"LOAD", script.source)
        return await self._send(data)

    def evalsha_now(self, script: Script, keys: Sequence[bytes], args: Sequence[bytes]) -> asyncio.Future[Any] | None:
        """Send ``script``'s call now, on the open connection, and return its reply's future (a NOSCRIPT error
        reply included: ``evalsha`` loads the script); None when there is no open connection yet."""
        conn = self._conn
        if conn is None or conn.broken:
            return None
        return conn.request(_evalsha(script, keys, args))

    async def call(self, *parts: bytes) -> Any:
        """Any command, e.g. ``call(b"CLIENT", b"ID")``."""
        return await self._send(command(*parts))

    async def _send(self, data: bytes) -> Any:
        conn = self._conn
        if conn is None or conn.broken:
            conn = await self._connect()
        return await conn.request(data)

    async def _connect(self) -> _Conn:
        attempt = self._attempts
        async with self._lock:
            if self._closed:
                raise ConnectFailed("the Redis pipe is closed")
            conn = self._conn
            if conn is not None and not conn.broken:
                return conn
            if self._attempts != attempt and self._failed is not None:  # failed while this call waited
                raise type(self._failed)(*self._failed.args)
            self._attempts += 1
            try:
                async with asyncio.timeout(self._timeout):
                    conn = await self._open()
            except TimeoutError:
                self._failed = ConnectTimeout(f"connecting to Redis at {self.address} took over {self._timeout} s")
                raise type(self._failed)(*self._failed.args) from None
            except OSError as exc:  # refused, unreachable, unknown host
                self._failed = ConnectFailed(f"cannot connect to Redis at {self.address}: {exc}")
                raise type(self._failed)(*self._failed.args) from exc
            self._conn, self._failed = conn, None
            return conn

    async def _open(self) -> _Conn:
        loop = asyncio.get_running_loop()
        a = self.address
        if a.path:
            _, conn = await loop.create_unix_connection(lambda: _Conn(loop, self._timeout), a.path)
        else:
            _, conn = await loop.create_connection(lambda: _Conn(loop, self._timeout), a.host, a.port)
        hello = []
        if a.password:
            user = (a.username.encode(),) if a.username else ()
            hello.append(conn.request(command(b"AUTH", *user, a.password.encode())))
        if a.db:
            hello.append(conn.request(command(b"SELECT", b"%d" % a.db)))
        try:
            answers = await asyncio.gather(*hello, return_exceptions=True)
        except BaseException:
            conn.fail(ConnectionError("handshake interrupted"))
            raise
        refused = next((x for x in answers if isinstance(x, BaseException)), None)
        if refused is not None:
            conn.fail(ConnectionError("handshake refused"))
            raise ConnectFailed(f"Redis at {a} refused the handshake: {refused}")
        return conn

    async def aclose(self) -> None:
        """Close the connection; pending and later calls raise ``ConnectionError``."""
        self._closed = True
        if self._conn is not None:
            self._conn.fail(ConnectionError("the Redis pipe is closed"))
            self._conn = None
            await asyncio.sleep(0)  # the transport closes its socket on the next loop turn


class ViaRedisPy:
    """``evalsha`` over redis-py, for the URLs ``RedisPipe`` does not speak (``rediss://``...)."""

    def __init__(self, redis: Any) -> None:
        self._redis = redis
        self._scripts: dict[bytes, Any] = {}

    def evalsha_now(self, script: Script, keys: Sequence[bytes], args: Sequence[bytes]) -> asyncio.Future[Any] | None:
        return None  # redis-py's calls are coroutines: the batcher runs them in a task

    async def evalsha(self, script: Script, keys: Sequence[bytes], args: Sequence[bytes]) -> Any:
        registered = self._scripts.get(script.sha)
        if registered is None:  # redis-py's Script reloads on NOSCRIPT itself
            registered = self._scripts[script.sha] = self._redis.register_script(script.source)
        return await registered(keys=[unbulk(k) for k in keys], args=[unbulk(a) for a in args])
