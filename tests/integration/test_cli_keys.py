"""`aigw keys ...` as a platform admin runs it, against a gateway on loopback: what each flag stores."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from click.testing import CliRunner, Result

from aigw.cli.admin_client import AdminClient
from aigw.cli.main import cli
from tests.integration.tenancy_support import MASTER, gateway_config
from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(gateway_config(tmp_path_factory.mktemp("cli-keys") / "gw.db")) as g:
        yield g


@pytest.fixture(scope="module")
def project(gw: RunningGateway) -> str:
    admin = AdminClient(gw.url, MASTER)
    tenant = admin.post("/admin/tenants", {"name": "cli-keys"})
    return str(admin.post("/admin/projects", {"name": "web", "tenant": tenant["id"]})["id"])


def _run(gw: RunningGateway, *args: str) -> Result:
    return CliRunner().invoke(cli, list(args), env={"AIGW_URL": gw.url, "AIGW_MASTER_KEY": MASTER})


def _json(gw: RunningGateway, *args: str) -> Any:
    result = _run(gw, *args, "--json")
    assert result.exit_code == 0 and result.exception is None, (result.output, result.exception)
    return json.loads(result.stdout)


def test_an_iso_basic_date_is_a_date_not_epoch_seconds(gw: RunningGateway, project: str) -> None:
    """``--expires 20301231`` (ISO 8601's basic format) was sent as the number 20301231, epoch seconds: a day in
    1970. ``keys create`` said "expires_at is in the past"; ``keys update`` ended the key at once, and exited 0."""
    made = _json(gw, "keys", "create", "--project", project, "--expires", "20301231")
    assert (made["expires_at"], made["status"]) == ("2030-12-31T00:00:00Z", "active")
    other = _json(gw, "keys", "create", "--project", project)
    changed = _json(gw, "keys", "update", other["id"], "--expires", "20301231")
    assert (changed["expires_at"], changed["status"]) == ("2030-12-31T00:00:00Z", "active")
    assert _json(gw, "keys", "create", "--project", project, "--expires", "1924991999")["expires_at"] == \
        "2030-12-31T23:59:59Z"  # epoch seconds are still read as such
