"""OpenAI custom tools (free-form input, optionally held to a grammar) through the gateway, with the official SDK.

They pass to an OpenAI upstream unchanged and its custom tool calls come back intact, plain and streamed;
a malformed one is the gateway's own 400; an Anthropic deployment refuses them by name; a cache hit
replays the call; PII in a custom tool's input is redacted upstream and restored for the client.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import orjson
import pytest

from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway, running_gateway

MASTER = "sk-master-custom-tools-01"
SQL_TOOL: dict[str, Any] = {"type": "custom", "custom": {
    "name": "run_sql", "description": "Run one read-only SQL query.",
    "format": {"type": "grammar", "grammar": {"syntax": "lark",
                                              "definition": 'start: "SELECT " /[^;]+/'}}}}
SHELL_TOOL: dict[str, Any] = {"type": "custom", "custom": {"name": "shell", "format": {"type": "text"}}}
WEATHER_TOOL: dict[str, Any] = {"type": "function", "function": {
    "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}
ASK_SQL = "SELECT name FROM users WHERE id = 7"
USE_SQL: dict[str, Any] = {"type": "custom", "custom": {"name": "run_sql"}}


@pytest.fixture(scope="module")
def gw(upstreams: Upstreams, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    oai = {"name": "oai", "provider": "openai", "model": "gpt-4o-mini", "api_base": upstreams.openai.base_url,
           "api_key": "sk-oai"}
    cfg: dict[str, Any] = {
        "server": {"master_key": MASTER},
        "database_url": f"sqlite:///{tmp_path_factory.mktemp('custom-tools') / 'gw.db'}",
        "cache": {"mode": "exact", "ttl_s": 600},
        "models": [oai, {**oai, "name": "oai-cached"}, {**oai, "name": "oai-pii"},
                   {"name": "claude", "provider": "anthropic", "model": "claude-test-1",
                    "api_base": upstreams.anthropic_server.url, "api_key": ANTHROPIC_KEY}],
        "routing": {"*": {"num_retries": 0, "cache": {"mode": "off"}},
                    "oai-cached": {"cache": {"mode": "exact", "ttl_s": 600}},
                    "oai-pii": {"guardrails": {"pii": {"mode": "redact"}}}},
        "circuit_breaker": {"enabled": False},
    }
    with running_gateway(cfg) as g:
        yield g


@pytest.fixture
def client(gw: RunningGateway, ups: Upstreams) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key=MASTER, max_retries=0)


def streamed_calls(chunks: list[Any]) -> list[dict[str, Any]]:
    """The tool-call deltas of a stream as the wire sent them (the SDK keeps ``custom`` as an extra field)."""
    return [tc.model_dump(exclude_none=True) for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]


def joined(deltas: list[dict[str, Any]]) -> dict[str, Any]:
    """One streamed custom tool call, put together as a client does."""
    head = deltas[0]
    return {"id": head["id"], "type": head["type"], "name": head["custom"]["name"],
            "input": "".join(d["custom"]["input"] for d in deltas)}


def test_a_custom_tool_passes_through_and_its_call_comes_back(client: openai.OpenAI, ups: Upstreams) -> None:
    resp = client.chat.completions.create(
        model="oai", messages=[{"role": "user", "content": ASK_SQL}], tools=[WEATHER_TOOL, SQL_TOOL, SHELL_TOOL],
        tool_choice=USE_SQL)  # type: ignore[arg-type]
    sent = ups.openai.traffic.last.body
    assert sent["tools"] == [WEATHER_TOOL, SQL_TOOL, SHELL_TOOL] and sent["tool_choice"] == USE_SQL
    choice = resp.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 1
    call = calls[0]
    assert isinstance(call, openai.types.chat.ChatCompletionMessageCustomToolCall)
    assert (call.type, call.custom.name, call.custom.input) == ("custom", "run_sql", ASK_SQL)
    assert call.id.startswith("call_")


def test_a_custom_tool_call_streams_intact(client: openai.OpenAI, ups: Upstreams) -> None:
    chunks = list(client.chat.completions.create(
        model="oai", messages=[{"role": "user", "content": ASK_SQL}], tools=[SQL_TOOL], stream=True,
        stream_options={"include_usage": True}))  # type: ignore[arg-type]
    assert ups.openai.traffic.last.body["tools"] == [SQL_TOOL]
    deltas = streamed_calls(chunks)
    assert len(deltas) > 2  # the input arrived in pieces
    assert deltas[0]["type"] == "custom" and all("function" not in d for d in deltas)
    assert joined(deltas)["input"] == ASK_SQL and joined(deltas)["name"] == "run_sql"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_the_next_turn_sends_the_custom_call_and_its_result_back(client: openai.OpenAI, ups: Upstreams) -> None:
    call = {"id": "call_1", "type": "custom", "custom": {"name": "run_sql", "input": ASK_SQL}}
    messages = [{"role": "user", "content": ASK_SQL}, {"role": "assistant", "content": None, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Ada"}]
    resp = client.chat.completions.create(model="oai", messages=messages, tools=[SQL_TOOL])  # type: ignore[arg-type]
    assert resp.choices[0].message.content == "Tool results: Ada"
    assert ups.openai.traffic.last.body["messages"][1]["tool_calls"] == [call]


def test_allowed_tools_with_a_custom_tool_pass_through(client: openai.OpenAI, ups: Upstreams) -> None:
    choice = {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": [
        {"type": "custom", "custom": {"name": "shell"}}]}}
    resp = client.chat.completions.create(model="oai", messages=[{"role": "user", "content": "ls -la"}],
                                          tools=[SQL_TOOL, SHELL_TOOL], tool_choice=choice)  # type: ignore[arg-type]
    assert ups.openai.traffic.last.body["tool_choice"] == choice
    call = (resp.choices[0].message.tool_calls or [])[0]
    assert call.type == "custom" and call.custom.name == "shell" and call.custom.input == "ls -la"


@pytest.mark.parametrize(("tool", "param", "says"), [
    ({"type": "custom", "custom": {"description": "no name"}}, "tools[0].custom.name", "Missing required parameter"),
    ({"type": "custom", "custom": {"name": "x", "format": {"type": "json"}}}, "tools[0].custom.format",
     "format.type must be 'text' or 'grammar'"),
    ({"type": "custom", "custom": {"name": "x", "format": {"type": "grammar", "grammar": {
        "definition": "start: /a+/", "syntax": "ebnf"}}}}, "tools[0].custom.format.grammar.syntax",
     "'lark' and 'regex'"),
    ({"type": "plugin", "plugin": {"name": "x"}}, "tools[0]", "type must be 'function' or 'custom'"),
], ids=["no-name", "bad-format-type", "bad-grammar-syntax", "unknown-type"])
def test_a_malformed_custom_tool_is_a_400_and_nothing_goes_upstream(
        client: openai.OpenAI, ups: Upstreams, tool: dict[str, Any], param: str, says: str) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="oai", messages=[{"role": "user", "content": "hi"}],
                                       tools=[tool])  # type: ignore[list-item]
    body = err.value.body
    assert isinstance(body, dict)
    assert body["type"] == "invalid_request_error" and body["param"] == param and says in body["message"]
    assert ups.openai.traffic.requests == 0


def test_a_custom_tool_call_input_must_be_a_string(client: openai.OpenAI, ups: Upstreams) -> None:
    call = {"id": "c", "type": "custom", "custom": {"name": "run_sql", "input": {"sql": ASK_SQL}}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="oai", messages=[
            {"role": "user", "content": "q"}, {"role": "assistant", "tool_calls": [call]}])  # type: ignore[list-item]
    assert isinstance(err.value.body, dict) and err.value.body["param"] == "messages[1].tool_calls[0].custom.input"
    assert ups.openai.traffic.requests == 0


@pytest.mark.parametrize("stream", [False, True])
def test_an_anthropic_model_refuses_custom_tools_by_name(client: openai.OpenAI, ups: Upstreams,
                                                         stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "q"}],
                                       tools=[SQL_TOOL], stream=stream)  # type: ignore[call-overload]
    body = err.value.body
    assert isinstance(body, dict) and body["type"] == "invalid_request_error" and body["param"] == "tools.0"
    assert "anthropic models do not support custom tools" in body["message"]
    assert ups.anthropic.traffic.requests == 0


def test_a_cache_hit_replays_a_custom_tool_call_stream_intact(gw: RunningGateway, client: openai.OpenAI,
                                                              ups: Upstreams) -> None:
    def ask() -> tuple[str | None, list[dict[str, Any]]]:
        with client.chat.completions.with_streaming_response.create(
                model="oai-cached", messages=[{"role": "user", "content": ASK_SQL + " -- cached"}],
                tools=[SQL_TOOL], stream=True) as r:  # type: ignore[arg-type]
            chunks = list(r.parse())
            header = r.headers.get("x-aigw-cache")
        gw.call(gw.app.state["pipeline"].stage("cache").flush())
        return header, streamed_calls(chunks)

    (h1, live), (h2, replayed) = ask(), ask()
    assert (h1, h2) == ("miss", "hit") and ups.openai.traffic.requests == 1
    assert joined(replayed) == joined(live)
    assert joined(replayed) == {"id": live[0]["id"], "type": "custom", "name": "run_sql",
                                "input": ASK_SQL + " -- cached"}


def test_custom_tools_shape_the_cache_key(gw: RunningGateway, client: openai.OpenAI, ups: Upstreams) -> None:
    def ask(tool: dict[str, Any]) -> str | None:
        raw = client.chat.completions.with_raw_response.create(
            model="oai-cached", messages=[{"role": "user", "content": "SELECT 1"}], tools=[tool])  # type: ignore[list-item]
        gw.call(gw.app.state["pipeline"].stage("cache").flush())
        return raw.headers.get("x-aigw-cache")

    regex = {"type": "custom", "custom": {"name": "run_sql", "format": {"type": "grammar", "grammar": {
        "syntax": "regex", "definition": "SELECT \\d+"}}}}
    assert ask(SQL_TOOL) == "miss" and ask(regex) == "miss"  # same name, another grammar: another answer
    assert ask(regex) == "hit"


@pytest.mark.parametrize("stream", [False, True])
def test_pii_in_a_custom_tool_input_is_redacted_upstream_and_restored(client: openai.OpenAI, ups: Upstreams,
                                                                       stream: bool) -> None:
    email = "alice.smith@example.com"
    ask = f"mail {email} the report"
    if stream:
        chunks = list(client.chat.completions.create(
            model="oai-pii", messages=[{"role": "user", "content": ask}], tools=[SHELL_TOOL], stream=True))  # type: ignore[arg-type]
        got = joined(streamed_calls(chunks))["input"]
    else:
        resp = client.chat.completions.create(model="oai-pii", messages=[{"role": "user", "content": ask}],
                                              tools=[SHELL_TOOL])  # type: ignore[arg-type]
        call = (resp.choices[0].message.tool_calls or [])[0]
        assert call.type == "custom"
        got = call.custom.input
    assert got == ask  # the upstream called the tool with the placeholder; the client sees the original
    sent = orjson.dumps(ups.openai.traffic.last.body).decode()
    assert email not in sent and "<EMAIL_1>" in sent
