"""`aigw keys ...` as a platform admin runs it, against a gateway on loopback: what each flag stores."""

from __future__ import annotations

import os
import pty
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from aigw.cli.admin_client import AdminClient
from aigw.stores.keygen import hash_secret
from tests.integration.tenancy_support import MASTER, cli_json, gateway_config, run_cli
from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture(scope="module")
def db_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("cli-keys") / "gw.db"


@pytest.fixture(scope="module")
def gw(db_path: Path) -> Iterator[RunningGateway]:
    with running_gateway(gateway_config(db_path)) as g:
        yield g


@pytest.fixture(scope="module")
def project(gw: RunningGateway) -> str:
    admin = AdminClient(gw.url, MASTER)
    tenant = admin.post("/admin/tenants", {"name": "cli-keys"})
    return str(admin.post("/admin/projects", {"name": "web", "tenant": tenant["id"]})["id"])


def test_an_iso_basic_date_is_a_date_not_epoch_seconds(gw: RunningGateway, project: str) -> None:
    """``--expires 20301231`` (ISO 8601's basic format) was sent as the number 20301231, epoch seconds: a day in
    1970. ``keys create`` said "expires_at is in the past"; ``keys update`` ended the key at once, and exited 0."""
    made = cli_json(gw, "keys", "create", "--project", project, "--expires", "20301231")
    assert (made["expires_at"], made["status"]) == ("2030-12-31T00:00:00Z", "active")
    other = cli_json(gw, "keys", "create", "--project", project)
    changed = cli_json(gw, "keys", "update", other["id"], "--expires", "20301231")
    assert (changed["expires_at"], changed["status"]) == ("2030-12-31T00:00:00Z", "active")
    assert cli_json(gw, "keys", "create", "--project", project, "--expires", "1924991999")["expires_at"] == \
        "2030-12-31T23:59:59Z"  # epoch seconds are still read as such


def _refusals(gw: RunningGateway, secret: str, model: str = "mock") -> list[tuple[str, int, str]]:
    """What the OpenAI SDK and the Anthropic SDK each get for one call with ``secret``: (class, status, type)."""
    out: list[tuple[str, int, str]] = []
    oai = openai.OpenAI(base_url=gw.v1, api_key=secret, max_retries=0)
    try:
        oai.chat.completions.create(model=model, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        out.append(("ok", 200, ""))
    except openai.APIStatusError as exc:
        out.append((type(exc).__name__, exc.status_code, exc.body["type"] if isinstance(exc.body, dict) else ""))
    ant = anthropic.Anthropic(base_url=gw.url, api_key=secret, max_retries=0)
    try:
        ant.messages.create(model=model, max_tokens=5, messages=[{"role": "user", "content": "hi"}])
        out.append(("ok", 200, ""))
    except anthropic.APIStatusError as exc:
        body = exc.body if isinstance(exc.body, dict) else {}
        out.append((type(exc).__name__, exc.status_code, body.get("error", {}).get("type", "")))
    return out


OK = [("ok", 200, "")] * 2
UNAUTHORIZED = [("AuthenticationError", 401, "authentication_error")] * 2


@pytest.mark.parametrize("change", [["revoke"], ["update", "--disable"], ["update", "--expires", "2020-01-01"],
                                    ["rotate"]], ids=" ".join)
def test_a_key_the_cli_ends_gets_401_in_each_sdks_wire_format(gw: RunningGateway, project: str,
                                                              change: list[str]) -> None:
    made = cli_json(gw, "keys", "create", "--project", project)
    assert _refusals(gw, made["key"]) == OK
    verb, *flags = change
    after = cli_json(gw, "keys", verb, made["id"], *flags)
    assert "key" not in after or after["key"] != made["key"]
    assert _refusals(gw, made["key"]) == UNAUTHORIZED
    if verb == "rotate":  # the new secret works at once, the old one never again
        assert _refusals(gw, after["key"]) == OK


def test_a_key_limited_to_models_is_refused_another_in_each_sdks_wire_format(gw: RunningGateway,
                                                                            project: str) -> None:
    made = cli_json(gw, "keys", "create", "--project", project, "--models", "mock")
    assert _refusals(gw, made["key"]) == OK
    assert _refusals(gw, made["key"], "mock-large") == [("PermissionDeniedError", 403, "permission_error")] * 2


def test_the_secret_is_shown_once_and_stored_only_as_its_hash(gw: RunningGateway, project: str,
                                                               db_path: Path) -> None:
    made = cli_json(gw, "keys", "create", "--project", project, "--name", "once")
    assert made["key"].startswith("sk-aigw-") and made["prefix"] == made["key"][:12]
    for args in (["keys", "show", made["id"]], ["keys", "list", "--project", project]):
        assert made["key"] not in run_cli(gw, *args).output and made["key"] not in run_cli(gw, *args, "--json").output
    stored = b"".join(p.read_bytes() for p in db_path.parent.glob(db_path.name + "*") if p.is_file())
    assert made["key"].encode() not in stored and hash_secret(made["key"]).encode() in stored


def _on_a_terminal(gw: RunningGateway, columns: int, *args: str) -> str:
    """What ``aigw ARGS`` prints on a terminal ``columns`` wide (a pseudo-terminal: the CLI sees a TTY)."""
    main, child = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIGW_")}
    env.update(AIGW_URL=gw.url, AIGW_MASTER_KEY=MASTER, COLUMNS=str(columns), LINES="50", TERM="xterm")
    proc = subprocess.Popen([sys.executable, "-m", "aigw", *args], stdin=subprocess.DEVNULL, stdout=child,
                            stderr=child, env=env)
    os.close(child)
    out = b""
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        out += chunk
    os.close(main)
    assert proc.wait(timeout=30) == 0, out
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.decode())  # without colours


