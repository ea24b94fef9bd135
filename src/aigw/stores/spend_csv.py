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


def spend_csv(rows: list[dict[str, Any]], group: str) -> str:
    """The group's columns, the sums, then any other field of the rows; one line per row."""
    columns = FIRST_COLUMNS[group] + SUM_COLUMNS
    extra = sorted({name for row in rows for name in row} - set(columns))
    out = io.StringIO()
    writer = csv.DictWriter(out, [*columns, *extra], lineterminator="\r\n")  # RFC 4180's line ends
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
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
