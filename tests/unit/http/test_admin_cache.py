"""DELETE /admin/cache's parameters: a query that names nothing purges nothing."""

from __future__ import annotations

from typing import Any

import pytest

from aigw import errors
from aigw.http.admin_cache import CacheAdmin
from aigw.http.request import HttpRequest
from aigw.pipeline.context import Principal


class Cache:
    """Records the purges asked for."""

    def __init__(self) -> None:
        self.purged: list[tuple[str | None, str | None]] = []

    async def purge(self, tenant: str | None, model: str | None) -> dict[str, int]:
        self.purged.append((tenant, model))
        return {"memory": 1}


def request(query: bytes, body: bytes = b"") -> HttpRequest:
    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    return HttpRequest({"type": "http", "method": "DELETE", "path": "/admin/cache", "query_string": query,
                        "headers": []}, receive)


def admin(cache: Cache) -> CacheAdmin:
    return CacheAdmin(cache, None, lambda name: name in ("gpt-4o", "mock"))  # type: ignore[arg-type]


@pytest.mark.parametrize(("query", "param", "words"), [
    (b"tenat=acme", "tenat", "unknown parameter"),  # a typo used to purge every tenant's answers
    (b"models=gpt-4o", "models", "unknown parameter"),
    (b"model=gpt-4o&model=mock", "model", "given twice"),  # used to purge the last one named
    (b"model=", "model", "empty"),
])
async def test_a_query_that_names_nothing_is_a_400_and_purges_nothing(query: bytes, param: str,
                                                                        words: str) -> None:
    cache = Cache()
    with pytest.raises(errors.InvalidRequest) as info:
        await admin(cache).purge(request(query), Principal())
    assert info.value.param == param and words in str(info.value)
    assert cache.purged == []


async def test_the_documented_parameters_purge() -> None:
    cache = Cache()
    status, out = await admin(cache).purge(request(b"model=gpt-4o"), Principal())
    assert (status, out["model"], out["deleted"]) == (200, "gpt-4o", 1)
    await admin(cache).purge(request(b""), Principal())
    assert cache.purged == [(None, "gpt-4o"), (None, None)]


@pytest.mark.parametrize(("body", "param"), [(b'{"tenant": "acme"}', "tenant"), (b'{"model": "gpt-4o"}', "model"),
                                             (b'{"all": true}', "all")])
async def test_filters_sent_in_a_body_are_a_400_and_purge_nothing(body: bytes, param: str) -> None:
    """``DELETE /admin/cache {"tenant": "acme"}`` read no body: it purged every tenant's answers."""
    cache = Cache()
    with pytest.raises(errors.InvalidRequest) as info:
        await admin(cache).purge(request(b"", body), Principal())
    assert info.value.param == param and "query string" in str(info.value)
    assert cache.purged == []


async def test_no_body_or_an_empty_object_still_purges() -> None:
    cache = Cache()
    for body in (b"", b"{}"):
        assert (await admin(cache).purge(request(b"model=mock", body), Principal()))[0] == 200
    assert cache.purged == [(None, "mock"), (None, "mock")]
