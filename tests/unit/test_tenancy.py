"""Tenancy's composition: what one worker of ``aigw serve --workers N`` does about another's admin changes."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from aigw.config.models import GatewayConfig
from aigw.errors import StartupError
from aigw.http.admin_api import BudgetChange
from aigw.providers.http import HttpClients
from aigw.stores.base import Limits, Project, Scope, SpendRecord, Tenant, window_of
from aigw.stores.redis.client import make_redis
from aigw.supervise import Supervisor
from aigw.tenancy import Tenancy


async def test_a_budget_added_through_another_worker_counts_the_windows_spend_here(tmp_path: Path) -> None:
    """Two workers without Redis, one SQLite file: worker A takes the PATCH that gives a project that spent
    $0.70 today a $0.50 daily budget (and seeds its own counters); worker B must count the $0.70 as well once
    it sees the key version move, or it admits the project's calls until it has spent $0.50 itself."""
    config = GatewayConfig.model_validate({
        "server": {"workers": 2}, "database_url": f"sqlite:///{tmp_path}/aigw.db",
        "models": [{"name": "mock", "provider": "mock"}],
        "tenancy": {"ledger": {"writer": "thread"}},
    })
    a = Tenancy(config, None, Supervisor(), HttpClients())
    b = Tenancy(config, None, Supervisor(), HttpClients())
    await a.start()
    await b.start()
    try:
        now = time.time()
        await a.db.add_tenant(Tenant(id="t1", name="t"))
        project = Project(id="p1", tenant_id="t1", name="p")
        await a.db.add_project(project)
        await a.db.write([SpendRecord(request_id="r1", ts_start=now, ts_end=now, id="row1", tenant_id="t1",
                                      project_id="p1", cost_nano=700_000_000)])
        await b.keys.check_version()  # B has seen the version before the change
        project.limits = Limits(budget_usd=0.5, budget_period="daily")
        await a.db.save_project(project)  # what the admin API of worker A does: save, seed its own, bump
        await a._budget_changed(BudgetChange("project", "p1", "t1", Limits(), project.limits, "req_1"))
        await a.version.bump()
        await b.keys.check_version()  # B's next poll drops its keys and starts the reseed, in the background
        assert b._reseeding is not None
        await b._reseeding
        window = window_of("daily", now)
        assert a.services.budgets._windows[("project:p1", window)].settled == 700_000_000  # type: ignore[attr-defined]
        spend = b.services.budgets._windows.get(("project:p1", window))  # type: ignore[attr-defined]
        assert spend is not None and spend.settled == 700_000_000
    finally:
        await a.stop()
        await b.stop()



@pytest.mark.parametrize("store", ["memory", "redis"])
async def test_a_budget_lowered_while_the_rollups_lag_alerts_at_the_change_and_at_the_next_settle(
        tmp_path: Path, store: str, request: pytest.FixtureRequest) -> None:
    """The change measured spend on the rollups alone: $0.60 settled by calls whose rows were still in the
    ledger's buffer did not count, so lowering the budget to $1 fired nothing, and as no later settle crosses
    50 % again, the window never alerted it. Then a call in flight under the old $10 took spend past $1 (80 and
    100 % of the new amount, unseen by its settle at the old amount): the next call's settle alerts them."""
    redis_cfg: dict[str, str] = {}
    redis = None
    if store == "redis":
        url, prefix = request.getfixturevalue("redis_isolated")
        redis_cfg, redis = {"redis_url": url, "redis_prefix": prefix}, make_redis(url)
    config = GatewayConfig.model_validate({
        "database_url": f"sqlite:///{tmp_path}/aigw.db", "models": [{"name": "mock", "provider": "mock"}],
        "tenancy": {"ledger": {"writer": "thread"}}, **redis_cfg,
    })
    tenancy = Tenancy(config, redis, Supervisor(), HttpClients())
    await tenancy.start()
    events: list[dict[str, Any]] = []

    async def hook(event: dict[str, Any]) -> None:
        events.append(event)

    tenancy.services.alert = hook
    try:
        now, ths, budgets = time.time(), tenancy.cfg.alert_thresholds, tenancy.services.budgets
        old, new = Limits(budget_usd=10.0, budget_period="daily"), Limits(budget_usd=1.0, budget_period="daily")
        before, after = Scope("key", "k1", old), Scope("key", "k1", new)
        assert (await budgets.reserve([before], 500_000_000, now, "late")).allowed  # in flight across the change
        assert (await budgets.reserve([before], 600_000_000, now, "a")).allowed
        assert await budgets.settle([before], 600_000_000, 600_000_000, now, ths, "a") == []  # its row: buffered
        await tenancy._budget_changed(BudgetChange("key", "k1", "t1", old, new, "req_patch"))
        assert [(e["threshold"], e["request_id"], e["budget_usd"]) for e in events] == [(0.5, "req_patch", 1.0)]
        assert await budgets.settle([before], 500_000_000, 450_000_000, now, ths, "late") == []  # $1.05
        assert (await budgets.reserve([before], 1_000_000, now, "b")).allowed
        crossed = await budgets.settle([after], 1_000_000, 1_000_000, now, ths, "b")
        assert [c[2] for c in crossed] == [0.8, 1.0]
    finally:
        await tenancy.stop()
        if redis is not None:
            await redis.aclose()


async def test_a_database_that_needs_migrations_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """A StartupError is logged as its message alone; anything else gets a traceback."""
    config = GatewayConfig.model_validate({
        "database_url": f"sqlite:///{tmp_path}/aigw.db", "models": [{"name": "mock", "provider": "mock"}],
        "tenancy": {"migrate_on_start": False, "ledger": {"writer": "thread"}},
    })
    tenancy = Tenancy(config, None, Supervisor(), HttpClients())
    try:
        with pytest.raises(StartupError, match=r"needs migrations \[1, 2, 3, 4\]: run `aigw db upgrade`"):
            await tenancy.start()
    finally:
        await tenancy.db.close()