@pytest.mark.parametrize("columns", [80, 120])
def test_on_a_usual_terminal_the_keys_table_shows_whole_ids_and_states(gw: RunningGateway, project: str,
                                                                       columns: int) -> None:
    """On a terminal under ~200 columns the 15-column table squeezed every cell: `key_…`, `sk-…`, `prj…`, `ac…`,
    so no id could be read or copied from `aigw keys list`, nor the secret from `keys create`'s table."""
    made = cli_json(gw, "keys", "create", "--project", project, "--name", "wide", "--rpm", "7")
    listed = _on_a_terminal(gw, columns, "keys", "list", "--project", project)
    assert made["id"] in listed and made["prefix"] in listed and project in listed, listed
    assert "…" not in listed and "active" in listed, listed
    assert all(len(line) <= columns for line in listed.splitlines()), listed
    created = _on_a_terminal(gw, columns, "keys", "create", "--project", project)
    assert "…" not in created and re.search(r"key_[0-9a-f]{16}", created), created


def test_piped_the_keys_table_grows_rather_than_cutting_a_cell(gw: RunningGateway, project: str) -> None:
    """Piped, the table was 250 columns at most: a key with a long name squeezed the ids beside it to `key_…`."""
    made = cli_json(gw, "keys", "create", "--project", project, "--name", "n" * 150)
    listed = run_cli(gw, "keys", "list", "--project", project).stdout
    assert made["id"] in listed and "n" * 150 in listed and "…" not in listed, listed
    created = run_cli(gw, "keys", "create", "--project", project, "--name", "m" * 150)
    secret = created.stderr.split("key: ")[1].split()[0]
    assert secret in created.stdout and "…" not in created.stdout, created.stdout  # the table's "key" column


def test_updating_a_revoked_keys_limits_is_an_error_and_changes_nothing(gw: RunningGateway, project: str) -> None:
    """`keys update KEY --rpm 5` on a revoked key printed the key with its new rpm and exited 0: limits no call can
    ever use, and no word that the key is revoked."""
    made = cli_json(gw, "keys", "create", "--project", project, "--rpm", "10")
    cli_json(gw, "keys", "revoke", made["id"])
    result = run_cli(gw, "keys", "update", made["id"], "--rpm", "5", "--models", "mock")
    assert result.exit_code == 1, result.output
    assert "revoked" in result.stderr and "HTTP 400" in result.stderr, result.stderr
    assert cli_json(gw, "keys", "show", made["id"])["rpm"] == 10
    renamed = cli_json(gw, "keys", "update", made["id"], "--name", "old")  # a revoked key's name may still change
    assert (renamed["name"], renamed["status"]) == ("old", "revoked")


def test_a_model_named_twice_is_stored_once(gw: RunningGateway, project: str) -> None:
    made = cli_json(gw, "keys", "create", "--project", project, "--models", "mock,mock-large,mock")
    assert made["models"] == ["mock", "mock-large"]
    assert cli_json(gw, "keys", "update", made["id"], "--models", "mock-large,mock-large")["models"] == ["mock-large"]
