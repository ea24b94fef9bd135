"""The questions a report or the request log asks the ledger: a spend report's grouping and filters, a page of rows.

Kept apart from ``base`` (records and protocols) so each stays small; ``base`` names them too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, slots=True)
class SpendQuery:
    """A report over the rollups: group, optional tenant scope, filters and day range (inclusive)."""

    group_by: Literal["key", "project", "tenant", "model", "day"] = "key"
    tenant_id: str | None = None
    project_id: str | None = None
    key_id: str | None = None
    model: str | None = None  # the billed model (the served one, else the one asked for), as the rollups hold it
    since_day: str | None = None
    until_day: str | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class RequestQuery:
    """A page of ledger rows, newest first (for the request log)."""

    tenant_id: str | None = None
    key_id: str | None = None
    model: str | None = None
    status_min: int | None = None
    since: float | None = None
    until: float | None = None
    before_ts: float | None = None  # keyset pagination: rows strictly older than this ts_end
    limit: int = 100
