"""The spend ledger's SQLite writes, done by a child process (see ``aigw.sqlite_process``).

Same rows, same transaction, same idempotency as ``sql_ledger.write_batch`` on the
database thread; only where the values are bound changes, so the event loop never
waits for the GIL while a batch is written. Reads (reports, request pages) stay on
the database thread: WAL mode lets them run beside the writer.

Two children in fact (``PriorityWriter``): one at idle priority for the steady
flow, which costs requests no latency, and one at nice 10 while the core is
saturated. A batch neither could write goes to ``fallback`` (the database store).
"""

from __future__ import annotations

from typing import Any, Protocol

from aigw.sqlite_process import PriorityWriter
from aigw.stores.base import SpendRecord
from aigw.stores.sql_ledger import unique_rows

WRITER = "aigw.stores.sqlite.ledger_rows:write_rows"


class _Store(Protocol):
    async def write(self, records: list[SpendRecord] | list[tuple[Any, ...]]) -> int: ...


class SqliteLedgerWriter:
    def __init__(self, path: str, fallback: _Store | None = None) -> None:
        self.children = PriorityWriter.for_file(path, WRITER, fallback.write if fallback is not None else None,
                                                "spend ledger")

    async def write(self, records: list[SpendRecord] | list[tuple[Any, ...]]) -> int:
        rows = unique_rows(records)
        return await self.children.write(rows) if rows else 0

    async def close(self) -> None:
        await self.children.close()
