"""GET /admin/requests?key_id=: a tenant admin naming another tenant's key gets the same 404 as for a key that
does not exist (never an empty list, which no other admin lookup answers); the master key names any key that
exists, and ``master`` for its own requests."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aigw import errors
from aigw.http.admin_requests import AdminRequests, parse_query
from aigw.http.auth import Authenticator
from aigw.observability.request_log import MemoryRequestLog, RequestLogWriter, RequestRecord, encode_cursor
from aigw.pipeline.context import Principal
from aigw.stores.base import ApiKey, Project, Tenant
from tests.support.asgi_calls import get_with_key
from tests.unit.http.admin_support import admin_api, migrated_db

MASTER = "mk-request-log"
ADMIN_A = "sk-aigw-admin-a"
A, B = "ten_aaaa", "ten_bbbb"


@pytest.fixture
async def endpoint(tmp_path: Path) -> AsyncIterator[AdminRequests]:
    db = await migrated_db(tmp_path)
    for tid, name in ((A, "alpha"), (B, "beta")):
        await db.add_tenant(Tenant(id=tid, name=name))
        await db.add_project(Project(id=f"prj_{name}", tenant_id=tid, name="web"))
        await db.add_key(ApiKey(id=f"key_{name}", tenant_id=tid, project_id=f"prj_{name}",
                                key_hash=f"h-{name}", prefix="sk-aigw-xxxx"))
    store = MemoryRequestLog()
    now = time.time()
    await store.write([RequestRecord("req-a", now, tenant_id=A, key_id="key_alpha"),
                       RequestRecord("req-b", now, tenant_id=B, key_id="key_beta"),
                       RequestRecord("req-m", now, key_id="master")])
    admin_a = Principal(key_id="key_alpha", tenant_id=A, project_id="prj_alpha", is_admin=True)

    async def lookup(presented: str) -> Principal | None:
        return admin_a if presented == ADMIN_A else None

    api = admin_api(db)
    try:
        yield AdminRequests(Authenticator(MASTER, lookup), RequestLogWriter(store, now=time.time), api.key,
                            api.tenant)
    finally:
        await db.close()


async def _list(endpoint: AdminRequests, key: str, key_id: str) -> tuple[int, dict[str, Any]]:
    status, body = await get_with_key(endpoint.list, "/admin/requests", key, f"key_id={key_id}".encode())
    return status, json.loads(body)


def _error(body: dict[str, Any], ident: str) -> tuple[str, str]:
    return body["error"]["code"], body["error"]["message"].replace(ident, "<id>")


async def test_a_tenant_admin_gets_the_same_404_for_another_tenants_key_as_for_a_missing_one(
        endpoint: AdminRequests) -> None:
    other_status, other = await _list(endpoint, ADMIN_A, "key_beta")
    missing_status, missing = await _list(endpoint, ADMIN_A, "key_none")
    assert other_status == missing_status == 404
    assert _error(other, "key_beta") == _error(missing, "key_none") == ("key_not_found", "No key `<id>`.")
    status, _ = await _list(endpoint, ADMIN_A, "master")  # the master key's requests are no tenant's either
    assert status == 404


async def test_a_tenant_admin_filters_by_its_own_tenants_keys(endpoint: AdminRequests) -> None:
    status, body = await _list(endpoint, ADMIN_A, "key_alpha")
    assert status == 200 and [r["request_id"] for r in body["data"]] == ["req-a"]


async def test_the_master_key_names_any_existing_key_and_its_own_but_a_missing_key_is_a_404(
        endpoint: AdminRequests) -> None:
    for key_id, listed in (("key_beta", ["req-b"]), ("master", ["req-m"])):
        status, body = await _list(endpoint, MASTER, key_id)
        assert status == 200 and [r["request_id"] for r in body["data"]] == listed
    status, body = await _list(endpoint, MASTER, "key_none")
    assert status == 404 and body["error"]["code"] == "key_not_found"  # as /admin/spend?key=key_none


class _DownLog(MemoryRequestLog):
    async def query(self, q: Any) -> list[RequestRecord]:
        raise ConnectionRefusedError("the request log's database is down")

    async def get(self, request_id: str, tenant_id: str | None = None) -> RequestRecord | None:
        raise ConnectionRefusedError("the request log's database is down")


@pytest.mark.parametrize("path", ["/admin/requests", "/admin/requests/req-a"])
async def test_a_request_log_that_cannot_be_read_is_a_503_in_the_error_shape_not_a_bare_500(path: str) -> None:
    endpoint = AdminRequests(Authenticator(MASTER), RequestLogWriter(_DownLog(), now=time.time))
    handler = endpoint.list if path == "/admin/requests" else endpoint.get
    status, body = await get_with_key(handler, path, MASTER, b"")
    error = json.loads(body)["error"]
    assert (status, error["code"], error["type"]) == (503, "store_unavailable", "service_unavailable_error")
    assert "cannot be reached" in error["message"] and "retry" in error["message"]


def test_a_time_without_a_zone_is_utc_whatever_the_servers_zone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        q = parse_query({"since": "2026-11-27T10:00:00", "until": "2026-11-27T11:00:00Z"}, "")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert q.since == 1795773600.0 and q.until == 1795777200.0  # 10:00 and 11:00 UTC, not New York's


@pytest.mark.parametrize("raw", ["inf", "nan", "-inf"])
def test_a_time_that_is_not_finite_is_refused(raw: str) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        parse_query({"since": raw}, "")
    assert info.value.param == "since"


@pytest.mark.parametrize("ts", ['"nan"', '"inf"', '"-inf"', '"1e999"'])
def test_a_cursor_whose_time_is_not_finite_is_a_400_not_a_500(ts: str) -> None:
    # float("nan") read it, and the store then failed turning it into a day (ValueError, OverflowError): a
    # 500 and a traceback in the log for a cursor this endpoint never gave out
    raw = base64.urlsafe_b64encode(f'[{ts}, "req_1"]'.encode()).decode().rstrip("=")
    with pytest.raises(errors.InvalidRequest) as info:
        parse_query({"cursor": raw}, "")
    assert info.value.param == "cursor"


def test_a_cursor_given_out_is_read_back() -> None:
    assert parse_query({"cursor": encode_cursor(1795773600.25, "req_1")}, "").cursor == (1795773600.25, "req_1")


@pytest.mark.parametrize(("since", "until"), [("2026-12-01", "2026-11-01"), ("1795773600", "1795773600"),
                                              ("2026-11-27T11:00:00Z", "1795773600")])
def test_a_window_that_ends_before_it_starts_is_a_400_not_an_empty_list(since: str, until: str) -> None:
    # `until` is exclusive: since >= until matches no request, and an empty list read as "nothing happened"
    with pytest.raises(errors.InvalidRequest) as info:
        parse_query({"since": since, "until": until}, "")
    assert info.value.param == "since" and "before `until`" in info.value.message


def test_a_window_in_order_is_read() -> None:
    q = parse_query({"since": "2026-11-27T10:00:00Z", "until": "2026-11-27T10:00:01Z"}, "")
    assert (q.since, q.until) == (1795773600.0, 1795773601.0)


@pytest.mark.parametrize("raw", ["\u00b2", "99999999999999999999999", "4290", "42", "1e3", "\u0664\u0662\u0669"])
def test_a_status_that_is_not_three_ascii_digits_or_a_class_is_a_400(raw: str) -> None:
    # "²" is a digit to isdigit() but not to int() (a ValueError, answered 503), and a number past 64 bits
    # overflowed the SQLite binding (503 too): both are typos, a 400 naming the field
    with pytest.raises(errors.InvalidRequest) as info:
        parse_query({"status": raw}, "")
    assert info.value.param == "status"


def test_a_status_code_or_class_is_read() -> None:
    assert parse_query({"status": "429"}, "").status == 429
    assert parse_query({"status": "5xx"}, "").status_class == 5


@pytest.mark.parametrize("raw", ["nan", "inf"])
def test_a_min_latency_that_is_not_finite_is_refused(raw: str) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        parse_query({"min_latency_ms": raw}, "")
    assert info.value.param == "min_latency_ms"


@pytest.mark.parametrize(("query", "param", "words"), [
    (b"stauts=500", "stauts", "unknown parameter; known: since, until, tenant, key_id, model, status, "
                              "min_latency_ms, limit, cursor"),  # read as absent: every request
    (b"tenant_id=ten_aaaa", "tenant_id", "did you mean `tenant`?"),
    (b"tenant=", "tenant", "empty"),  # an unset shell variable: every tenant's requests
    (b"tenant=alpha&tenant=beta", "tenant", "given twice"),
    (b"key=key_alpha", "key", "did you mean `key_id`?"),
    (b"after=abc", "after", "did you mean `cursor`?"),
    (b"key_id=key_alpha&key_id=key_beta", "key_id", "given twice"),  # the last one won
    (b"model=m&limit=5&model=m", "model", "given twice"),
    (b"key_id=", "key_id", "empty"),  # an unset shell variable: every key's requests
    (b"status=", "status", "empty"),
    (b"since", "since", "empty"),
])
async def test_a_filter_that_would_be_ignored_is_a_400_naming_it(endpoint: AdminRequests, query: bytes,
                                                                 param: str, words: str) -> None:
    status, raw = await get_with_key(endpoint.list, "/admin/requests", MASTER, query)
    error = json.loads(raw)["error"]
    assert (status, error["type"], error["param"]) == (400, "invalid_request_error", param)
    assert error["message"].startswith(f"{param}: ") and words in error["message"], error["message"]


async def test_the_documented_filters_still_narrow_the_list(endpoint: AdminRequests) -> None:
    status, raw = await get_with_key(endpoint.list, "/admin/requests", MASTER,
                                     b"key_id=key_beta&status=2xx&since=0&limit=5")
    assert status == 200 and [r["request_id"] for r in json.loads(raw)["data"]] == ["req-b"]
    status, raw = await get_with_key(endpoint.list, "/admin/requests", MASTER, b"limit=1")
    page = json.loads(raw)
    assert status == 200 and len(page["data"]) == 1 and page["has_more"] and page["next_cursor"]
    status, raw = await get_with_key(endpoint.list, "/admin/requests", MASTER,
                                     b"limit=5&cursor=" + page["next_cursor"].encode())
    assert status == 200 and len(json.loads(raw)["data"]) == 2


@pytest.mark.parametrize(("query", "param"), [
    (b"include=body", "include"),
    (b"key_id=key_alpha", "key_id"),  # a filter of the list: read as absent, it looked applied
    (b"tenant=", "tenant"),
])
async def test_one_request_takes_no_query_parameters_any_is_a_400_naming_it(endpoint: AdminRequests, query: bytes,
                                                                           param: str) -> None:
    status, raw = await get_with_key(endpoint.get, "/admin/requests/req-a", MASTER, query)
    error = json.loads(raw)["error"]
    assert (status, error["type"], error["param"], error["code"]) == (400, "invalid_request_error", param,
                                                                      "unknown_parameter")
    assert error["message"] == f"{param}: unknown parameter; this endpoint takes no query parameters"
    assert "req-a" not in raw.decode()  # the record is not sent with the refusal


async def test_one_request_is_still_found_by_its_id(endpoint: AdminRequests) -> None:
    status, raw = await get_with_key(endpoint.get, "/admin/requests/req-a", MASTER)
    assert status == 200 and json.loads(raw)["request_id"] == "req-a"
    status, raw = await get_with_key(endpoint.get, "/admin/requests/req-b", ADMIN_A)  # another tenant's
    assert status == 404


async def test_a_request_id_with_a_trailing_slash_is_found_as_every_admin_id_is(endpoint: AdminRequests) -> None:
    """``GET /admin/requests/req-a/`` was a 404 "No request `req-a/`" for a request in the log, where
    ``/admin/keys/{id}/`` and the other admin ids are read without it; another tenant's stays a 404."""
    status, body = await get_with_key(endpoint.get, "/admin/requests/req-a/", MASTER, b"")
    assert status == 200 and json.loads(body)["request_id"] == "req-a"
    status, body = await get_with_key(endpoint.get, "/admin/requests/req-b/", ADMIN_A, b"")
    assert status == 404 and "`req-b`" in json.loads(body)["error"]["message"]


