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


def test_config_check_finds_what_only_building_the_app_finds(tmp_path: Path) -> None:
    """A guardrails rule is compiled when the app is built: ``serve`` refused it and ``config check`` said ok."""
    path = tmp_path / "rules.yaml"
    path.write_text(f"database_url: sqlite:///{tmp_path}/x.db\n"
                    "guardrails:\n  rules: [{match: {regex: x}, respond: y, colour: red}]\n")
    result = CliRunner().invoke(cli, ["config", "check", str(path)])
    assert result.exit_code == 2
    assert result.output.strip() == f"{path}: guardrails.rules[0].colour: unknown key 'colour'"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["rules.yaml"]  # checked, nothing opened or made


def test_serve_refuses_public_bind_without_master_key() -> None:
    result = CliRunner().invoke(cli, ["serve", "--host", "0.0.0.0", "--port", "0"])
    assert result.exit_code == 2 and "without a master key" in result.output


def test_serve_with_bad_config_does_not_start(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("nonsense: true\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(path)])
    assert result.exit_code == 2 and "nonsense" in result.output


@pytest.mark.parametrize(("args", "option"), [(["--port", "99999"], "--port"), (["--port", "-1"], "--port"),
                                               (["--workers", "0"], "--workers"), (["--workers", "65"], "--workers"),
                                               (["--host", "0.0.0.0:4000"], "--host")])
def test_a_bad_serve_option_is_blamed_on_the_option_not_the_config_file(tmp_path: Path, args: list[str],
                                                                       option: str) -> None:
    """`aigw serve --config ok.yaml --port 99999` said "ok.yaml: invalid configuration  server.port: ...": the
    operator looked for a port in a file that has none."""
    path = tmp_path / "ok.yaml"
    path.write_text(f"database_url: sqlite:///{tmp_path}/x.db\n")
    result = CliRunner().invoke(cli, ["serve", "--config", str(path), *args])
    assert result.exit_code == 2
    assert f"Invalid value for '{option}'" in result.output and "invalid configuration" not in result.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ok.yaml"]  # nothing started


@pytest.mark.parametrize("command", [["serve", "--config"], ["db", "upgrade", "--config"], ["config", "check"]])
def test_a_config_that_is_not_utf8_is_refused_without_a_traceback(tmp_path: Path, command: list[str]) -> None:
    path = tmp_path / "latin.yaml"
    path.write_bytes("server:\n  master_key: café\n".encode("latin-1"))
    result = CliRunner().invoke(cli, [*command, str(path)])
    assert result.exit_code == 2 and "Traceback" not in result.output, (result.output, result.exc_info)
    assert result.output.startswith(f"{path}:2:18: not UTF-8 text (byte 0xe9)"), result.output


def test_config_check_refuses_a_public_bind_without_a_master_key_as_serve_does(tmp_path: Path) -> None:
    """`config check` said ok for `host: 0.0.0.0` without a master key, and `aigw serve` then refused to start."""
    path = tmp_path / "public.yaml"
    path.write_text(f"database_url: sqlite:///{tmp_path}/x.db\nserver: {{host: 0.0.0.0}}\n")
    check = CliRunner().invoke(cli, ["config", "check", str(path)])
    serve = CliRunner().invoke(cli, ["serve", "--config", str(path)])
    assert check.exit_code == serve.exit_code == 2
    assert check.output == f"{path}: {serve.output}"
    assert "refusing to listen on 0.0.0.0 without a master key" in serve.output
    for fix in ("server: {host: 0.0.0.0, insecure: true}", "server: {host: 0.0.0.0, master_key: k}"):
        path.write_text(f"database_url: sqlite:///{tmp_path}/x.db\n{fix}\n")
        assert CliRunner().invoke(cli, ["config", "check", str(path)]).exit_code == 0


def test_a_config_named_by_aigw_config_is_named_in_serves_errors(tmp_path: Path) -> None:
    """With the file given by AIGW_CONFIG (a container's usual way), a mistake only building finds was blamed on
    "(defaults)", telling the operator no file had been read."""
    path = tmp_path / "rules.yaml"
    path.write_text(f"database_url: sqlite:///{tmp_path}/x.db\n"
                    "guardrails:\n  rules: [{match: {regex: x}, respond: y, colour: red}]\n")
    result = CliRunner().invoke(cli, ["serve"], env={"AIGW_CONFIG": str(path)})
    assert result.exit_code == 2 and result.output == f"{path}: guardrails.rules[0].colour: unknown key 'colour'\n"
