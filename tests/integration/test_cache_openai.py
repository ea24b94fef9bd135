"""The response cache through the official OpenAI SDK: headers, streams, controls, tenants."""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from aigw.pipeline.context import Principal
from tests.support.gateway import RunningGateway, running_gateway

CONFIG: dict[str, Any] = {
    "cache": {"mode": "exact", "ttl_s": 600},
    "models": [{"name": "mock", "provider": "mock"}, {"name": "uncached", "provider": "mock"},
               {"name": "mock-embed", "provider": "mock", "modes": ["embeddings"]}],
    "routing": {"uncached": {"cache": {"mode": "off"}}},
}
TENANT_KEYS = {"sk-acme": "acme", "sk-acme-2": "acme", "sk-globex": "globex"}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("cache-openai") / "gw.db"  # its own ledger: no lock shared with other runs
    with running_gateway({**CONFIG, "database_url": f"sqlite:///{db}"}) as gw:
        async def lookup(key: str) -> Principal | None:  # stands in for issue 4's virtual keys
            tenant = TENANT_KEYS.get(key)
            return Principal(key_id=key, tenant_id=tenant) if tenant else None

        gw.app.state["auth"]._lookup = lookup
        yield gw


def client(gw: RunningGateway, key: str = "sk-acme") -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0)


def settle(gw: RunningGateway) -> None:
    """Wait for the background stores of earlier answers (they run off the request path)."""
    gw.call(gw.app.state["pipeline"].stage("cache").flush())


def ask(gw: RunningGateway, text: str, key: str = "sk-acme", **kw: Any) -> tuple[str | None, Any]:
    raw = client(gw, key).chat.completions.with_raw_response.create(
        model=kw.pop("model", "mock"), messages=[{"role": "user", "content": text}], **kw)
    settle(gw)
    return raw.headers.get("x-aigw-cache"), raw.parse()


def test_miss_then_hit_with_the_same_answer(gw: RunningGateway) -> None:
    h1, first = ask(gw, "plain question")
    h2, second = ask(gw, "plain question")
    assert (h1, h2) == ("miss", "hit")
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.usage.total_tokens == first.usage.total_tokens


def test_stream_miss_then_replayed_stream_hit(gw: RunningGateway) -> None:
    def stream(include_usage: bool) -> tuple[str | None, str, list[Any]]:
        kwargs: dict[str, Any] = {"stream_options": {"include_usage": True}} if include_usage else {}
        with client(gw).chat.completions.with_streaming_response.create(
                model="mock", messages=[{"role": "user", "content": "stream me"}], stream=True, **kwargs) as r:
            chunks = list(r.parse())
            header = r.headers.get("x-aigw-cache")
        settle(gw)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        return header, text, chunks

    h1, live, _ = stream(False)
    h2, replayed, chunks = stream(False)
    assert (h1, h2) == ("miss", "hit") and replayed == live
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert all(c.usage is None for c in chunks)  # not asked for, not sent
    assert all("_anthropic" not in (c.model_extra or {}) for c in chunks)  # the gateway's own notes stay home
    _, _, with_usage = stream(True)
    assert with_usage[-1].usage is not None and with_usage[-1].usage.total_tokens > 0
    h4, plain = ask(gw, "stream me")
    assert h4 == "hit" and plain.choices[0].message.content == live


def test_legacy_completions_miss_then_hit_plain_and_streamed(gw: RunningGateway) -> None:
    def complete(prompt: str) -> tuple[str | None, Any]:
        raw = client(gw).completions.with_raw_response.create(model="mock", prompt=prompt, max_tokens=16)
        settle(gw)
        return raw.headers.get("x-aigw-cache"), raw.parse()

    def stream(prompt: str, **kw: Any) -> tuple[str | None, str, list[Any]]:
        with client(gw).completions.with_streaming_response.create(
                model="mock", prompt=prompt, max_tokens=16, stream=True, **kw) as r:
            chunks = list(r.parse())
            header = r.headers.get("x-aigw-cache")
        settle(gw)
        return header, "".join(c.choices[0].text for c in chunks if c.choices), chunks

    (h1, first), (h2, second) = complete("once upon a time"), complete("once upon a time")
    assert (h1, h2) == ("miss", "hit") and second.object == "text_completion"
    assert second.choices[0].text == first.choices[0].text and second.usage.total_tokens == first.usage.total_tokens
    h3, live, _ = stream("a streamed tale")
    h4, replayed, chunks = stream("a streamed tale")
    assert (h3, h4) == ("miss", "hit") and replayed == live and live
    assert all(c.object == "text_completion" for c in chunks)
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"  # 16 tokens cut the answer
    assert all(c.usage is None for c in chunks)  # not asked for, not sent
    assert all("_anthropic" not in (c.model_extra or {}) for c in chunks)  # the gateway's own notes stay home
    _, _, with_usage = stream("a streamed tale", stream_options={"include_usage": True})
    assert with_usage[-1].usage is not None and with_usage[-1].usage.total_tokens > 0
    h5, plain = complete("a streamed tale")  # the streamed answer serves a plain request too
    assert h5 == "hit" and plain.choices[0].text == live
    assert ask(gw, "once upon a time")[0] == "miss"  # the same words as a chat question: another entry


def test_no_store_from_extra_body_and_header(gw: RunningGateway) -> None:
    ask(gw, "private one", extra_body={"cache": {"no_store": True}})
    ask(gw, "private two", extra_headers={"x-aigw-cache": "no-store"})
    assert ask(gw, "private one")[0] == "miss"
    assert ask(gw, "private two")[0] == "miss"


