"""Shared response cache in Redis: one string per entry, expiring with its TTL.

Keys are ``<prefix>cache:<tenant scope>:<hash>``; Redis does the expiry and, with
a ``maxmemory-policy`` of ``allkeys-lru``/``volatile-lru``, the eviction. The
caller bounds every call with a short timeout.

A cache hit is one GET, so its cost is the client's: redis-py spends ~100 µs of
CPU on one GET on our 2-core machine, more than the rest of a hit. So the
store speaks the three commands it needs (GET, SET PX, PING) itself, over one
pipelined connection (``LeanRedis``: ~20 µs a GET, measured the same way), for
the plain TCP connections redis-py was configured with (host, port, db, user,
password). TLS and Unix sockets keep going through redis-py.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import Any


class RedisReplyError(Exception):
    """Redis answered a command with an error (``-ERR ...``)."""


class _Resp(asyncio.Protocol):
    """RESP2 replies matched, in order, to the futures of the commands sent."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.waiters: deque[asyncio.Future[Any]] = deque()
        self.buf = b""
        self.lost: BaseException | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = exc or ConnectionError("redis closed the connection")
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ConnectionError(f"redis connection lost: {self.lost}"))

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, size = 0, len(buf)
        while pos < size:
            end = buf.find(b"\r\n", pos)
            if end < 0:
                break
            kind = buf[pos]
            value: Any
            if kind == 36:  # $ bulk string
                n = int(buf[pos + 1:end])
                if n < 0:
                    value, nxt = None, end + 2
                elif size < end + 4 + n:
                    break  # the rest has not arrived yet
                else:
                    value, nxt = buf[end + 2:end + 2 + n], end + 4 + n
            elif kind in (43, 58):  # + simple string, : integer
                value, nxt = buf[pos + 1:end], end + 2
            elif kind == 45:  # - error
                value, nxt = RedisReplyError(buf[pos + 1:end].decode("utf-8", "replace")), end + 2
            else:  # nothing we send gets another kind of reply: the stream is not what we think it is
                if self.transport is not None:
                    self.transport.close()
                return
            pos = nxt
            if not self.waiters:
                continue
            waiter = self.waiters.popleft()
            if waiter.done():  # its caller gave up (timeout): the reply is dropped
                continue
            if isinstance(value, RedisReplyError):
                waiter.set_exception(value)
            else:
                waiter.set_result(value)
        self.buf = buf[pos:]


def _command(*parts: bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        out.append(b"$%d\r\n%s\r\n" % (len(part), part))
    return b"".join(out)


class LeanRedis:
    """One pipelined connection for GET, SET PX and PING; (re)connected on first use after a loss."""

    def __init__(self, host: str, port: int, db: int = 0, username: str | None = None,
                 password: str | None = None, connect_timeout_s: float = 0.25) -> None:
        self.host, self.port, self.db = host, port, db
        self.username, self.password = username, password
        self.connect_timeout_s = connect_timeout_s
        self._proto: _Resp | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._connecting: asyncio.Lock | None = None

    @classmethod
    def of(cls, redis: Any) -> LeanRedis | None:
        """The same server redis-py was set up for, or None when that is not a plain TCP connection."""
        from redis.asyncio.connection import Connection

        pool = getattr(redis, "connection_pool", None)
        kwargs: dict[str, Any] = getattr(pool, "connection_kwargs", None) or {}
        if getattr(pool, "connection_class", None) is not Connection or kwargs.get("credential_provider"):
            return None
        return cls(str(kwargs.get("host") or "localhost"), int(kwargs.get("port") or 6379), int(kwargs.get("db") or 0),
                   kwargs.get("username"), kwargs.get("password"),
                   float(kwargs.get("socket_connect_timeout") or 0.25))

    async def get(self, key: bytes) -> bytes | None:
        value: bytes | None = await self._call(b"*2\r\n$3\r\nGET\r\n$%d\r\n%s\r\n" % (len(key), key))
        return value

    async def set_px(self, key: bytes, value: bytes, ttl_ms: int) -> None:
        await self._call(_command(b"SET", key, value, b"PX", b"%d" % ttl_ms))

    async def ping(self) -> None:
        await self._call(b"*1\r\n$4\r\nPING\r\n")

    async def _call(self, packed: bytes) -> Any:
        proto = self._proto
        if proto is None or proto.lost is not None or self._loop is not asyncio.get_running_loop():
            proto = await self._connect()
        assert proto.transport is not None
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        proto.transport.write(packed)
        proto.waiters.append(waiter)  # no await between the write and this: replies come back in order
        return await waiter

    async def _connect(self) -> _Resp:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:
            self._abandon()
            self._loop, self._connecting = loop, asyncio.Lock()
        assert self._connecting is not None
        async with self._connecting:
            proto = self._proto
            if proto is not None and proto.lost is None:
                return proto  # another caller connected while this one waited
            self._abandon()
            async with asyncio.timeout(self.connect_timeout_s):
                _, proto = await loop.create_connection(_Resp, self.host, self.port)
            hello: list[bytes] = []
            if self.password is not None:
                auth = [self.username.encode(), self.password.encode()] if self.username else [self.password.encode()]
                hello.append(_command(b"AUTH", *auth))
            if self.db:
                hello.append(_command(b"SELECT", b"%d" % self.db))
            waiters = [loop.create_future() for _ in hello]
            if hello:
                assert proto.transport is not None
                proto.transport.write(b"".join(hello))
                proto.waiters.extend(waiters)
                try:
                    async with asyncio.timeout(self.connect_timeout_s):
                        for waiter in waiters:
                            await waiter
                except BaseException:
                    if proto.transport is not None:
                        proto.transport.close()
                    raise
            self._proto = proto
            return proto

    def _abandon(self) -> None:
        proto, self._proto = self._proto, None
        if proto is not None and proto.transport is not None:
            with contextlib.suppress(RuntimeError):  # its loop may be closed already
                proto.transport.close()

    def close(self) -> None:
        self._abandon()


class RedisCacheStore:
    name = "redis"
    in_process = False

    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix + "cache:"
        self._bprefix = self.prefix.encode()
        self.lean = LeanRedis.of(redis)  # None: every call through redis-py

    async def get(self, key: str) -> bytes | None:
        if self.lean is not None:
            return await self.lean.get(self._bprefix + key.encode())
        value = await self.redis.get(self.prefix + key)
        return bytes(value) if value is not None else None

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        ttl_ms = max(1, int(ttl_s * 1000))
        if self.lean is not None:
            await self.lean.set_px(self._bprefix + key.encode(), value, ttl_ms)
            return
        await self.redis.set(self.prefix + key, value, px=ttl_ms)

    async def ping(self) -> None:
        if self.lean is not None:
            await self.lean.ping()
            return
        await self.redis.ping()
