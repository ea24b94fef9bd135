"""An admin endpoint's query string read strictly: each parameter it does not read, gives twice or leaves empty
is a 400 naming it (``param``), in the OpenAI error shape; the ones it reads come back decoded, once each."""

from __future__ import annotations

from typing import Any

import pytest

from aigw import errors
from aigw.http.admin_query import strict_query
from aigw.http.request import HttpRequest
from aigw.http.wire_openai import error_body

KNOWN = ("tenant", "limit", "after")


def request(query: bytes) -> HttpRequest:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    return HttpRequest({"type": "http", "method": "GET", "path": "/admin/x", "query_string": query,
                        "headers": []}, receive)


def refusal(query: bytes, known: tuple[str, ...] = KNOWN, hints: dict[str, str] | None = None) -> dict[str, Any]:
    with pytest.raises(errors.InvalidRequest) as info:
        strict_query(request(query), known, hints)
    assert info.value.status == 400
    body: dict[str, Any] = error_body(info.value)["error"]
    return body


@pytest.mark.parametrize(("query", "param", "words", "code"), [
    (b"limt=5", "limt", "limt: unknown parameter; known: tenant, limit, after", "unknown_parameter"),
    (b"tenant=a&tenant=b", "tenant", "tenant: given twice", None),  # the last one won
    (b"limit=5&after=key_1&limit=5", "limit", "limit: given twice", None),  # even with the same value
    (b"tenant=", "tenant", "tenant: empty", None),  # an unset shell variable: every tenant's list
    (b"tenant", "tenant", "tenant: empty", None),
    (b"tenant=%20+", "tenant", "tenant: empty", None),
    (b"=acme", "", "(no name): unknown parameter", "unknown_parameter"),
])
def test_a_parameter_that_would_be_ignored_is_a_400_naming_it(query: bytes, param: str, words: str,
                                                             code: str | None) -> None:
    error = refusal(query)
    assert (error["type"], error["param"], error["code"]) == ("invalid_request_error", param, code)
    assert error["message"].startswith(words), error["message"]


def test_a_hint_replaces_the_list_for_a_likely_mistake() -> None:
    hints = {"tenant_id": "did you mean `tenant`?"}
    assert refusal(b"tenant_id=ten_1", hints=hints)["message"] == "tenant_id: unknown parameter; did you mean `tenant`?"
    assert refusal(b"tenants=a", hints=hints)["message"].endswith("known: tenant, limit, after")


def test_an_endpoint_without_parameters_refuses_any() -> None:
    error = refusal(b"grace_s=60", known=())
    assert (error["param"], error["message"]) == ("grace_s", "grace_s: unknown parameter; this endpoint takes no "
                                                  "query parameters")
    assert strict_query(request(b""), ()) == {}


def test_the_known_parameters_come_back_decoded_once_each() -> None:
    got = strict_query(request(b"tenant=acme%20corp&limit=5&after=key_1"), KNOWN)
    assert got == {"tenant": "acme corp", "limit": "5", "after": "key_1"}
    assert strict_query(request(b"tenant=a+b&"), KNOWN) == {"tenant": "a b"}  # a trailing & adds nothing
    assert strict_query(request(b""), KNOWN) == {}
