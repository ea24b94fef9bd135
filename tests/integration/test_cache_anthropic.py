"""The response cache through the official Anthropic SDK: plain and streamed hits, controls."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import pytest

from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db = tmp_path_factory.mktemp("cache-anthropic") / "gw.db"  # its own ledger: no lock shared with other runs
    with running_gateway({"cache": {"mode": "exact"}, "database_url": f"sqlite:///{db}"}) as gw:
        yield gw


@pytest.fixture
def client(gw: RunningGateway) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key="anything", max_retries=0)


def settle(gw: RunningGateway) -> None:
    gw.call(gw.app.state["pipeline"].stage("cache").flush())


def ask(gw: RunningGateway, client: anthropic.Anthropic, text: str, **kw: Any) -> tuple[str | None, Any]:
    raw = client.messages.with_raw_response.create(
        model="mock", max_tokens=200, messages=[{"role": "user", "content": text}], **kw)
    settle(gw)
    return raw.headers.get("x-aigw-cache"), raw.parse()


def test_message_miss_then_hit(gw: RunningGateway, client: anthropic.Anthropic) -> None:
    h1, first = ask(gw, client, "hello from anthropic")
    h2, second = ask(gw, client, "hello from anthropic")
    assert (h1, h2) == ("miss", "hit")
    assert second.content[0].text == first.content[0].text
    assert second.stop_reason == "end_turn" and second.usage.output_tokens == first.usage.output_tokens


def streamed(gw: RunningGateway, client: anthropic.Anthropic, text: str) -> tuple[str | None, list[Any]]:
    """A streamed ask: the x-aigw-cache header and the SDK's parsed events (the cache settled after)."""
    with client.messages.with_streaming_response.create(
            model="mock", max_tokens=200, stream=True, messages=[{"role": "user", "content": text}]) as r:
        header = r.headers.get("x-aigw-cache")
        events = list(r.parse())
    settle(gw)
    return header, events


def test_stream_miss_then_replayed_hit_is_a_well_formed_anthropic_stream(
        gw: RunningGateway, client: anthropic.Anthropic) -> None:
    h1, live = streamed(gw, client, "stream from anthropic")
    h2, hit = streamed(gw, client, "stream from anthropic")
    hit_types = [e.type for e in hit]
    assert (h1, h2) == ("miss", "hit")
    assert hit_types[0] == "message_start" and hit_types[-2:] == ["message_delta", "message_stop"]
    assert "content_block_start" in hit_types and "content_block_stop" in hit_types

    def text(events: list[Any]) -> str:
        return "".join(e.delta.text for e in events if e.type == "content_block_delta")
    assert text(hit) == text(live) and text(hit)
    assert hit[-2].usage.output_tokens == live[-2].usage.output_tokens
    # the SDK's own accumulator agrees
    with client.messages.stream(model="mock", max_tokens=200,
                                messages=[{"role": "user", "content": "stream from anthropic"}]) as s:
        final = s.get_final_message()
    assert final.content[0].text == text(live) and final.stop_reason == "end_turn"


def test_no_store_through_extra_body(gw: RunningGateway, client: anthropic.Anthropic) -> None:
    ask(gw, client, "keep this out", extra_body={"cache": {"no_store": True}})
    assert ask(gw, client, "keep this out")[0] == "miss"


def test_one_entry_serves_both_apis_when_the_canonical_requests_match(
        gw: RunningGateway, client: anthropic.Anthropic) -> None:
    import openai

    _, stored = ask(gw, client, "cross api")
    oa = openai.OpenAI(base_url=gw.v1, api_key="x", max_retries=0).chat.completions
    other = oa.with_raw_response.create(model="mock", messages=[{"role": "user", "content": "cross api"}])
    assert other.headers["x-aigw-cache"] == "miss"  # no max_tokens: a different request
    same = oa.with_raw_response.create(model="mock", max_tokens=200,
                                       messages=[{"role": "user", "content": "cross api"}])
    assert same.headers["x-aigw-cache"] == "hit"
    assert same.parse().choices[0].message.content == stored.content[0].text


def test_replayed_stream_reports_input_usage_in_message_start(
        gw: RunningGateway, client: anthropic.Anthropic) -> None:
    """Clients that read input tokens from message_start (LangChain, older SDKs) see the hit's real
    counts, not zeros; the message_delta still carries the output."""
    h1, _ = streamed(gw, client, "usage at message start")
    h2, hit = streamed(gw, client, "usage at message start")
    assert (h1, h2) == ("miss", "hit")
    start = hit[0]
    delta = next(e for e in hit if e.type == "message_delta")
    assert start.type == "message_start"
    assert start.message.usage.input_tokens > 0
    assert start.message.usage.input_tokens == delta.usage.input_tokens
