"""What the rest of the gateway may ask of a store: records and small protocols.

Two kinds of state, each with an embedded and a shared implementation:

    durable (TenancyStore, LedgerStore)   SQLite (sqlite3)     | PostgreSQL (asyncpg)
    hot     (RateLimiter, BudgetCounter,  process memory       | Redis (one Lua call each)
             KeyVersion)

Code above the stores gets one of each from ``app.py`` and never knows which.
Money is carried as integer nano-dollars (1e-9 USD) wherever it is counted, so
sums are exact and Redis ``INCRBY`` can hold them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

from aigw.stores.queries import RequestQuery as RequestQuery  # re-exported: the protocols name them
from aigw.stores.queries import SpendQuery as SpendQuery

Period = Literal["daily", "weekly", "monthly", "total"]
Role = Literal["user", "tenant_admin"]
PERIODS: tuple[Period, ...] = ("daily", "weekly", "monthly", "total")
BY_MASTER = "master"  # ``disabled_by`` of what the master key disabled: a tenant admin cannot enable it again
NANO = 1_000_000_000  # nano-dollars per USD
T = TypeVar("T")


def to_nano(usd: float) -> int:
    return round(usd * NANO)


_WINDOWS: dict[tuple[str, int], str] = {}


def window_of(period: Period, now: float) -> str:
    """The budget window ``now`` falls in: a day, ISO week or month (UTC), or forever (memoised per day)."""
    if period == "total":
        return "total"
    key = (period, int(now // 86400))
    window = _WINDOWS.get(key)
    if window is None:
        if len(_WINDOWS) > 1000:
            _WINDOWS.clear()
        window = _WINDOWS[key] = _window(period, now)
    return window


def _window(period: Period, now: float) -> str:
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if period == "daily":
        return day.isoformat()
    if period == "weekly":
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    return f"{day.year}-{day.month:02d}"


def window_start_day(period: Period, now: float) -> str:
    """First UTC day (YYYY-MM-DD) of the current window; '' for the total period."""
    day = dt.datetime.fromtimestamp(now, dt.UTC).date()
    if period == "total":
        return ""
    if period == "weekly":
        day = day - dt.timedelta(days=day.weekday())
    elif period == "monthly":
        day = day.replace(day=1)
    return day.isoformat()


@dataclass(frozen=True, slots=True)
class Limits:
    """Caps at one level (key, project, tenant or deployment). None means no cap."""

    rpm: int | None = None
    tpm: int | None = None
    max_parallel: int | None = None
    budget_usd: float | None = None
    budget_period: Period = "monthly"


@dataclass(slots=True)
class Tenant:
    id: str
    name: str
    limits: Limits = field(default_factory=Limits)
    enabled: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0


@dataclass(slots=True)
class Project:
    id: str
    tenant_id: str
    name: str
    limits: Limits = field(default_factory=Limits)
    enabled: bool = True
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    disabled_by: str | None = None  # who disabled it: BY_MASTER or a tenant admin key's id (None: enabled)


@dataclass(slots=True)
class ApiKey:
    """A virtual key. Only ``key_hash`` (sha256 of the secret) and ``prefix`` are stored."""

    id: str
    tenant_id: str
    project_id: str
    key_hash: str
    prefix: str
    name: str = ""
    allowed_models: list[str] | None = None
    limits: Limits = field(default_factory=Limits)
    expires_at: float | None = None
    enabled: bool = True
    role: Role = "user"
    metadata: dict[str, Any] = field(default_factory=dict)
    created_at: float = 0.0
    revoked_at: float | None = None
    previous_hash: str | None = None  # the secret before the last rotation, usable until previous_until
    previous_until: float | None = None
    disabled_by: str | None = None  # who disabled it: BY_MASTER or a tenant admin key's id (None: enabled)


@dataclass(frozen=True, slots=True)
class Grant:
    """A key resolved with its project and tenant: everything auth and the stages need."""

    key: ApiKey
    project: Project
    tenant: Tenant
    until: float | None = None  # found by the previous secret of a rotated key: usable until then only

    def usable(self, now: float) -> bool:
        k = self.key
        expired = k.expires_at is not None and k.expires_at <= now
        past_grace = self.until is not None and self.until <= now
        return (k.enabled and k.revoked_at is None and not expired and not past_grace and self.project.enabled
                and self.tenant.enabled)


@dataclass(slots=True)
class SpendRecord:
    """One finished request: the spend ledger row, also the request log's source."""

    request_id: str
    ts_start: float
    ts_end: float
    id: str = ""  # the ledger row's own id (set once when queued; replays reuse it)
    tenant_id: str = ""
    project_id: str = ""
    key_id: str = ""
    key_prefix: str = ""
    model: str = ""
    served_model: str = ""
    deployment_id: str = ""
    provider: str = ""
    endpoint: str = "chat"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0
    cache_write_tokens: int = 0
    reasoning_tokens: int = 0
    cost_nano: int = 0
    cost_saved_nano: int = 0
    latency_ms: float = 0.0
    upstream_ms: float = 0.0
    overhead_ms: float = 0.0
    status: int = 200
    error_kind: str = ""
    cache_hit: bool = False
    handled_by: str = ""
    retries: int = 0
    fallbacks: int = 0
    stream: bool = False
    usage_source: str = "provider"  # "provider" | "local" | "none"


