"""`aigw keys`: what the table and the notes beside it tell an operator."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

from aigw.cli import keys
from aigw.cli.main import cli

RECORD = {"id": "key_1", "prefix": "sk-aigw-AbCd", "name": "ci", "project_id": "prj_1", "role": "tenant_admin",
          "models": None, "rpm": None, "tpm": None, "max_parallel": None, "budget_usd": None,
          "budget_period": "monthly", "expires_at": None, "enabled": True, "revoked": False,
          "previous_key_until": None}


def answering(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> None:
    monkeypatch.setattr(keys, "call", lambda *args, **kwargs: {**RECORD, **fields})


def test_the_keys_table_says_which_keys_are_tenant_admins(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tenant admin key (`keys create --admin`) looked like any other in `keys list` and `keys show`."""
    answering(monkeypatch)
    result = CliRunner().invoke(cli, ["keys", "show", "key_1"])
    assert result.exit_code == 0 and "role" in result.output and "tenant_admin" in result.output


def test_rotate_says_until_when_the_previous_secret_works(monkeypatch: pytest.MonkeyPatch) -> None:
    """`rotate --grace` printed the new secret and no word of the old one's end (only --json had it)."""
    answering(monkeypatch, key="sk-aigw-new", previous_key_until="2026-11-27T19:00:00Z")
    result = CliRunner().invoke(cli, ["keys", "rotate", "key_1", "--grace", "3600"])
    assert result.exit_code == 0
    assert "The previous secret works until 2026-11-27T19:00:00Z, then only the new one." in result.output
    answering(monkeypatch, key="sk-aigw-new")
    assert "The previous secret no longer works." in CliRunner().invoke(cli, ["keys", "rotate", "key_1"]).output
    assert "previous secret" not in CliRunner().invoke(cli, ["keys", "rotate", "key_1", "--json"]).output


def test_the_table_says_all_models_and_no_period_without_a_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """'-' under models read as "none" (it means every model), and a key without a budget showed 'monthly'."""
    answering(monkeypatch)
    row = CliRunner().invoke(cli, ["keys", "show", "key_1"]).output.splitlines()[3]  # the rich table's row
    cells = [c.strip() for c in row.strip("│ ").split("│")]
    assert cells[5] == "all" and cells[10] == "-"  # models, budget_period
    answering(monkeypatch, models=[], budget_usd=5.0)
    cells = [c.strip() for c in CliRunner().invoke(cli, ["keys", "show", "key_1"]).output.splitlines()[3]
             .strip("│ ").split("│")]
    assert cells[5] == "none" and cells[10] == "monthly"
    as_json = CliRunner().invoke(cli, ["keys", "show", "key_1", "--json"]).output
    assert '"models": []' in as_json and '"budget_period": "monthly"' in as_json  # --json: the record as it is


def table_cells(args: list[str]) -> dict[str, str]:
    """The rich table's one row by column name (the table is 250 wide when piped: no cell is cut)."""
    lines = CliRunner().invoke(cli, args).output.splitlines()
    names, row = ([c.strip() for c in line.strip("┃│ ").split("┃" if i == 0 else "│")]
                  for i, line in enumerate((lines[1], lines[3])))
    return dict(zip(names, row, strict=True))


@pytest.mark.parametrize(("fields", "shown"), [
    ({"enabled": True, "disabled_by": None}, "yes"),
    ({"enabled": False, "disabled_by": "master"}, "no (master)"),
    ({"enabled": False, "disabled_by": "key_admin1"}, "no (admin key_admin1)"),
    ({"enabled": False, "disabled_by": None}, "no"),  # a record that does not say who (an old replica's)
])
def test_the_enabled_column_says_who_switched_a_key_off(monkeypatch: pytest.MonkeyPatch, fields: dict[str, Any],
                                                        shown: str) -> None:
    """It showed True or False: a key a tenant admin cannot switch back on (the master's) looked like any other."""
    answering(monkeypatch, **fields)
    assert table_cells(["keys", "show", "key_1"])["enabled"] == shown
    assert f'"enabled": {str(fields["enabled"]).lower()}' in CliRunner().invoke(cli, ["keys", "show", "key_1",
                                                                                      "--json"]).output


def test_booleans_print_as_yes_or_no(monkeypatch: pytest.MonkeyPatch) -> None:
    answering(monkeypatch, revoked=True, enabled=True)
    cells = table_cells(["keys", "list"])
    assert (cells["revoked"], cells["enabled"]) == ("yes", "yes")
    answering(monkeypatch, revoked=False)
    assert table_cells(["keys", "list"])["revoked"] == "no"


@pytest.mark.parametrize("name", ["ci[/]", "[red]ghost[/red]", "[bold]", "[link=http://x.test]click[/link]"])
def test_a_name_with_brackets_is_shown_as_it_is_never_read_as_markup(monkeypatch: pytest.MonkeyPatch,
                                                                     name: str) -> None:
    """A tenant admin names its keys: ``ci[/]`` crashed the master's `keys list` (rich's MarkupError, a
    traceback), and ``[red]ghost[/red]`` showed as ``ghost``."""
    monkeypatch.setattr(keys, "call", lambda *args, **kwargs: {"object": "list", "data": [{**RECORD, "name": name}]})
    result = CliRunner().invoke(cli, ["keys", "list"])
    assert result.exit_code == 0 and result.exception is None, result.output
    assert name in result.output
