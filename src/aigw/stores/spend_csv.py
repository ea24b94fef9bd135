"""The spend report's columns, and the report as CSV for a spreadsheet (``GET /admin/spend?format=csv``).

Standard library only: the CLI imports the column names too, and must start fast.
"""

from __future__ import annotations

import csv
import io
from typing import Any

# what names each group's rows (sql_ledger.spend_report), then the sums every row carries
FIRST_COLUMNS = {"key": ["key", "key_prefix", "key_name"], "project": ["project", "project_name"],
                 "tenant": ["tenant", "tenant_name"], "model": ["model"], "day": ["day"]}
SUM_COLUMNS = ["requests", "errors", "cache_hits", "prompt_tokens", "completion_tokens", "cached_tokens",
               "reasoning_tokens", "cost_usd", "cost_saved_usd"]


# after the sums, in every file (an empty report's too): a header that changed with the rows broke scripts
# reading the columns by name or by position; ``cost_nano`` is the last
CSV_TAIL = ["cache_write_tokens", "cost_nano"]


def spend_csv(rows: list[dict[str, Any]], group: str) -> str:
    """The group's columns, the sums, ``CSV_TAIL`` (any other field of the rows before ``cost_nano``); one line
    per row. ``cost_usd`` is written from ``cost_nano`` when a row has it: exact at any size."""
    columns = FIRST_COLUMNS[group] + SUM_COLUMNS + CSV_TAIL
    extra = sorted({name for row in rows for name in row} - set(columns))
    out = io.StringIO()
    writer = csv.DictWriter(out, [*columns[:-1], *extra, columns[-1]], lineterminator="\r\n")  # RFC 4180's ends
    writer.writeheader()
    for row in rows:
        cells = {k: _cell(v) for k, v in row.items()}
        if isinstance(nano := row.get("cost_nano"), int):
            cells["cost_usd"] = usd_nano(nano)
        writer.writerow(cells)
    return out.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return usd(value)
    return value


def usd(value: float) -> str:
    """Dollars to the ledger's own precision (nano-USD, nine decimals), never ``1e-05``: rows shown so add up
    to the total to the last digit (six decimals dropped a $0.0000004 call's row to 0 and kept it in the total)."""
    return f"{value:.9f}"


def usd_nano(nano: int) -> str:
    """``usd`` from whole nano-dollars, digit for digit at any size (a float holds every nano only to ~$9M)."""
    whole, frac = divmod(abs(nano), 1_000_000_000)
    return f"{'-' if nano < 0 else ''}{whole}.{frac:09d}"
