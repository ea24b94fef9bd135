"""The admin commands as an operator runs them: the real `aigw` entry point against a gateway on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.tenancy_support import MASTER, gateway_config
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.serve_process import CLEARED

AIGW = str(Path(sys.executable).parent / "aigw")


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(gateway_config(tmp_path_factory.mktemp("cli-admin") / "gw.db")) as g:
        yield g


def aigw(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(CLEARED)}
    return subprocess.run([AIGW, *args], env={**clean, **env}, capture_output=True, text=True, timeout=60)


def _error_line(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr, (proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_a_missing_or_wrong_master_key_says_which_setting_to_fix(gw: RunningGateway) -> None:
    """The 401 told a CLI user to "send 'Authorization: Bearer <key>'", a header the CLI sends for them, and
    never named the option or variable the key comes from."""
    line = _error_line(aigw("tenants", "list", AIGW_URL=gw.url))
    assert "no admin key was sent: set --master-key or AIGW_MASTER_KEY" in line and "(HTTP 401)" in line, line
    line = _error_line(aigw("keys", "list", AIGW_URL=gw.url, AIGW_MASTER_KEY="sk-wrong"))
    assert "check --master-key or AIGW_MASTER_KEY" in line and "sk-wrong" not in line, line
    assert aigw("tenants", "list", AIGW_URL=gw.url, AIGW_MASTER_KEY=MASTER).returncode == 0


@pytest.mark.parametrize("extra", [[], ["--json"], ["--tenant", "acme"]])
def test_cache_purge_on_a_gateway_without_a_cache_says_so(gw: RunningGateway, extra: list[str]) -> None:
    """It said "error: Unknown endpoint DELETE /admin/cache. (HTTP 404)", as if the CLI and gateway did not match."""
    line = _error_line(aigw("cache", "purge", *extra, AIGW_URL=gw.url, AIGW_MASTER_KEY=MASTER))
    assert "has no response cache" in line and "cache:" in line and "Unknown endpoint" not in line, line


@pytest.mark.parametrize("args", [["tenants", "list"], ["projects", "create", "p", "--tenant", "t"],
                                  ["keys", "revoke", "key_x"], ["spend", "--json"]])
def test_an_admin_command_on_a_gateway_with_tenancy_off_says_so(tmp_path: Path, args: list[str]) -> None:
    """Every tenancy command said "Unknown endpoint GET /admin/tenants. (HTTP 404)", as if CLI and gateway did
    not match, when the gateway ran with `tenancy: {enabled: false}`."""
    with running_gateway(gateway_config(tmp_path / "gw.db", tenancy={"enabled": False})) as off:
        line = _error_line(aigw(*args, AIGW_URL=off.url, AIGW_MASTER_KEY=MASTER))
    assert "has tenancy switched off (tenancy.enabled: false" in line and "Unknown endpoint" not in line, line
