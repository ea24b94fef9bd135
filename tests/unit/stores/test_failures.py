"""``unreachable``: which store failures are an outage (the same call may work in a moment) and which are bugs."""

from __future__ import annotations

import sqlite3

import asyncpg.exceptions as pg
import pytest
import redis.exceptions as redis_errors

from aigw.stores.failures import StoreSkipped, unreachable
from aigw.stores.redis.pipe import ConnectFailed


@pytest.mark.parametrize("exc", [
    ConnectionRefusedError(111, "Connect call failed"), TimeoutError(), OSError("Multiple exceptions: ..."),
    StoreSkipped("Redis failed 0.1 s ago"), ConnectFailed("cannot connect to Redis"),
    redis_errors.ConnectionError("Error 111 connecting"), redis_errors.TimeoutError("Timeout reading"),
    pg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
    pg.AdminShutdownError("terminating connection"), pg.CannotConnectNowError("the database system is starting up"),
    pg.TooManyConnectionsError("too many clients"), pg.InterfaceError("pool is closed"),
    sqlite3.OperationalError("database is locked"), sqlite3.OperationalError("unable to open database file"),
    sqlite3.OperationalError("disk I/O error"),
], ids=lambda e: type(e).__name__)
def test_a_store_away_is_unreachable(exc: BaseException) -> None:
    assert unreachable(exc)


@pytest.mark.parametrize("exc", [
    sqlite3.OperationalError("no such table: tenants"), sqlite3.IntegrityError("UNIQUE constraint failed"),
    pg.UndefinedTableError("relation does not exist"), pg.UniqueViolationError("duplicate key"),
    pg.InterfaceError("cannot perform operation: another operation is in progress"),
    redis_errors.ResponseError("WRONGTYPE"), KeyError("id"), RuntimeError("database is not open"),
], ids=lambda e: f"{type(e).__name__}-{str(e)[:12]}")
def test_a_bug_or_a_refusal_is_not(exc: BaseException) -> None:
    assert not unreachable(exc)
