"""`aigw tenants ...` and `aigw projects ...` as a platform admin runs them, against a gateway on loopback."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, cli_json, gateway_config, run_cli
from tests.support.gateway import RunningGateway, running_gateway

POLICY = {"guardrails": {"pii": {"mode": "block"}}, "team": "payments"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(gateway_config(tmp_path_factory.mktemp("cli-tenants") / "gw.db")) as g:
        yield g


def test_tenants_and_projects_take_metadata_as_keys_do(gw: RunningGateway) -> None:
    """A tenant's or project's metadata (its guardrails block, docs/guardrails.md) could be set through the admin
    API only: `tenants|projects create|update` had no --metadata, as `keys` has."""
    admin = AdminClient(gw.url, MASTER)
    tenant = cli_json(gw, "tenants", "create", "meta-co", "--metadata", json.dumps(POLICY))
    assert tenant["metadata"] == POLICY == admin.get(f"/admin/tenants/{tenant['id']}")["metadata"]
    project = cli_json(gw, "projects", "create", "app", "--tenant", "meta-co", "--metadata", json.dumps(POLICY))
    assert project["metadata"] == POLICY == admin.get(f"/admin/projects/{project['id']}")["metadata"]
    assert cli_json(gw, "tenants", "update", "meta-co", "--metadata", '{"team": "ops"}')["metadata"] == {"team": "ops"}
    assert cli_json(gw, "projects", "update", project["id"], "--metadata", "{}")["metadata"] == {}
    for args in (["tenants", "create", "bad-meta", "--metadata", "[1]"],
                 ["projects", "update", project["id"], "--metadata", "{team: x}"]):
        result = run_cli(gw, *args)
        assert result.exit_code == 2 and "--metadata" in result.output, result.output
    assert "bad-meta" not in [t["name"] for t in admin.get("/admin/tenants")["data"]]  # refused, nothing made
    assert admin.get(f"/admin/projects/{project['id']}")["metadata"] == {}


def test_tenants_and_projects_are_renamed_and_a_taken_name_changes_nothing(gw: RunningGateway) -> None:
    """The admin API renames (PATCH ``name``), and refuses a taken name with a 409; `tenants|projects update` had
    no --name, so a typo in a name could be fixed through the API only (keys update has --name)."""
    admin = AdminClient(gw.url, MASTER)
    tenant = cli_json(gw, "tenants", "create", "acme-typo")
    cli_json(gw, "tenants", "create", "taken-co")
    assert cli_json(gw, "tenants", "update", "acme-typo", "--name", "acme-co")["name"] == "acme-co"
    assert admin.get(f"/admin/tenants/{tenant['id']}")["name"] == "acme-co"
    project = cli_json(gw, "projects", "create", "wbe", "--tenant", "acme-co")
    cli_json(gw, "projects", "create", "api", "--tenant", "acme-co")
    assert cli_json(gw, "projects", "update", project["id"], "--name", "web")["name"] == "web"
    for args in (["tenants", "update", "acme-co", "--name", "taken-co", "--rpm", "5"],
                 ["projects", "update", project["id"], "--name", "api", "--rpm", "5"]):
        result = run_cli(gw, *args)
        assert result.exit_code == 1 and "already" in result.output and "(HTTP 409)" in result.output, result.output
    assert (admin.get(f"/admin/tenants/{tenant['id']}")["name"], admin.get(f"/admin/tenants/{tenant['id']}")["rpm"]) \
        == ("acme-co", None)
    assert (admin.get(f"/admin/projects/{project['id']}")["name"],
            admin.get(f"/admin/projects/{project['id']}")["rpm"]) == ("web", None)


def test_a_tenant_named_after_another_tenants_id_is_refused_saying_so(gw: RunningGateway) -> None:
    """Refused, as it must be (the id would always win, the name could never be reached), but the error said
    "A tenant named `ten_...` exists already", naming a tenant no list showed."""
    other = cli_json(gw, "tenants", "create", "id-owner")
    cli_json(gw, "tenants", "create", "renamer")
    for args in (["tenants", "create", other["id"]], ["tenants", "update", "renamer", "--name", other["id"]]):
        result = run_cli(gw, *args)
        assert result.exit_code == 1 and f"`{other['id']}` is the id of tenant `id-owner`" in result.output, \
            result.output
    assert AdminClient(gw.url, MASTER).get(f"/admin/tenants/{other['id']}")["name"] == "id-owner"
    assert AdminClient(gw.url, MASTER).get("/admin/tenants/renamer")["name"] == "renamer"
