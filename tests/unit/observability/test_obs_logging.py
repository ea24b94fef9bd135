"""Log lines: one JSON object per line, extras as fields, and no secret survives formatting."""

from __future__ import annotations

import io
import logging
import re

import orjson
import pytest

from aigw.config.models import GatewayConfig
from aigw.observability.logging import REDACTED, JsonFormatter, Scrubber, TextFormatter, configure
from aigw.observability.setup import secrets_of


@pytest.fixture
def scrub() -> Scrubber:
    s = Scrubber()
    s.add(["master-key-0123456789", "provider-secret-abcdef", ""])
    return s


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    r = logging.LogRecord("aigw.test", logging.INFO, __file__, 1, msg, args, None)
    r.__dict__.update(extra)
    return r


def test_known_secrets_are_replaced_wherever_they_appear(scrub: Scrubber) -> None:
    line = scrub("upstream said: bad key provider-secret-abcdef (master-key-0123456789)")
    assert "provider-secret-abcdef" not in line and "master-key-0123456789" not in line
    assert line.count(REDACTED) == 2


@pytest.mark.parametrize("text", [
    "Authorization: Bearer abcdefghijklmnop",
    "authorization: bearer abcdefghijklmnop",
    "key sk-proj-ABCDEFGHIJKLMNOPQRST was rejected",
    "GET https://host/v1/models?key=AIzaSyABCDEFGH123",
    "api_key=ABCDEFGHIJ12345 in query",
])
def test_secret_shaped_strings_are_replaced_even_when_unknown(scrub: Scrubber, text: str) -> None:
    out = scrub(text)
    assert REDACTED in out
    assert "abcdefghijklmnop" not in out and "ABCDEFGHIJKLMNOPQRST" not in out
    assert "AIzaSyABCDEFGH123" not in out and "ABCDEFGHIJ12345" not in out


def test_json_lines_carry_extras_as_top_level_fields(scrub: Scrubber) -> None:
    line = JsonFormatter(scrub).format(record("request %s", "done", request_id="req_1", status=200,
                                              latency_ms=1.5))
    assert "\n" not in line
    data = orjson.loads(line)
    assert data["msg"] == "request done" and data["logger"] == "aigw.test" and data["level"] == "info"
    assert data["request_id"] == "req_1" and data["status"] == 200 and data["latency_ms"] == 1.5
    assert data["ts"].endswith("Z")


def test_exceptions_are_scrubbed_too(scrub: Scrubber) -> None:
    try:
        raise RuntimeError("connect failed for provider-secret-abcdef")
    except RuntimeError:
        import sys

        r = logging.LogRecord("aigw", logging.ERROR, __file__, 1, "boom", None, sys.exc_info())
    for formatter in (JsonFormatter(scrub), TextFormatter(scrub)):
        out = formatter.format(r)
        assert "provider-secret-abcdef" not in out and "RuntimeError" in out


def test_text_lines_show_extras_as_key_value(scrub: Scrubber) -> None:
    line = TextFormatter(scrub).format(record("request", request_id="req_1", status=200, cache=""))
    assert "request_id=req_1" in line and "status=200" in line and "cache=" not in line


def test_configure_picks_the_format_and_level() -> None:
    buf = io.StringIO()
    configure("warning", "json", stream=buf)
    try:
        logging.getLogger("aigw.x").info("hidden")
        logging.getLogger("aigw.x").warning("shown", extra={"k": 1})
        lines = buf.getvalue().splitlines()
        assert len(lines) == 1 and orjson.loads(lines[0])["k"] == 1
    finally:
        logging.getLogger().handlers[:] = []
        logging.getLogger().setLevel(logging.WARNING)


def test_a_keys_short_display_prefix_stays_readable_its_secret_does_not(scrub: Scrubber) -> None:
    line = scrub("key_prefix=sk-aigw-AbCd key=sk-aigw-AbCdEfGhIjKlMnOpQrStUvWxYz012345")
    assert "key_prefix=sk-aigw-AbCd " in line and "EfGhIjKlMnOpQrStUvWxYz012345" not in line


