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

import logging
from typing import Any, Protocol

from aigw.sqlite_process import PriorityWriter, WriterFailed
from aigw.stores.base import SpendRecord
from aigw.stores.sql_ledger import unique_rows

WRITER = "aigw.stores.sqlite.ledger_rows:write_rows"
log = logging.getLogger("aigw.ledger")


class _Store(Protocol):
    async def write(self, records: list[SpendRecord] | list[tuple[Any, ...]]) -> int: ...


class SqliteLedgerWriter:
    def __init__(self, path: str, fallback: _Store | None = None) -> None:
        self.children = PriorityWriter.for_file(path, WRITER)
        self._fallback = fallback  # takes a batch the children could not write
        self.fallbacks = 0

    async def write(self, records: list[SpendRecord] | list[tuple[Any, ...]]) -> int:
        rows = unique_rows(records)
        if not rows:
            return 0
        if self._fallback is None:
            return await self.children.write(rows)
        try:
            return await self.children.write(rows)
        except WriterFailed as exc:
            self.fallbacks += 1
            if self.fallbacks == 1 or self.fallbacks % 100 == 0:
                log.warning("spend ledger writer process failed (%s); the database thread wrote the batch "
                            "(%d batches so far)", exc, self.fallbacks)
            return await self._fallback.write(rows)

    async def close(self) -> None:
        await self.children.close()
