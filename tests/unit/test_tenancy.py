"""Tenancy's composition: what one worker of ``aigw serve --workers N`` does about another's admin changes."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from aigw.config.models import GatewayConfig
from aigw.errors import StartupError
from aigw.http.admin_api import BudgetChange
from aigw.providers.http import HttpClients
from aigw.stores.base import Limits, Project, SpendRecord, Tenant, window_of
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



async def test_a_database_that_needs_migrations_stops_the_start_with_one_line(tmp_path: Path) -> None:
    """A StartupError is logged as its message alone; anything else gets a traceback."""
    config = GatewayConfig.model_validate({
        "database_url": f"sqlite:///{tmp_path}/aigw.db", "models": [{"name": "mock", "provider": "mock"}],
        "tenancy": {"migrate_on_start": False, "ledger": {"writer": "thread"}},
    })
    tenancy = Tenancy(config, None, Supervisor(), HttpClients())
    try:
        with pytest.raises(StartupError, match=r"needs migrations \[1, 2, 3\]: run `aigw db upgrade`"):
            await tenancy.start()
    finally:
        await tenancy.db.close()
