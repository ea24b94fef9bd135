"""The spend ledger's columns and its SQLite batch write, for the database thread or a writer process.

Kept apart from ``sql_ledger`` (reports, PostgreSQL, the thread-side store) so that a
writer process (``aigw.sqlite_child``) imports only this: no asyncio, a few MB of
memory instead of a dozen.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import chain
from typing import Any

from aigw.sqlite_pace import pace

COLUMNS = (
    "id", "request_id", "ts_start", "ts_end", "day", "tenant_id", "project_id", "key_id", "key_prefix", "model",
    "served_model", "deployment_id", "provider", "endpoint", "prompt_tokens", "completion_tokens",
    "cached_tokens", "cache_write_tokens", "reasoning_tokens", "cost_nano", "cost_saved_nano", "latency_ms",
    "upstream_ms", "overhead_ms", "status", "error_kind", "cache_hit", "handled_by", "retries", "fallbacks",
    "stream", "usage_source",
)
SUMS = ("prompt_tokens", "completion_tokens", "cached_tokens", "cache_write_tokens", "reasoning_tokens",
         "cost_nano", "cost_saved_nano")
ROLLUP_COLS = ("requests", "errors", "cache_hits", *SUMS)
# rows of upstream calls a stage made on behalf of a request (``pipeline.side_calls``): their tokens and cost
# add to the rollups, but they are no request of their own (the request's row counts it)
CACHE_EMBEDDING = "cache_embedding"  # the semantic cache's embedding of the last user turn
SIDE_ENDPOINTS = (CACHE_EMBEDDING,)


def write_rows(rows: Sequence[Sequence[Any]], conn: sqlite3.Connection) -> int:
    """On the database's thread or writer process: skip ids already present, insert the rest, add
    them to the rollups (summed here, few upserts), all in one transaction."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        present: set[str] = set()
        for i in range(0, len(rows), 500):
            ids = [r[0] for r in rows[i:i + 500]]
            found = conn.execute(f"SELECT id FROM spend_ledger WHERE id IN ({', '.join('?' * len(ids))})", ids)
            present.update(f[0] for f in found)
        fresh = [r for r in rows if r[0] not in present]
        # Multi-row INSERTs: the sqlite3 module holds the GIL while it binds a statement's values
        # and lets go while SQLite runs it, so chunks of _CHUNK rows keep each hold short for the
        # event loop, and there are few statements per batch.
        for i in range(0, len(fresh), _CHUNK):
            chunk = fresh[i:i + _CHUNK]
            sql = _INSERT_CHUNK if len(chunk) == _CHUNK else _INSERT + ", ".join([_ROW] * len(chunk))
            conn.execute(sql, list(chain.from_iterable(chunk)))
            pace()  # in the saturation writer only: requests in flight get the core between statements
        if fresh:
            conn.executemany(_UPSERT, list(_sum_rollups(fresh).values()))
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return len(fresh)


_INSERT = f"INSERT INTO spend_ledger ({', '.join(COLUMNS)}) VALUES "
_ROW = f"({', '.join('?' * len(COLUMNS))})"
_CHUNK = 100
_INSERT_CHUNK = _INSERT + ", ".join([_ROW] * _CHUNK)
_UPSERT = (
    f"INSERT INTO spend_rollup (day, tenant_id, project_id, key_id, model, {', '.join(ROLLUP_COLS)}) "
    f"VALUES ({', '.join('?' * (5 + len(ROLLUP_COLS)))}) "
    f"ON CONFLICT (day, tenant_id, project_id, key_id, model) DO UPDATE SET "
    + ", ".join(f"{c} = spend_rollup.{c} + excluded.{c}" for c in ROLLUP_COLS)
)
_AT = {c: COLUMNS.index(c) for c in ("day", "tenant_id", "project_id", "key_id", "model", "served_model", "status",
                                      "cache_hit", "endpoint", *SUMS)}


def _sum_rollups(rows: Sequence[Sequence[Any]]) -> dict[tuple[Any, ...], list[Any]]:
    """The same sums as ``rollup_sql``, computed in Python for one batch."""
    out: dict[tuple[Any, ...], list[Any]] = {}
    at = _AT
    for r in rows:
        model = r[at["served_model"]] or r[at["model"]]
        key = (r[at["day"]], r[at["tenant_id"]], r[at["project_id"]], r[at["key_id"]], model)
        acc = out.get(key)
        if acc is None:
            acc = out[key] = [*key, 0, 0, 0, *([0] * len(SUMS))]
        acc[5] += 0 if r[at["endpoint"]] in SIDE_ENDPOINTS else 1
        acc[6] += 1 if r[at["status"]] >= 400 else 0
        acc[7] += r[at["cache_hit"]]
        for j, c in enumerate(SUMS):
            acc[8 + j] += r[at[c]]
    return out