Change = Callable[[T], Collection[str]]  # applied to a record as saved: changes it, returns the columns it changed


class TenancyStore(Protocol):
    """``save_*`` write ``columns`` of a record as the caller holds it (None: every one); ``update_*`` apply a
    pure ``Change`` to the record as saved, under its row lock, and give it back before and after (None: no such
    record), so concurrent changes of one record never undo each other. Neither clears a revocation, and a
    ``tenant_admin``'s write never enables (nor claims the disabling of) what the master key disabled."""

    async def add_tenant(self, tenant: Tenant) -> None: ...
    async def get_tenant(self, tenant_id: str) -> Tenant | None: ...
    async def find_tenant(self, name_or_id: str) -> Tenant | None: ...
    async def list_tenants(self, limit: int | None = None, after: Tenant | None = None) -> list[Tenant]: ...
    async def save_tenant(self, tenant: Tenant, columns: Collection[str] | None = None) -> None: ...
    async def update_tenant(self, tenant_id: str, change: Change[Tenant]) -> tuple[Tenant, Tenant] | None: ...
    async def add_project(self, project: Project) -> None: ...
    async def get_project(self, project_id: str) -> Project | None: ...
    async def find_project(self, name_or_id: str, tenant_id: str | None) -> Project | None: ...
    async def list_projects(self, tenant_id: str | None, limit: int | None = None,
                            after: Project | None = None) -> list[Project]: ...
    async def save_project(self, project: Project, columns: Collection[str] | None = None,
                           tenant_admin: bool = False) -> None: ...
    async def update_project(self, project_id: str, change: Change[Project],
                             tenant_admin: bool = False) -> tuple[Project, Project] | None: ...
    async def add_key(self, key: ApiKey) -> None: ...
    async def get_key(self, key_id: str, tenant_id: str | None = None) -> ApiKey | None:
        """The key ``key_id``; with ``tenant_id``, only if it is that tenant's (another's row is never read)."""
        ...
    async def list_keys(self, tenant_id: str | None, project_id: str | None, limit: int | None = None,
                        after: ApiKey | None = None) -> list[ApiKey]: ...
    async def enabled_states(self, project_ids: Collection[str]) -> dict[str, tuple[bool, bool]]:
        """Project id -> (the project is enabled, its tenant is enabled); ids not found are absent."""
        ...
    async def save_key(self, key: ApiKey, columns: Collection[str] | None = None,
                       tenant_admin: bool = False) -> None: ...
    async def update_key(self, key_id: str, change: Change[ApiKey],
                         tenant_admin: bool = False) -> tuple[ApiKey, ApiKey] | None: ...
    async def grant_by_hash(self, key_hash: str) -> Grant | None: ...
    async def key_hashes(self, since: float | None) -> tuple[list[str], float]:
        """The hashes (current and previous secret) of the keys whose secret was set at or after ``since``
        (None: of every key), and the ``since`` of the next call, which then misses none set meanwhile."""
        ...
    async def budgeted_spend(self, now: float) -> dict[tuple[str, str, str], int]: ...
    async def scope_spend(self, kind: str, ident: str, period: Period, now: float) -> int: ...


class LedgerStore(Protocol):
    async def write(self, records: list[SpendRecord] | list[tuple[Any, ...]]) -> int:
        """Insert records (or ``sql_ledger.as_row`` rows) idempotently by row id; add new ones to the rollups.
        Returns how many were new. Raises on a database failure (the caller retries)."""
        ...

    async def spend(self, query: SpendQuery) -> list[dict[str, Any]]: ...
    async def requests(self, query: RequestQuery) -> list[dict[str, Any]]: ...
    async def request(self, request_id: str, tenant_id: str | None) -> dict[str, Any] | None: ...
    async def count(self) -> int: ...


class Database(TenancyStore, LedgerStore, Protocol):
    """The durable store: SQLite or PostgreSQL."""

    kind: str

    async def open(self) -> None: ...
    async def migrate(self) -> list[int]: ...
    async def pending_migrations(self) -> list[int]: ...
    async def ping(self) -> None: ...
    async def key_version(self) -> int: ...
    async def bump_key_version(self) -> int: ...
    async def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Scope:
    """One level a limit or budget applies to, e.g. ("key", "k_123", Limits(...))."""

    kind: Literal["key", "project", "tenant", "deployment"]
    id: str
    limits: Limits
    ref: str = field(init=False)  # "key:k_123", computed once
    budget_nano: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ref", f"{self.kind}:{self.id}")
        object.__setattr__(self, "budget_nano", to_nano(self.limits.budget_usd or 0.0))