async def _ids(endpoint: AdminRequests, key: str, query: bytes) -> tuple[int, Any]:
    status, raw = await get_with_key(endpoint.list, "/admin/requests", key, query)
    body = json.loads(raw)
    return status, [r["request_id"] for r in body["data"]] if status == 200 else body["error"]


async def test_the_master_key_lists_one_tenants_requests_by_id_or_name(endpoint: AdminRequests) -> None:
    """``tenant=`` narrows the request log as it does the spend report; before, it was an unknown parameter and
    the master key could read one tenant's requests only key by key."""
    for ident in (b"beta", B.encode()):
        assert await _ids(endpoint, MASTER, b"tenant=" + ident) == (200, ["req-b"])
    assert await _ids(endpoint, MASTER, b"tenant=alpha&key_id=key_alpha") == (200, ["req-a"])
    status, error = await _ids(endpoint, MASTER, b"tenant=gamma")
    assert (status, error["code"]) == (404, "tenant_not_found")
    # a key of another tenant than the one named, or the master key's own calls (no tenant's): a 404, as on
    # /admin/spend, never an empty list that looks like "no requests"
    for query in (b"tenant=alpha&key_id=key_beta", b"tenant=alpha&key_id=master"):
        status, error = await _ids(endpoint, MASTER, query)
        assert (status, error["code"]) == (404, "key_not_found"), query