def test_request_lines_read_the_same_through_the_fast_path_and_through_logging() -> None:
    from aigw.observability.logging import log_fields

    fields = {"request_id": "req_1", "status": 200, "key_prefix": "sk-aigw-AbCd", "fallbacks": []}
    fast, slow = io.StringIO(), io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure("info", "json", stream=fast)
        log_fields(logging.getLogger("aigw.request"), logging.WARNING, "request", fields)
        log_fields(logging.getLogger("aigw.request"), logging.DEBUG, "request", fields)  # below the level
        configure("info", "json", stream=slow)
        root.handlers[0].addFilter(lambda r: True)  # a filter: the line takes the LogRecord road
        log_fields(logging.getLogger("aigw.request"), logging.WARNING, "request", fields)
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])
    [a], [b] = fast.getvalue().splitlines(), slow.getvalue().splitlines()
    da, db = orjson.loads(a), orjson.loads(b)
    stamp = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
    assert stamp.match(da.pop("ts")) and stamp.match(db.pop("ts"))
    assert da == db == {"level": "warning", "logger": "aigw.request", "msg": "request", **fields}


def test_passwords_in_the_stores_and_endpoints_urls_are_secrets() -> None:
    # a driver's error (asyncpg's, say) may quote the URL it was given; the password must not reach a log line
    config = GatewayConfig.model_validate({
        "database_url": "postgresql://aigw:pg%40pass-1@127.0.0.1:5432/aigw",
        "redis_url": "redis://:redis-pass-2@127.0.0.1:6379/0",
        "tenancy": {"alert_webhook": "http://hook:hook-pass-3@127.0.0.1:9/alerts"},
    })
    found = secrets_of(config)
    assert {"pg@pass-1", "redis-pass-2", "hook-pass-3"} <= set(found)


def test_a_url_password_is_a_secret_as_written_too() -> None:
    # an error quoting the URL itself (httpx's for the webhook, a DSN in a start-up failure) shows it encoded
    config = GatewayConfig.model_validate({"database_url": "postgresql://aigw:pg%40pass-1@127.0.0.1:5432/aigw"})
    scrub = Scrubber()
    scrub.add(secrets_of(config))
    assert "pg%40pass-1" not in scrub.known("cannot connect to postgresql://aigw:pg%40pass-1@127.0.0.1:5432/aigw")


def test_a_local_default_password_is_not_a_secret_that_blanks_every_log_line() -> None:
    config = GatewayConfig.model_validate({"database_url": "postgresql://postgres:postgres@127.0.0.1:5432/aigw"})
    assert "postgres" not in secrets_of(config)  # else "postgresql://" and "store postgres" became [REDACTED]


def test_a_text_line_cannot_be_forged_or_split_by_a_field_a_client_chose(scrub: Scrubber) -> None:
    """The model name is the client's text: with a newline in it the text format (the default) wrote a second,
    made-up line (here a request from another tenant), and with a space a made-up field in the same line."""
    model = "gpt\n2026-01-01 00:00:00,000 INFO aigw.request: request tenant_id=t_victim status=200"
    line = TextFormatter(scrub).format(record("request", request_id="req_1", model=model, tenant_id="t_1",
                                              served_model="a tenant_id=t_victim"))
    assert "\n" not in line and "\r" not in line
    fields = re.findall(r' (\w+)=("(?:[^"\\]|\\.)*"|\S*)', line.partition(": request")[2])
    assert [v for k, v in fields if k == "tenant_id"] == ["t_1"]
    assert orjson.loads(dict(fields)["model"]) == model
    assert 'served_model="a tenant_id=t_victim"' in line and "request_id=req_1" in line


def test_asyncpg_pool_reconnect_failures_are_one_line_not_a_traceback_each() -> None:
    # during a PostgreSQL outage asyncpg's pool logs a warning with a full traceback at every reconnect attempt
    buf = io.StringIO()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        configure("info", "text", stream=buf)
        try:
            raise ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")
        except ConnectionRefusedError:
            logging.getLogger("asyncpg.pool").warning("Failed to restore the pool connection floor; retrying",
                                                      exc_info=True)
    finally:
        root.handlers[:], root.level = handlers, level
    lines = buf.getvalue().strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in buf.getvalue()
    assert "Failed to restore the pool connection floor; retrying: ConnectionRefusedError" in lines[0]
    assert "5432" in lines[0]
