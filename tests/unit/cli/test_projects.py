"""`aigw projects` and `aigw tenants`: what their tables tell an operator."""

from __future__ import annotations

from typing import Any

import pytest

from aigw.cli import projects, tenants
from tests.unit.cli.test_keys import table_cells

PROJECT = {"id": "prj_1", "name": "web", "tenant_id": "ten_1", "rpm": None, "tpm": None, "max_parallel": None,
           "budget_usd": None, "budget_period": "monthly", "enabled": True, "disabled_by": None}
TENANT = {"id": "ten_1", "name": "acme", "rpm": None, "tpm": None, "max_parallel": None, "budget_usd": None,
          "budget_period": "monthly", "enabled": False, "created_at": "2026-11-28T12:00:00Z"}


@pytest.mark.parametrize(("fields", "shown"), [
    ({}, "yes"),
    ({"enabled": False, "disabled_by": "master"}, "no (master)"),
    ({"enabled": False, "disabled_by": "key_admin1"}, "no (admin key_admin1)"),
])
def test_the_enabled_column_says_who_switched_a_project_off(monkeypatch: pytest.MonkeyPatch,
                                                            fields: dict[str, Any], shown: str) -> None:
    monkeypatch.setattr(projects, "call", lambda *args, **kwargs: {**PROJECT, **fields})
    assert table_cells(["projects", "show", "prj_1"])["enabled"] == shown


def test_a_disabled_tenant_is_no(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant records no `disabled_by` (only the master key changes tenants): plain "no", never False."""
    monkeypatch.setattr(tenants, "call", lambda *args, **kwargs: {"object": "list", "data": [TENANT]})
    assert table_cells(["tenants", "list"])["enabled"] == "no"
