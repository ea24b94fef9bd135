"""The admin commands with a gateway URL that is wrong, or answers wrong: one line of error, exit 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from click.testing import CliRunner, Result

from aigw.cli.main import cli
from tests.support.servers import free_port

BAD_URLS = [
    ("notaurl", "not an http(s) URL"),
    ("127.0.0.1:4000", "not an http(s) URL"),
    ("ftp://127.0.0.1/", "not an http(s) URL"),
    ("file:///etc/passwd", "not an http(s) URL"),
    ("http://", "no host"),
    ("http://127.0.0.1:notaport", "port"),
    ("http://127.0.0.1:99999", "port"),
    ("http://[::1", "IPv6"),
    ("http://exa mple.com", "space"),
]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIGW_URL", raising=False)
    monkeypatch.delenv("AIGW_MASTER_KEY", raising=False)


def _one_line_error(result: Result) -> str:
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), (result.output, result.exc_info)
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize(("url", "says"), BAD_URLS)
def test_a_bad_gateway_url_is_one_line_of_error(url: str, says: str) -> None:
    line = _one_line_error(CliRunner().invoke(cli, ["tenants", "list"], env={"AIGW_URL": url}))
    assert says in line and "AIGW_URL" in line and "--url" in line
    line = _one_line_error(CliRunner().invoke(cli, ["tenants", "show", "a", "--url", url]))
    assert says in line


@pytest.fixture
def not_json() -> Iterator[str]:
    """A web server that is not the gateway: every GET gets a 200 HTML page."""

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = b"<html><body>hello</body></html>"
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with _serving(Page) as url:
        yield url


def test_an_answer_that_is_not_json_is_one_line_of_error(not_json: str) -> None:
    line = _one_line_error(CliRunner().invoke(cli, ["tenants", "list", "--url", not_json]))
    assert "not JSON" in line and not_json in line


def test_the_aigw_command_prints_no_traceback_for_a_bad_or_absent_gateway() -> None:
    refused = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for url, says in (("notaurl", "not an http(s) URL"), (refused, "cannot reach the gateway")):
        proc = subprocess.run([sys.executable, "-c", "from aigw.cli.main import main; main()", "tenants", "list"],
                              env={**os.environ, "AIGW_URL": url}, capture_output=True, text=True, timeout=60)
        assert proc.returncode == 1 and proc.stdout == "", (proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1 and says in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", [
    ["cache", "purge", "--tenant", ""],
    ["cache", "purge", "--tenant", "  "],
    ["cache", "purge", "--model", ""],
    ["spend", "--tenant", ""],
    ["spend", "--project", ""],
    ["spend", "--key", " "],
    ["spend", "--model", ""],
    ["keys", "list", "--project", ""],
    ["keys", "list", "--tenant", ""],
    ["projects", "list", "--tenant", ""],
])
def test_an_empty_id_or_name_is_refused_before_any_call(not_json: str, args: list[str]) -> None:
    """``--tenant "$T"`` with T unset must not purge (or report) every tenant: the option is refused, nothing sent
    (``not_json`` would answer any call with a page that is not JSON: a different error)."""
    result = CliRunner().invoke(cli, [*args, "--url", not_json])
    assert result.exit_code == 2 and "empty" in result.output and "not JSON" not in result.output, result.output



@pytest.mark.parametrize("args", [
    ["keys", "create", "--project", "p", "--expires", ""],
    ["keys", "create", "--project", "p", "--expires", " "],
    ["keys", "update", "key_x", "--expires", ""],
])
def test_an_empty_expiry_is_refused_not_read_as_none(not_json: str, args: list[str]) -> None:
    """``keys create --expires "$UNTIL"`` with UNTIL unset made a key that never expires, and exited 0; ``keys update
    --expires ""`` changed nothing and exited 0 (``--clear expires`` removes an expiry)."""
    result = CliRunner().invoke(cli, [*args, "--url", not_json])
    assert result.exit_code == 2 and "empty" in result.output and "not JSON" not in result.output, result.output

@contextmanager
def _serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """``handler`` on a loopback port in a thread of its own, for as long as the block runs; its URL."""
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def recording() -> Iterator[tuple[str, list[tuple[str, str, Any]]]]:
    """A gateway stand-in that answers every call ``{}`` and keeps (method, path, JSON body) of each."""
    calls: list[tuple[str, str, Any]] = []

    class Gateway(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            size = int(self.headers.get("content-length") or 0)
            calls.append((self.command, self.path, json.loads(self.rfile.read(size)) if size else None))
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

        do_GET = do_PATCH = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    with _serving(Gateway) as url:
        yield url, calls


def test_update_clear_sends_null_which_removes_a_limit(recording: tuple[str, list[tuple[str, str, Any]]]) -> None:
    url, calls = recording
    runner = CliRunner()
    for args in (["keys", "update", "key_1", "--clear", "rpm", "--clear", "expires", "--clear", "models"],
                 ["tenants", "update", "acme", "--clear", "budget", "--clear", "period", "--tpm", "9"],
                 ["projects", "update", "web", "--clear", "max-parallel"]):
        assert runner.invoke(cli, [*args, "--url", url, "--json"]).exit_code == 0
    assert calls == [("PATCH", "/admin/keys/key_1", {"rpm": None, "expires_at": None, "models": None}),
                     ("PATCH", "/admin/tenants/acme", {"tpm": 9, "budget_usd": None, "budget_period": None}),
                     ("PATCH", "/admin/projects/web", {"max_parallel": None})]
    both = runner.invoke(cli, ["keys", "update", "key_1", "--rpm", "5", "--clear", "rpm", "--url", url])
    assert both.exit_code == 2 and "choose one" in both.output and len(calls) == 3  # refused, nothing sent


def test_projects_show_reads_one_project(recording: tuple[str, list[tuple[str, str, Any]]]) -> None:
    url, calls = recording
    assert CliRunner().invoke(cli, ["projects", "show", "web", "--url", url, "--json"]).exit_code == 0
    assert calls == [("GET", "/admin/projects/web", None)]


def test_expires_in_epoch_seconds_is_sent_as_a_number_and_iso_as_text(
        recording: tuple[str, list[tuple[str, str, Any]]]) -> None:
    url, calls = recording
    runner = CliRunner()
    for value in ("1798761600", "2026-12-31T23:59:59Z"):
        result = runner.invoke(cli, ["keys", "update", "key_1", "--expires", value, "--url", url, "--json"])
        assert result.exit_code == 0
    assert [c[2] for c in calls] == [{"expires_at": 1798761600.0}, {"expires_at": "2026-12-31T23:59:59Z"}]


def test_a_keys_metadata_such_as_its_cache_setting_is_sent_as_json(
        recording: tuple[str, list[tuple[str, str, Any]]]) -> None:
    """docs/cache.md's per-key setting lives in the key's metadata, which the CLI could not set."""
    url, calls = recording
    runner = CliRunner()
    setting = '{"cache": {"mode": "off"}}'
    assert runner.invoke(cli, ["keys", "create", "--project", "web", "--metadata", setting, "--url", url,
                               "--json"]).exit_code == 0
    assert runner.invoke(cli, ["keys", "update", "key_1", "--metadata", setting, "--url", url]).exit_code == 0
    assert [(c[0], c[2]["metadata"]) for c in calls] == [("POST", {"cache": {"mode": "off"}}),
                                                         ("PATCH", {"cache": {"mode": "off"}})]
    for bad, says in (("{cache: off}", "not JSON"), ('["cache"]', "a JSON object")):
        result = runner.invoke(cli, ["keys", "create", "--project", "web", "--metadata", bad, "--url", url])
        assert result.exit_code == 2 and says in result.output and len(calls) == 2  # refused, nothing sent


@pytest.mark.parametrize("args", [
    ["tenants", "create", "acme", "--budget", "nan"],
    ["tenants", "update", "acme", "--budget", "inf"],
    ["projects", "create", "web", "--tenant", "acme", "--budget", "1e400"],
    ["keys", "update", "key_1", "--budget", "-inf"],
    ["keys", "rotate", "key_1", "--grace", "nan"],
])
def test_a_number_that_is_not_finite_is_refused_naming_the_option(
        recording: tuple[str, list[tuple[str, str, Any]]], args: list[str]) -> None:
    """``--budget nan`` went out as ``NaN``, which is not JSON: the gateway's answer named no field (a
    "not valid JSON ... at byte 31")."""
    url, calls = recording
    result = CliRunner().invoke(cli, [*args, "--url", url])
    assert result.exit_code == 2 and "not a finite number" in result.output and args[-2] in result.output
    assert calls == []  # refused, nothing sent


def test_an_expiry_or_metadata_that_is_not_finite_is_never_sent_as_json_it_is_not(
        recording: tuple[str, list[tuple[str, str, Any]]]) -> None:
    url, calls = recording
    runner = CliRunner()
    assert runner.invoke(cli, ["keys", "update", "key_1", "--expires", "nan", "--url", url]).exit_code == 0
    assert calls == [("PATCH", "/admin/keys/key_1", {"expires_at": "nan"})]  # text: the gateway names the field
    result = runner.invoke(cli, ["keys", "update", "key_1", "--metadata", '{"a": NaN}', "--url", url])
    assert result.exit_code == 2 and "not JSON" in result.output and len(calls) == 1


@pytest.mark.parametrize("key", ["mk-s\u00e9cret-1", "mk-secret-1\u2603", "mk-secret\r\n-1", "mk-secret-1\x00x"])
def test_a_key_no_header_can_carry_is_one_line_of_error_that_never_shows_it(
        recording: tuple[str, list[tuple[str, str, Any]]], key: str) -> None:
    """Such a key was answered "cannot talk to the gateway (Invalid header value b'Bearer mk-...')" or a latin-1
    codec error: the secret printed, and the fault blamed on the gateway (or sent, in latin-1, to a 401)."""
    url, calls = recording
    line = _one_line_error(CliRunner().invoke(cli, ["tenants", "list", "--url", url, "--master-key", key]))
    assert "secret" not in line and "AIGW_MASTER_KEY" in line and "--master-key" in line
    assert "gateway" not in line and calls == []  # nothing sent


def test_a_key_read_with_its_line_ending_is_sent_without_it(monkeypatch: pytest.MonkeyPatch,
        recording: tuple[str, list[tuple[str, str, Any]]]) -> None:
    """``AIGW_MASTER_KEY=$(cat key.txt)`` of a CRLF file keeps the ``\\r``; the gateway strips its own master key
    (config) and the key it is sent, so the CLI does too, rather than fail with the secret in the error."""
    url, _ = recording
    sent: list[str] = []
    real = urllib.request.Request

    def spy(*args: Any, headers: dict[str, str], **kwargs: Any) -> urllib.request.Request:
        sent.append(headers["authorization"])
        return real(*args, headers=headers, **kwargs)

    monkeypatch.setattr(urllib.request, "Request", spy)
    result = CliRunner().invoke(cli, ["tenants", "list", "--url", url, "--json"], env={"AIGW_MASTER_KEY": " mk-1\r\n"})
    assert result.exit_code == 0 and sent == ["Bearer mk-1"]


@pytest.fixture
def store_down() -> Iterator[tuple[str, list[str]]]:
    """A gateway whose store is away: every call is the admin API's 503 ``store_unavailable``, with a
    ``Retry-After`` of 2 s, bar ``/admin/projects`` (a 503 that says no time). Yields its URL and the calls."""
    calls: list[str] = []

    class Down(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            calls.append(f"{self.command} {self.path}")
            self.rfile.read(int(self.headers.get("content-length") or 0))
            body = json.dumps({"error": {"message": "A store the gateway needs (its database or Redis) cannot be "
                                         "reached right now (ConnectionRefusedError); retry the call in a moment.",
                                         "type": "service_unavailable_error", "param": None,
                                         "code": "store_unavailable"}}).encode()
            self.send_response(503)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            if not self.path.startswith("/admin/projects"):
                self.send_header("retry-after", "2")
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, format: str, *args: object) -> None:
            pass

    with _serving(Down) as url:
        yield url, calls


@pytest.mark.parametrize("args", [["tenants", "list"], ["tenants", "create", "alpha"], ["spend"],
                                  ["spend", "--csv"]])
def test_a_503_with_retry_after_says_when_to_retry_and_the_call_is_made_once(
        store_down: tuple[str, list[str]], args: list[str]) -> None:
    url, calls = store_down
    line = _one_line_error(CliRunner().invoke(cli, [*args, "--url", url]))
    assert "cannot be reached" in line and line.endswith("(HTTP 503; retry in 2 s)"), line
    assert len(calls) == 1  # never retried on its own: a write may have been made


def test_a_503_without_retry_after_names_no_wait(store_down: tuple[str, list[str]]) -> None:
    url, _ = store_down
    line = _one_line_error(CliRunner().invoke(cli, ["projects", "list", "--url", url]))
    assert line.endswith("(HTTP 503)") and "retry in" not in line.split("(HTTP")[1], line


def test_a_url_with_a_path_that_finds_no_admin_api_says_to_use_the_gateways_root() -> None:
    """``AIGW_URL`` set to the SDKs' base URL (``.../v1``) was answered "Unknown endpoint GET /v1/admin/tenants"."""

    class Gateway(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = json.dumps({"error": {"message": f"Unknown endpoint GET {self.path}."}}).encode()
            self.send_response(404)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    with _serving(Gateway) as url:
        line = _one_line_error(CliRunner().invoke(cli, ["tenants", "list", "--url", url + "/v1"]))
        assert "Unknown endpoint" in line and "(HTTP 404)" in line and f"without /v1, e.g. {url}" in line
        line = _one_line_error(CliRunner().invoke(cli, ["tenants", "show", "nope", "--url", url]))
        assert "without" not in line  # the root URL: a 404 is the gateway's own answer