@dataclass(slots=True)
class Admission:
    """The answer of a rate-limit check. For requests and for tokens, the figures of the level with the fewest
    left (a refusal: the refusing level for what it refused), so they never promise room a tighter level lacks.
    A reset is, on an accepted call, the seconds until the oldest request (tokens) counted leaves the window;
    on a refusal, until one more request (this call's token estimate) fits: 0 when it would now."""

    allowed: bool
    scope: str = ""  # the scope that refused, e.g. "key:k_1"
    reason: str = ""  # "rpm" | "tpm" | "parallel"
    retry_after_s: float = 0.0
    limit_requests: int | None = None
    remaining_requests: int | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_requests_s: float = 0.0
    reset_tokens_s: float = 0.0
    taken_at: int = 0  # the second (the store's clock) whose buckets took this call: a refund goes back there


class RateLimiter(Protocol):
    """``slot``: the call's place among the in-flight calls (max parallel), unique per call and made by
    the gateway: never a client's x-request-id, which a client could repeat to hold one place for many."""

    async def admit(self, scopes: list[Scope], slot: str, est_tokens: int) -> Admission: ...
    async def release(self, scopes: list[Scope], slot: str, token_delta: int, taken_at: int = 0,
                      request_back: bool = False) -> None: ...


@dataclass(slots=True)
class Reservation:
    allowed: bool
    scope: str = ""
    limit_nano: int = 0
    spent_nano: int = 0  # spent (incl. reservations) in the refusing scope, before this request


class BudgetCounter(Protocol):
    """Spend per scope and budget window. A reservation is a lease on the call's slot: it counts until
    the call is settled or the lease expires (a call whose settle never comes: a lost reply, a dead
    replica). Admission compares settled spend plus the live leases with the budget."""

    async def reserve(self, scopes: list[Scope], amount_nano: int, now: float, slot: str = "") -> Reservation:
        """A lease on ``slot`` (unique per call; "" makes one up, for a lease nobody will settle)."""
        ...

    async def settle(self, scopes: list[Scope], reserved_nano: int, actual_nano: int, now: float,
                     thresholds: list[float], slot: str) -> list[tuple[str, str, float]]:
        """Replace the lease on ``slot`` (of ``reserved_nano``) by the real cost; a lease no longer there is
        not settled again."""
        ...

    async def seed(self, spent: dict[tuple[str, str, str], int]) -> None:
        """Raise settled spend to the ledger's figures, never lower it."""
        ...

    async def reached(self, scope: Scope, now: float, thresholds: list[float]) -> list[float]:
        """A budget changed (admin API): the thresholds of its new amount that settled spend has reached in the
        window of ``now``, not alerted yet, marked now (once across replicas) for the caller to alert. Later
        settles alert any other threshold of that amount reached and not marked, not only one they cross."""
        ...

    async def forget(self, scope: Scope, now: float) -> None:
        """Drop ``scope``'s counters of the window of ``now``, for a scope that will never spend again (a
        revoked key; its spend stays in the ledger). A ``total`` window would otherwise be kept for good."""
        ...

    async def seeded(self) -> bool:
        """Whether the counters hold a seed (False after a store that lost its data, e.g. a Redis restart)."""
        ...

    async def spent(self, scope: Scope, now: float) -> int:
        """Settled spend plus the live leases in the window of ``now``."""
        ...


class Gate(Protocol):
    """Rate limits and budget together: one step before a call, one after (one Redis call each).

    Either step may raise ``StoreSkipped`` (the store is in its skip window: nothing ran) or any other
    error (the step failed and may have run all the same). A skipped ``leave`` may be ``SettleOwed``: it
    runs later, when the store answers again; a failed one that alerts may be ``SettleUnanswered``.
    Either's ``later`` gets the thresholds it crossed."""

    async def enter(self, rate: list[Scope], slot: str, est_tokens: int, budget: list[Scope],
                    amount_nano: int, now: float) -> tuple[Admission, Reservation | None]:
        """Rate scopes first (a refusal takes nothing), then the reservation (None: no budget scopes)."""
        ...

    async def peek(self, rate: list[Scope]) -> list[Admission]:
        """Each scope's figures as they stand, nothing taken or changed, one ``Admission`` per scope:
        remaining = cap - used, resets = when its oldest count leaves the window (0: empty). For a refusal
        no wait helps (a prompt over a tpm cap), the cold path: not batched with the other steps."""
        ...

    async def leave(self, rate: list[Scope], slot: str, token_delta: int, taken_at: int, budget: list[Scope],
                    reserved_nano: int, actual_nano: int, entered: float,
                    thresholds: list[float], request_back: bool = False) -> list[tuple[str, str, float]]:
        """Settle what ``enter`` took: a token refund goes back into the second that took the estimate
        (``taken_at``; nothing if it has left the window), extra tokens into the current one, the request
        itself too with ``request_back`` (a call refused after ``enter``, e.g. every deployment full), and the
        budget lease on ``slot`` is replaced by ``actual_nano`` in the window of ``entered`` (when the
        reservation was made), not of now. ``reserved_nano`` must be what ``enter`` reserved: with the
        slot it names the lease. Only a lease still there is settled, so settling twice counts once."""
        ...


class KeyVersion(Protocol):
    """A counter that changes whenever any key, project or tenant changes (cache invalidation)."""

    async def get(self) -> int: ...
    async def bump(self) -> int: ...
