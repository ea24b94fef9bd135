"""A tenant admin key as the platform team that handed it out expects it to behave: it never grants more than
it holds, never enables what the master key disabled, and pages its tenant list like the master. On SQLite and
on PostgreSQL (the master's disabling is kept by the UPDATE itself)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, gateway_config, setup_key
from tests.integration.test_tenancy_admin_input import refused
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.services import RUN_ID, pg_execute, postgres_dsn


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    tmp: Path = tmp_path_factory.mktemp("admin-scope")
    if request.param == "sqlite":
        with running_gateway(gateway_config(tmp / "gw.db")) as g:
            yield g
        return
    dsn, schema = postgres_dsn(), f"aigw_test_{RUN_ID}_{uuid.uuid4().hex[:6]}"
    asyncio.run(pg_execute(dsn, f'CREATE SCHEMA "{schema}"'))
    try:
        cfg = gateway_config(tmp / "unused.db", database_url=f"{dsn}?search_path={schema}")
        cfg["tenancy"].update(migrate_on_start=True, ledger={"flush_interval_s": 0.05,
                                                             "spill_file": str(tmp / "spill.jsonl")})
        with running_gateway(cfg) as g:
            yield g
    finally:
        asyncio.run(pg_execute(dsn, f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))


@pytest.fixture
def admin(gw: RunningGateway) -> AdminClient:
    return AdminClient(gw.url, MASTER)


def _tenant_admin(gw: RunningGateway, admin: AdminClient, tenant: str, **own: Any
                  ) -> tuple[AdminClient, dict[str, Any]]:
    key = setup_key(admin, tenant, role="tenant_admin", **own)
    return AdminClient(gw.url, key["key"]), key


def test_a_tenant_admin_pages_its_tenant_list_like_the_master(gw: RunningGateway, admin: AdminClient) -> None:
    as_a, a = _tenant_admin(gw, admin, "paging-co")
    other = setup_key(admin, "paging-other")
    refused(lambda: as_a.get("/admin/tenants", limit=0), 400, "limit")
    page = as_a.get("/admin/tenants", limit=1)
    assert [t["id"] for t in page["data"]] == [a["tenant_id"]] and page["has_more"] is False
    after = as_a.get("/admin/tenants", limit=1, after=a["tenant_id"])  # the next page: nothing follows its own
    assert (after["data"], after["has_more"], after["last_id"]) == ([], False, None)
    refused(lambda: as_a.get("/admin/tenants", after=other["tenant_id"]), 404, None, "No tenant")
