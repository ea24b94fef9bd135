"""The request log's SQLite batch write, for the database thread or a writer process.

The caller (``request_log_sql``) works out the statements: the day tables to create and
the rows per table. This module only runs them, so a writer process
(``aigw.sqlite_child``) imports nothing else of the gateway (no asyncio, a few MB).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import chain
from typing import Any

from aigw.sqlite_pace import pace

ROWS_PER_INSERT = 100  # multi-row INSERTs: far less work per row; short GIL holds on a thread


def write_batch(create: Sequence[str], columns: str, inserts: Sequence[Sequence[Any]],
                conn: sqlite3.Connection) -> int:
    """One transaction: ``create`` statements, then each ``[table, rows]`` of ``inserts``
    (rows in ``columns`` order, a replayed row ignored by its key). Returns the rows given."""
    conn.execute("BEGIN IMMEDIATE")
    done = 0
    try:
        for sql in create:
            conn.execute(sql)
        for table, rows in inserts:
            if not rows:
                continue
            marks = "(" + ", ".join("?" * len(rows[0])) + ")"
            for i in range(0, len(rows), ROWS_PER_INSERT):
                chunk = rows[i:i + ROWS_PER_INSERT]
                conn.execute(f"INSERT OR IGNORE INTO {table} ({columns}) VALUES " + ", ".join([marks] * len(chunk)),
                             list(chain.from_iterable(chunk)))
                pace()  # in the saturation writer only (``aigw.sqlite_pace``)
            done += len(rows)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return done


def write_payload(payload: Sequence[Any], conn: sqlite3.Connection) -> int:
    """``[create, columns, inserts]`` as ``SqliteRequestLog.write`` builds it: on the database
    thread, or in a writer process."""
    create, columns, inserts = payload
    return write_batch(create, columns, inserts, conn)
