"""`aigw db status|upgrade`: pending migrations are reported, applied once, then up to date."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from aigw.cli.main import cli


def test_db_upgrade_applies_pending_migrations_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    runner = CliRunner()
    status = runner.invoke(cli, ["db", "status", "--database-url", url])
    assert status.exit_code == 1 and "pending migrations [1, 2, 3, 4]" in status.output
    first = runner.invoke(cli, ["db", "upgrade", "--database-url", url])
    assert first.exit_code == 0 and "applied migrations [1, 2, 3, 4]" in first.output
    again = runner.invoke(cli, ["db", "upgrade", "--database-url", url])
    assert again.exit_code == 0 and "up to date" in again.output
    assert runner.invoke(cli, ["db", "status", "--database-url", url]).exit_code == 0


def test_db_upgrade_names_an_unusable_url() -> None:
    result = CliRunner().invoke(cli, ["db", "upgrade", "--database-url", "mysql://x"])
    assert result.exit_code == 1 and "database_url must start with sqlite: or postgresql:" in result.output


def test_db_status_names_an_unusable_database_in_one_line(tmp_path: Path) -> None:
    for url in ("mysql://x", f"sqlite:///{tmp_path / 'no' / 'such' / 'dir.db'}"):
        result = CliRunner().invoke(cli, ["db", "status", "--database-url", url])
        assert result.exit_code == 2, (url, result.output, result.exc_info)
        assert result.output.startswith("error: cannot read the database:") and "Traceback" not in result.output


def test_db_commands_name_the_database_and_status_makes_none(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """With the default relative database_url, `aigw db upgrade` run from another directory made a fresh aigw.db
    there and said "applied migrations [1, 2, 3, 4]" without saying where; `db status` created the file it read."""
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    status = runner.invoke(cli, ["db", "status", "--database-url", "sqlite:///aigw.db"])
    assert status.exit_code == 1 and "pending migrations [1, 2, 3, 4]" in status.output
    assert f"{tmp_path / 'aigw.db'}" in status.output and "no database yet" in status.output
    assert list(tmp_path.iterdir()) == []  # status reads: it made nothing
    first = runner.invoke(cli, ["db", "upgrade", "--database-url", "sqlite:///aigw.db"])
    assert first.exit_code == 0 and first.output.strip() == f"{tmp_path / 'aigw.db'}: applied migrations [1, 2, 3, 4]"
    again = runner.invoke(cli, ["db", "status", "--database-url", "sqlite:///aigw.db"])
    assert again.exit_code == 0 and again.output.strip() == f"{tmp_path / 'aigw.db'}: database is up to date"


def test_a_database_url_is_named_without_its_password() -> None:
    result = CliRunner().invoke(cli, ["db", "upgrade", "--database-url", "postgresql://aigw:hunter2@127.0.0.1:1/db"])
    assert result.exit_code == 1 and "postgresql://aigw:***@127.0.0.1:1/db" in result.output
    assert "hunter2" not in result.output and "Traceback" not in result.output
