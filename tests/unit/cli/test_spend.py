"""`aigw spend`: the table an operator adds up."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import pytest
from click.testing import CliRunner

from aigw.cli import spend
from aigw.cli.main import cli

ROWS = [{"key": f"key_{i}", "key_prefix": "sk-aigw-x", "key_name": None, "requests": 1, "errors": 0, "cache_hits": 0,
         "prompt_tokens": 1, "completion_tokens": 1, "cached_tokens": 0, "reasoning_tokens": 0,
         "cost_usd": 4e-07, "cost_saved_usd": 0.0} for i in range(3)]
REPORT = {"object": "spend_report", "group_by": "key", "since": None, "until": None, "total_cost_usd": 1.2e-06,
          "has_more": False, "data": ROWS}


def test_the_rows_add_up_to_the_total(monkeypatch: pytest.MonkeyPatch) -> None:
    """Six decimals showed three $0.0000004 rows as 0 under a total of $0.000001: nine (nano-dollars) add up."""
    monkeypatch.setattr(spend, "call", lambda *args, **kwargs: REPORT)
    result = CliRunner().invoke(cli, ["spend", "--url", "http://127.0.0.1:9", "--master-key", "x"])
    assert result.exit_code == 0, result.output
    assert result.output.count("0.000000400") == 3
    assert "total: $0.000001200" in result.output
    as_json = CliRunner().invoke(cli, ["spend", "--json", "--url", "http://127.0.0.1:9", "--master-key", "x"])
    assert json.loads(as_json.output) == REPORT  # --json unchanged: the API's numbers


def test_projects_are_named_in_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    row: dict[str, Any] = {**ROWS[0], "project": "prj_1", "project_name": "search"}
    monkeypatch.setattr(spend, "call", lambda *args, **kwargs: {**REPORT, "group_by": "project", "data": [row]})
    result = CliRunner().invoke(cli, ["spend", "--group-by", "project", "--url", "http://127.0.0.1:9",
                                      "--master-key", "x"])
    assert result.exit_code == 0 and "project_name" in result.output and "search" in result.output


def test_a_total_past_nine_million_dollars_is_shown_to_the_nano(monkeypatch: pytest.MonkeyPatch) -> None:
    """The total is printed from the report's integer ``total_cost_nano``: from the float dollars it was 2 nanos off."""
    nanos = [12_345_678_901_234_567, 9_007_199_254_740_993]
    rows = [{**row, "cost_usd": n / 1e9, "cost_nano": n} for row, n in zip(ROWS, nanos, strict=False)]
    report = {**REPORT, "data": rows, "total_cost_usd": sum(nanos) / 1e9, "total_cost_nano": sum(nanos)}
    monkeypatch.setattr(spend, "call", lambda *args, **kwargs: report)
    result = CliRunner().invoke(cli, ["spend", "--url", "http://127.0.0.1:9", "--master-key", "x"])
    assert result.exit_code == 0, result.output
    assert "12345678.901234567" in result.output and "9007199.254740993" in result.output
    assert "total: $21352878.155975560" in result.output


CSV = "key,requests,cost_usd\r\nkey_a,1,3.000000000\r\nkey_b,1,2.000000000\r\n"


@pytest.fixture
def csv_gateway() -> Iterator[tuple[str, list[str], dict[str, str]]]:
    """A stand-in for the gateway's CSV report: answers ``CSV`` with the headers in the dict it yields (which a
    test sets), and keeps each path asked for."""
    paths: list[str] = []
    headers: dict[str, str] = {}

    class Gateway(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            paths.append(self.path)
            body = CSV.encode()
            self.send_response(200)
            self.send_header("content-type", "text/csv; charset=utf-8")
            self.send_header("content-length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Gateway)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", paths, headers
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_a_csv_cut_short_is_the_file_on_stdout_and_a_warning_on_stderr(
        csv_gateway: tuple[str, list[str], dict[str, str]]) -> None:
    url, paths, headers = csv_gateway
    headers.update({"X-Aigw-Has-More": "true", "X-Aigw-Total-Cost-Nano": "6000000007"})
    result = CliRunner().invoke(cli, ["spend", "--csv", "--limit", "2", "--model", "gpt-4o", "--url", url,
                                      "--master-key", "x"])
    assert result.exit_code == 0, result.output
    assert result.stdout_bytes == CSV.encode()  # the file alone: `aigw spend --csv > bill.csv` stays a clean CSV
    assert "more rows than the CSV holds" in result.stderr and "$6.000000007" in result.stderr
    assert "--limit" in result.stderr
    assert paths == ["/admin/spend?group_by=key&model=gpt-4o&limit=2&format=csv"]


def test_a_whole_csv_has_no_warning(csv_gateway: tuple[str, list[str], dict[str, str]]) -> None:
    url, _, headers = csv_gateway
    headers.update({"X-Aigw-Has-More": "false", "X-Aigw-Total-Cost-Nano": "5000000000"})
    result = CliRunner().invoke(cli, ["spend", "--csv", "--url", url, "--master-key", "x"])
    assert result.exit_code == 0 and result.stdout_bytes == CSV.encode() and result.stderr == ""


def test_the_model_filter_is_sent(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(spend, "call", lambda *args, **kwargs: sent.append(kwargs["query"]) or REPORT)
    result = CliRunner().invoke(cli, ["spend", "--group-by", "day", "--model", "gpt-4o", "--url",
                                      "http://127.0.0.1:9", "--master-key", "x"])
    assert result.exit_code == 0, result.output
    assert sent[0]["model"] == "gpt-4o" and sent[0]["group_by"] == "day"


def test_the_table_shows_cache_writes_beside_cache_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Anthropic bills a cache write at 1.25x (or 2x) input: a bill that showed prompt and cached tokens but not
    the writes could not be read back to its cost. The report has them (``cache_write_tokens``); so has the table."""
    row = {**ROWS[0], "model": "claude", "prompt_tokens": 7100, "cached_tokens": 5000, "cache_write_tokens": 2000}
    monkeypatch.setattr(spend, "call", lambda *args, **kwargs: {**REPORT, "group_by": "model", "data": [row]})
    result = CliRunner().invoke(cli, ["spend", "--group-by", "model", "--url", "http://127.0.0.1:9",
                                      "--master-key", "x"])
    assert result.exit_code == 0, result.output
    header = next(line for line in result.output.splitlines() if "cached_tokens" in line)
    assert "cache_write_tokens" in header
    line = next(line for line in result.output.splitlines() if "claude" in line)
    cells = [c.strip() for c in line.strip("│┃ ").split("│")]
    names = [c.strip() for c in header.strip("│┃ ").split("┃")]
    assert dict(zip(names, cells, strict=True))["cache_write_tokens"] == "2000"
