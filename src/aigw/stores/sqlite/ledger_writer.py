"""The spend ledger's SQLite writes, done by a child process (see ``aigw.sqlite_process``).

Same rows, same transaction, same idempotency as ``sql_ledger.write_batch`` on the
database thread; only where the values are bound changes, so the event loop never
waits for the GIL while a batch is written. Reads (reports, request pages) stay on
the database thread: WAL mode lets them run beside the writer.
"""

from __future__ import annotations

from typing import Any

from aigw.sqlite_process import SqliteProcess
from aigw.stores.base import SpendRecord
from aigw.stores.sql_ledger import unique_rows

WRITER = "aigw.stores.sql_ledger:write_rows"


class SqliteLedgerWriter:
    def __init__(self, path: str) -> None:
        self.process = SqliteProcess(path, WRITER)

    async def write(self, records: list[SpendRecord] | list[tuple[Any, ...]]) -> int:
        rows = unique_rows(records)
        return await self.process.write(rows) if rows else 0

    async def close(self) -> None:
        await self.process.close()
