"""How a store call failed, as the callers must tell apart: skipped in an outage (nothing ran), owed for
later, sent and unanswered (it may have run), refused by a full Redis (nothing ran, reads still work), or
a store that cannot be reached at all (``unreachable``)."""

from __future__ import annotations

import sqlite3
from asyncio import Future
from typing import Any

OOM_REPLY = "> 'maxmemory'"  # in Redis's refusal: "OOM command not allowed when used memory > 'maxmemory'."


def out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is Redis refusing a write because it is full (``maxmemory`` reached under
    ``maxmemory-policy noeviction``), or a step skipped for that: Redis answers, nothing of the call ran,
    and reads still work. Told by the reply's text, which the lean client and redis-py both keep."""
    return OOM_REPLY in str(exc)


# SQLite's words for a file it cannot use now (held locked by another process, gone, unreadable); its other
# OperationalErrors (no such table, a syntax error) are bugs
_SQLITE_DOWN = ("database is locked", "database table is locked", "unable to open database file",
                "disk i/o error", "readonly database")
# PostgreSQL SQLSTATEs of a server that is away: class 08 (connection lost or refused, the prefix), shutting
# down or starting (57P01..57P03), out of connection slots (53300)
_PG_DOWN = ("08", "57P01", "57P02", "57P03", "53300")
# redis-py's own ConnectionError and TimeoutError are not the builtins: told by name, so that this module
# imports neither redis-py nor asyncpg (each loads only when its URL is set)
_REDIS_DOWN = {("redis.exceptions", "ConnectionError"), ("redis.exceptions", "TimeoutError")}


def unreachable(exc: BaseException) -> bool:
    """Whether ``exc`` says a store (SQLite, PostgreSQL, Redis) cannot be reached or used right now, so the
    same call may work in a moment: refused, timed out, connection lost, the SQLite file locked or
    unreadable, a store skipped in its outage window (``StoreSkipped``). A programming error is not one."""
    if isinstance(exc, OSError):  # refused, reset, unreachable host, a timeout (TimeoutError is one): every store's
        return True
    if isinstance(exc, sqlite3.OperationalError):
        return any(words in str(exc).lower() for words in _SQLITE_DOWN)
    state = getattr(exc, "sqlstate", None)
    if isinstance(state, str):
        return state.startswith(_PG_DOWN)
    if _is_closed_asyncpg(exc):
        return True
    return any((c.__module__, c.__name__) in _REDIS_DOWN for c in type(exc).__mro__)


def _is_closed_asyncpg(exc: BaseException) -> bool:
    """asyncpg's ``InterfaceError`` for a pool or connection closed under the call (its other ones are misuse)."""
    if type(exc).__name__ != "InterfaceError" or not type(exc).__module__.startswith("asyncpg"):
        return False
    return any(words in str(exc) for words in ("pool is closed", "connection is closed"))


class StoreSkipped(ConnectionError):
    """A store call not made: the store failed moments ago and is not tried again until its skip window
    ends (so an outage costs its timeout once per window, not on every call). Nothing ran in the store:
    a step that raised this has nothing to settle."""


class SettleOwed(StoreSkipped):
    """A settle (``Gate.leave``) skipped in the store's skip window, but kept: it is sent once the store answers
    again, exactly once (it never ran). ``later`` gets what ``leave`` returns (the budget thresholds crossed)
    when it has run; it is cancelled when the settle is given up (dropped from a full queue). One sent and not
    answered may have run, and is sent again only as its part that counts once (``RedisCounters._owe_again``):
    ``later`` then gets the thresholds it crossed if it ran, read back from the store (as
    ``SettleUnanswered.later``)."""

    def __init__(self, message: str, later: Future[Any]) -> None:
        super().__init__(message)
        self.later = later


class SettleUnanswered(ConnectionError):
    """A settle (``Gate.leave``) sent and not answered (a timeout, a lost connection): it may have run all the
    same, and is sent again only as its part that counts once (the slot, the lease). ``later`` gets the budget
    thresholds it crossed if it ran, once the store answers again and tells (as ``SettleOwed.later``); it is
    cancelled when that cannot be told in time."""

    def __init__(self, message: str, later: Future[Any]) -> None:
        super().__init__(message)
        self.later = later
