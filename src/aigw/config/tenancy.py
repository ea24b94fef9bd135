"""The ``tenancy:`` config section: keys, rate limits, budgets and the spend ledger.

Kept in its own module so the shared ``models.py`` only gains one field. Every
setting has a default; tenants, projects and keys themselves live in the
database and are managed through the admin API, not in this file.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

FailPolicy = Literal["open", "closed"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LedgerConfig(_Strict):
    # Records wait at most this long in memory before a batch is written; a kill -9
    # loses at most this much (graceful shutdown and DB outages lose nothing).
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    # Records kept in memory while the database is down; beyond it the oldest are
    # dropped with an error log (and counted), so memory stays bounded.
    max_buffered: int = Field(default=200_000, ge=1000)
    retry_backoff_s: float = Field(default=1.0, gt=0, le=60)
    # Rows the database could not take by the end of a graceful shutdown are kept here
    # (JSON lines) and replayed at the next start. "" = next to the SQLite file, or
    # ./aigw-ledger-spill.jsonl with PostgreSQL; "off" drops them (logged and counted).
    spill_file: str = ""
    shutdown_timeout_s: float = Field(default=20.0, gt=0, le=600)
    # SQLite file only: "process" writes batches from a child process, so binding a batch's
    # values never holds the GIL the event loop needs (see aigw/sqlite_process.py);
    # "thread" writes them on the database thread (no extra process).
    writer: Literal["process", "thread"] = "process"


class TenancyConfig(_Strict):
    enabled: bool = True  # virtual keys, limits, budgets and the ledger
    # What a limit or budget check does when Redis cannot be reached.
    limits_on_store_error: FailPolicy = "open"
    budget_on_store_error: FailPolicy = "closed"
    # After a Redis timeout or lost connection, the limits and budget steps do not try Redis for this
    # long (the policies above apply at once), then one call probes it. 0: every call tries (and waits).
    store_retry_after_s: float = Field(default=1.0, ge=0, le=60)
    # Worst-case completion tokens reserved when a request sets no max_tokens.
    default_max_tokens: int = Field(default=4096, ge=1)
    # HTTP status of budget_exceeded: 429 (OpenAI's own choice for quota) or 402.
    budget_status: Literal[429, 402] = 429
    # fractions of the budget (0.5 = 50 %), each in (0, 1]
    alert_thresholds: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [0.5, 0.8, 1.0])
    alert_webhook: str = ""  # POSTed a JSON event when a budget crosses a threshold
    # Each replica checks the key version this often; a revoked key stops working
    # everywhere within about this interval plus one lookup.
    key_refresh_s: float = Field(default=0.25, gt=0, le=5)
    key_cache_size: int = Field(default=100_000, ge=100)
    # Database reads a second, per process, of well-formed keys the key cache does not hold; past it the set
    # of every key's hash answers (docs/tenancy.md, "A flood of unknown keys"). 0: the set answers every one.
    unknown_key_reads_per_s: float = Field(default=20.0, ge=0)
    migrate_on_start: bool | None = None  # None: yes for SQLite, no for PostgreSQL (`aigw db upgrade`)
    ledger: LedgerConfig = Field(default_factory=LedgerConfig)
