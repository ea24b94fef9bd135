"""`aigw serve --workers N`: what the parent hands its worker processes."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from aigw.cli import serve_workers
from aigw.cli.main import cli
from aigw.config.load import load_config

HANDED = ("AIGW_CONFIG", "AIGW_MASTER_KEY", "AIGW_SERVER_HOST", "AIGW_SERVER_PORT", "AIGW_SERVER_WORKERS",
          "AIGW_SERVER_INSECURE", "PROMETHEUS_MULTIPROC_DIR", "AIGW_PURGE_LOG", "AIGW_COUNTER_SOCKET")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in HANDED:  # set, then deleted: whatever serve exports is undone after the test
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)


def test_workers_from_the_command_line_reach_the_workers_config(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker rebuilds its config from the environment; it must see --workers N, or it thinks it runs alone
    (and, without redis_url, never warns that limits and budgets apply per worker)."""
    config = tmp_path / "aigw.yaml"
    config.write_text(f"database_url: sqlite:///{tmp_path}/aigw.db\nmodels:\n  - {{name: mock, provider: mock}}\n")
    seen: dict[str, Any] = {}

    def fake_serve_workers(host: str, port: int, workers: int, *args: Any, **kwargs: Any) -> int:
        seen["parent"] = workers
        seen["worker"] = load_config().server.workers  # what a spawned worker's load_config() reads
        return 0

    monkeypatch.setattr(serve_workers, "serve_workers", fake_serve_workers)
    result = CliRunner().invoke(cli, ["serve", "--config", str(config), "--port", "0", "--workers", "3"])
    assert result.exit_code == 0, result.output
    assert seen == {"parent": 3, "worker": 3}
    assert os.environ.get("AIGW_SERVER_WORKERS") == "3"


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_port_in_use_exits_3_with_a_reason_and_never_says_listening(tmp_path: Path, workers: str) -> None:
    """A second `aigw serve` on a taken port said "aigw listening on ..." and then died in a traceback (exit 1)."""
    config = tmp_path / "aigw.yaml"
    config.write_text(f"database_url: sqlite:///{tmp_path}/aigw.db\nmodels:\n  - {{name: mock, provider: mock}}\n")
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = str(taken.getsockname()[1])
    try:
        result = CliRunner().invoke(cli, ["serve", "--config", str(config), "--port", port, "--workers", workers])
    finally:
        taken.close()
    assert result.exit_code == 3, result.output
    assert f"aigw: cannot listen on 127.0.0.1:{port}: address already in use" in result.output
    assert "choose another --port" in result.output
    assert "listening" not in result.output and "Traceback" not in result.output
