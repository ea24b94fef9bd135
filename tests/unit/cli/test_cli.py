"""The `aigw` command line: config check and the loopback rule of serve."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from aigw.cli.main import cli


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIGW_MASTER_KEY", raising=False)
    monkeypatch.delenv("AIGW_CONFIG", raising=False)


def test_config_check_accepts_a_good_file(tmp_path: Path) -> None:
    path = tmp_path / "ok.yaml"
    path.write_text("models:\n  - {name: a, provider: mock}\n  - {name: a, provider: mock, weight: 2}\n")
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 0 and "1 models, 2 deployments" in result.output


def test_config_check_names_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("models:\n  - {name: a, provider: mock, weight: -1}\n")
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 2 and "models[0].weight" in result.output


def test_serve_refuses_public_bind_without_master_key() -> None:
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2 and "without a master key" in result.output


def test_serve_with_bad_config_does_not_start(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("nonsense: true\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(path)])
    assert result.exit_code == 2 and "nonsense" in result.output