async def test_a_tenant_admin_is_held_to_its_own_tenant_whatever_tenant_it_names(endpoint: AdminRequests) -> None:
    for ident in (b"alpha", A.encode()):
        assert await _ids(endpoint, ADMIN_A, b"tenant=" + ident) == (200, ["req-a"])
    other = await _ids(endpoint, ADMIN_A, b"tenant=beta")
    missing = await _ids(endpoint, ADMIN_A, b"tenant=gamma")
    assert other[0] == missing[0] == 404  # another tenant is as if it did not exist
    assert other[1]["code"] == missing[1]["code"] == "tenant_not_found"
    assert await _ids(endpoint, ADMIN_A, b"") == (200, ["req-a"])


async def test_without_tenancy_a_tenant_filter_names_nothing() -> None:
    store = MemoryRequestLog()
    await store.write([RequestRecord("req-m", time.time(), key_id="master")])
    endpoint = AdminRequests(Authenticator(MASTER), RequestLogWriter(store, now=time.time))
    status, error = await _ids(endpoint, MASTER, b"tenant=alpha")
    assert (status, error["code"]) == (404, "tenant_not_found")


async def test_two_tenants_reusing_one_request_id_each_find_their_own(endpoint: AdminRequests) -> None:
    """Clients choose their ``x-request-id``: two tenants' apps may send the same one (``1``, a shared scheme). The
    memory store (the stand-in for a request log database that could not be opened) kept the first record of
    an id a day and dropped the other tenant's, which its admin then could neither list nor get."""
    now = time.time()
    await endpoint.writer.store.write([RequestRecord("req-1", now, tenant_id=B, key_id="key_beta"),
                                       RequestRecord("req-1", now + 1, tenant_id=A, key_id="key_alpha")])
    status, raw = await get_with_key(endpoint.get, "/admin/requests/req-1", ADMIN_A)
    assert status == 200 and json.loads(raw)["tenant_id"] == A
    assert await _ids(endpoint, ADMIN_A, b"") == (200, ["req-1", "req-a"])
    assert await _ids(endpoint, MASTER, b"tenant=beta") == (200, ["req-1", "req-b"])
    status, raw = await get_with_key(endpoint.get, "/admin/requests/req-1", MASTER)
    assert status == 200 and json.loads(raw)["tenant_id"] == A  # the master key: the newest of that id
