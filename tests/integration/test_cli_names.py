"""The CLI reaches the tenant, project or key it names, whatever characters the name holds.

Names go into the admin URL's path; a '#' or '?' there once cut the name short (and changed tenant
`a` when `a#b` was meant), a space crashed the CLI, and an escape such as `%23` was decoded by the server.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aigw.cli.admin_client import AdminClient
from aigw.cli.main import cli
from tests.integration.tenancy_support import MASTER, gateway_config
from tests.support.gateway import RunningGateway, running_gateway

# (the tenant the command names, a tenant that a cut-short or decoded name would reach instead)
NAMES = [
    ("a#b", "a"),
    ("a?b", "a"),
    ("a%23b", "a#b"),
    ("Acme Corp/eu", "Acme Corp"),
    ("ünï/代", "ünï"),
]


@pytest.fixture
def gw(tmp_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(gateway_config(tmp_path / "gw.db")) as g:
        yield g


def _cli(gw: RunningGateway, *args: str) -> Any:
    result = CliRunner().invoke(cli, [*args, "--json"], env={"AIGW_URL": gw.url, "AIGW_MASTER_KEY": MASTER})
    assert result.exit_code == 0 and result.exception is None, (result.output, result.exception)
    return json.loads(result.stdout)


def _tenants(admin: AdminClient, *names: str) -> dict[str, dict[str, Any]]:
    return {n: admin.post("/admin/tenants", {"name": n}) for n in names}


@pytest.mark.parametrize(("name", "other"), NAMES)
def test_tenants_show_and_update_reach_the_named_tenant(gw: RunningGateway, name: str, other: str) -> None:
    admin = AdminClient(gw.url, MASTER)
    made = _tenants(admin, other, name)
    assert _cli(gw, "tenants", "show", name)["id"] == made[name]["id"]
    changed = _cli(gw, "tenants", "update", name, "--disable", "--rpm", "7")
    assert (changed["id"], changed["name"], changed["enabled"], changed["rpm"]) == (made[name]["id"], name, False, 7)
    untouched = admin.get(f"/admin/tenants/{made[other]['id']}")
    assert (untouched["enabled"], untouched["rpm"]) == (True, None)


def test_projects_update_reaches_the_named_project(gw: RunningGateway) -> None:
    admin = AdminClient(gw.url, MASTER)
    tenant = admin.post("/admin/tenants", {"name": "t #1"})
    plain, odd = (admin.post("/admin/projects", {"name": n, "tenant": tenant["id"]}) for n in ("web", "web#2"))
    assert _cli(gw, "projects", "update", "web#2", "--rpm", "5")["id"] == odd["id"]
    assert admin.get(f"/admin/projects/{odd['id']}")["rpm"] == 5
    assert admin.get(f"/admin/projects/{plain['id']}")["rpm"] is None
    listed = _cli(gw, "projects", "list", "--tenant", "t #1")["data"]  # a name in the query string
    assert sorted(p["name"] for p in listed) == ["web", "web#2"]


def test_a_key_id_with_a_fragment_is_not_cut_short(gw: RunningGateway) -> None:
    admin = AdminClient(gw.url, MASTER)
    tenant = admin.post("/admin/tenants", {"name": "k"})
    project = admin.post("/admin/projects", {"name": "p", "tenant": tenant["id"]})
    key = admin.post("/admin/keys", {"project": project["id"]})
    assert _cli(gw, "keys", "show", key["id"])["id"] == key["id"]
    result = CliRunner().invoke(cli, ["keys", "update", key["id"] + "#x", "--disable"],
                                env={"AIGW_URL": gw.url, "AIGW_MASTER_KEY": MASTER})
    assert result.exit_code == 1 and f"No key `{key['id']}#x`" in result.output
    assert admin.get(f"/admin/keys/{key['id']}")["enabled"] is True


BLANK_ID_COMMANDS = [
    ["tenants", "show"], ["tenants", "update", "--disable"], ["projects", "show"], ["projects", "update", "--disable"],
    ["keys", "show"], ["keys", "update", "--disable"], ["keys", "revoke"], ["keys", "rotate"],
]


@pytest.mark.parametrize("blank", ["", "  "])
@pytest.mark.parametrize("command", BLANK_ID_COMMANDS, ids=" ".join)
def test_an_empty_id_is_a_usage_error_that_names_nothing(gw: RunningGateway, command: list[str], blank: str) -> None:
    """``aigw tenants show "$T"`` with T unset listed every tenant (``GET /admin/tenants/`` is the list) and exited
    0; ``keys show ""`` listed every tenant's keys; ``keys revoke ""`` said "No key `revoke`"."""
    admin = AdminClient(gw.url, MASTER)
    tenant = admin.post("/admin/tenants", {"name": "t"})
    project = admin.post("/admin/projects", {"name": "p", "tenant": tenant["id"]})
    key = admin.post("/admin/keys", {"project": project["id"]})
    group, verb, *flags = command
    result = CliRunner().invoke(cli, [group, verb, blank, *flags, "--json"],
                                env={"AIGW_URL": gw.url, "AIGW_MASTER_KEY": MASTER})
    assert result.exit_code == 2 and result.stdout == "", (result.exit_code, result.output)
    assert "empty" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert admin.get(f"/admin/tenants/{tenant['id']}")["enabled"] is True
    assert admin.get(f"/admin/projects/{project['id']}")["enabled"] is True
    assert admin.get(f"/admin/keys/{key['id']}")["status"] == "active"
