"""The spend ledger's SQLite writes, done by a child process (see ``aigw.sqlite_process``).

Same rows, same transaction, same idempotency as ``sql_ledger.write_batch`` on the
database thread; only where the values are bound changes, so the event loop never
waits for the GIL while a batch is written. Reads (reports, request pages) stay on
the database thread: WAL mode lets them run beside the writer.

The gateway keeps two (``tenancy.py``): one at idle priority for the steady flow,
which costs requests no latency, and one at normal priority for when the first
falls behind on a saturated core, which costs less CPU than writing on the
database thread against the event loop; that thread is the last resort.
"""

from __future__ import annotations

from typing import Any, Protocol

from aigw.sqlite_process import SqliteProcess, WriterFailed
from aigw.stores.base import SpendRecord
from aigw.stores.sql_ledger import unique_rows

WRITER = "aigw.stores.sql_ledger:write_rows"


class _Store(Protocol):
    async def write(self, records: list[SpendRecord] | list[tuple[Any, ...]]) -> int: ...


class SqliteLedgerWriter:
    def __init__(self, path: str, background: bool = True, fallback: _Store | None = None) -> None:
        self.process = SqliteProcess(path, WRITER, background=background)
        self._fallback = fallback  # takes a batch the child could not write

    async def write(self, records: list[SpendRecord] | list[tuple[Any, ...]]) -> int:
        rows = unique_rows(records)
        if not rows:
            return 0
        if self._fallback is None:
            return await self.process.write(rows)
        try:
            return await self.process.write(rows)
        except WriterFailed:
            return await self._fallback.write(rows)

    async def close(self) -> None:
        await self.process.close()