def test_no_cache_goes_upstream_even_when_cached(gw: RunningGateway) -> None:
    ask(gw, "refresh me")
    assert ask(gw, "refresh me", extra_headers={"x-aigw-cache": "no-cache"})[0] == "miss"
    assert ask(gw, "refresh me")[0] == "hit"


def post_with_header_lines(gw: RunningGateway, text: str, lines: list[tuple[str, str]]) -> str | None:
    """A chat request whose headers carry the given lines as sent (a name may repeat)."""
    host, port = gw.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    body = json.dumps({"model": "mock", "messages": [{"role": "user", "content": text}]}).encode()
    try:
        conn.putrequest("POST", "/v1/chat/completions")
        for name, value in [("authorization", "Bearer sk-acme"), ("content-type", "application/json"),
                            ("content-length", str(len(body))), *lines]:
            conn.putheader(name, value)
        conn.endheaders(body)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        return resp.getheader("x-aigw-cache")
    finally:
        conn.close()
        settle(gw)


def test_repeated_header_lines_count_together(gw: RunningGateway) -> None:
    lines = [("x-aigw-cache", "no-store"), ("x-aigw-cache", "ttl=5")]
    assert post_with_header_lines(gw, "two header lines", lines) == "miss"
    assert ask(gw, "two header lines")[0] == "miss"  # no-store on the first line held
    ask(gw, "asked twice")
    lines = [("x-aigw-cache", "ttl=60"), ("X-AIGW-Cache", "no-cache")]
    assert post_with_header_lines(gw, "asked twice", lines) == "miss"  # no-cache on the second line held


def test_per_request_ttl_expires(gw: RunningGateway) -> None:
    ask(gw, "short lived", extra_body={"cache": {"ttl_s": 0.3}})
    assert ask(gw, "short lived")[0] == "hit"
    time.sleep(0.4)
    assert ask(gw, "short lived")[0] == "miss"


def test_tenants_do_not_share_but_keys_of_one_tenant_do(gw: RunningGateway) -> None:
    ask(gw, "tenant secret", key="sk-acme")
    assert ask(gw, "tenant secret", key="sk-globex")[0] == "miss"
    assert ask(gw, "tenant secret", key="sk-acme-2")[0] == "hit"


def test_an_empty_field_that_goes_upstream_splits_the_key_but_a_known_no_op_does_not(gw: RunningGateway) -> None:
    assert ask(gw, "weather in Oslo today")[0] == "miss"
    assert ask(gw, "weather in Oslo today", web_search_options={})[0] == "miss"  # {} turns search on
    assert ask(gw, "weather in Oslo today", extra_body={"some_future_field": {}})[0] == "miss"
    assert ask(gw, "weather in Oslo today", tools=[], stop=None, logit_bias={})[0] == "hit"


def test_a_model_with_the_cache_off_carries_no_header(gw: RunningGateway) -> None:
    ask(gw, "q", model="uncached")
    assert ask(gw, "q", model="uncached")[0] is None


def test_bad_control_is_a_400_in_openai_shape(gw: RunningGateway) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        ask(gw, "q", extra_headers={"x-aigw-cache": "ttl=never"})
    assert "x-aigw-cache" in str(info.value)


def test_embeddings_hit(gw: RunningGateway) -> None:
    c = client(gw)
    first = c.embeddings.with_raw_response.create(model="mock-embed", input="vector please")
    settle(gw)
    second = c.embeddings.with_raw_response.create(model="mock-embed", input="vector please")
    assert (first.headers["x-aigw-cache"], second.headers["x-aigw-cache"]) == ("miss", "hit")
    assert second.parse().data[0].embedding == first.parse().data[0].embedding


def test_health_ready_reports_the_cache(gw: RunningGateway) -> None:
    with urllib.request.urlopen(gw.url + "/health/ready") as r:
        body = json.loads(r.read())
    assert body["checks"]["cache"]["status"] == "ok"


def delete_cache(base: str, query: str = "") -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"{base}/admin/cache{query}", method="DELETE",
                                 headers={"authorization": "Bearer sk-admin"})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_an_admin_purge_empties_the_cache_without_tenancy(gw: RunningGateway,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    ask(gw, "forget this answer")
    assert ask(gw, "forget this answer")[0] == "hit"
    with caplog.at_level("INFO", logger="aigw.admin"):
        status, out = delete_cache(gw.url)
    assert status == 200 and out["tenant"] is None and out["deleted"] >= 1
    assert any(r.getMessage().startswith("cache purge by master: tenant=* model=* deleted=")
               for r in caplog.records)  # who purged what: an audit line
    assert ask(gw, "forget this answer")[0] == "miss"
    status, out = delete_cache(gw.url, "?tenant=acme")  # no tenancy: no tenant to name
    assert status == 404 and out["error"]["code"] == "tenant_not_found"
    ask(gw, "forget this answer")
    for query in ("?tenant=", "?model="):  # empty: names nothing, so purges nothing
        status, out = delete_cache(gw.url, query)
        assert status == 400 and out["error"]["param"] == query[1:-1], out
    assert ask(gw, "forget this answer")[0] == "hit"


def test_without_a_cache_there_is_nothing_to_purge(gateway: RunningGateway) -> None:
    status, out = delete_cache(gateway.url)
    assert status == 404 and "Unknown endpoint DELETE /admin/cache" in out["error"]["message"]
