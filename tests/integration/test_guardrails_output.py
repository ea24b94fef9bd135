"""Output checks through the gateway: leakage and content blocks, streams cut with an error event, JSON retried."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest

from tests.integration.conftest import Upstreams
from tests.integration.guardrails_support import (
    EMAIL,
    ScriptedUpstream,
    ask,
    claude,
    gateway_config,
    oai,
    scripted,  # noqa: F401  (fixture)
    scripted_server,  # noqa: F401  (fixture)
)
from tests.support.gateway import RunningGateway, running_gateway

CANARY = "CANARY-9d2f"
INTRO = "Here is a long and perfectly harmless introduction to the subject you asked about. " * 2
SCHEMA = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"],
          "additionalProperties": False}


@pytest.fixture(scope="module")
def gw(upstreams: Upstreams, scripted_server: ScriptedUpstream,  # noqa: F811
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    guardrails = {"pii": {"mode": "redact"},
                  "output": {"leakage": "block", "canaries": [CANARY], "blocklist": ["frobnicate"],
                             "json_schema": "retry", "holdback": 32}}
    cfg = gateway_config(upstreams, scripted_server, tmp_path_factory.mktemp("out") / "gw.db", guardrails)
    cfg["models"].append({**cfg["models"][2], "name": "scripted-buffer"})
    cfg["routing"]["scripted-buffer"] = {"guardrails": {"output": {"stream": "buffer"}}}
    with running_gateway(cfg) as gw:
        yield gw


def blocked(api: str, gw: RunningGateway, model: str, text: str, stream: bool) -> str:
    error = openai.BadRequestError if api == "openai" else anthropic.BadRequestError
    with pytest.raises(error) as err:
        ask(api, gw, model, text, stream)
    return str(err.value)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_redacted_original_in_the_answer_is_blocked(gw: RunningGateway, scripted: ScriptedUpstream,  # noqa: F811
                                                      api: str) -> None:
    scripted.script.append(f"I remember you: {EMAIL}")
    message = blocked(api, gw, "scripted", f"I am {EMAIL}, remember me", stream=False)
    assert "leak:pii" in message and EMAIL not in message


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("model", ["oai", "claude"])
def test_a_canary_or_blocklisted_word_echoed_by_the_upstream_is_blocked(gw: RunningGateway, ups: Upstreams,
                                                                       model: str, api: str) -> None:
    assert "leak:canary" in blocked(api, gw, model, f"repeat after me: {CANARY}", stream=False)
    assert "content:blocklist" in blocked(api, gw, model, "please frobnicate the widget", stream=False)
    assert ask(api, gw, model, "a harmless question", stream=False)


def test_openai_stream_is_cut_with_an_error_event_before_the_match(gw: RunningGateway,
                                                                  scripted: ScriptedUpstream) -> None:  # noqa: F811
    scripted.script.append(INTRO + f"The secret is {CANARY}. More text follows here.")
    got: list[str] = []
    stream = oai(gw).chat.completions.create(model="scripted", messages=[{"role": "user", "content": "hi"}],
                                             stream=True)
    with pytest.raises(openai.APIError) as err:
        for chunk in stream:
            got.extend(c.delta.content or "" for c in chunk.choices)
    text = "".join(got)
    assert text.startswith("Here is a long") and CANARY[:3] not in text
    assert "leak:canary" in str(err.value)


def test_anthropic_stream_is_cut_with_an_error_event(gw: RunningGateway, scripted: ScriptedUpstream) -> None:  # noqa: F811
    scripted.script.append(INTRO + f"The secret is {CANARY}.")
    got: list[str] = []
    with pytest.raises(anthropic.APIError) as err, claude(gw).messages.stream(
            model="scripted", max_tokens=100, messages=[{"role": "user", "content": "hi"}]) as s:
        got.extend(s.text_stream)
    assert "".join(got).startswith("Here is a long") and CANARY[:3] not in "".join(got)
    assert "leak:canary" in str(err.value)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_a_blocklisted_word_inside_a_longer_word_split_across_chunks_is_not_cut(
        gw: RunningGateway, scripted: ScriptedUpstream, api: str) -> None:  # noqa: F811
    text = "W frobnicated it."  # pieces of 3: "W f", "rob", "nic", "ate", "d i", ...: a chunk ends on "frobnicate"
    scripted.script.append(text)
    assert ask(api, gw, "scripted", "hi", stream=False) == text  # the plain answer passes: a longer word
    scripted.script.append(text)
    assert ask(api, gw, "scripted", "hi", stream=True) == text
    scripted.script.append("W frobnicate")  # the answer ends on the word itself: still cut, and never sent
    error = openai.APIError if api == "openai" else anthropic.APIError
    with pytest.raises(error) as err:
        ask(api, gw, "scripted", "hi", stream=True)
    assert "content:blocklist" in str(err.value)


def test_buffer_mode_sends_no_text_before_the_error(gw: RunningGateway, scripted: ScriptedUpstream) -> None:  # noqa: F811
    scripted.script.append(INTRO + f"The secret is {CANARY}.")
    got: list[str] = []
    stream = oai(gw).chat.completions.create(model="scripted-buffer", messages=[{"role": "user", "content": "hi"}],
                                             stream=True)
    with pytest.raises(openai.APIError):
        for chunk in stream:
            got.extend(c.delta.content or "" for c in chunk.choices)
    assert "".join(got) == ""
    scripted.script.append(INTRO)
    assert ask("openai", gw, "scripted-buffer", "hi", stream=True) == INTRO


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_invalid_json_is_retried_once_with_the_errors_named(gw: RunningGateway, scripted: ScriptedUpstream,  # noqa: F811
                                                            stream: bool) -> None:
    scripted.script.extend(['{"a": "one"}', '{"a": 1}'])
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "a", "schema": SCHEMA, "strict": True}}
    raw = oai(gw).chat.completions.with_raw_response.create(
        model="scripted", messages=[{"role": "user", "content": "give json"}], response_format=fmt, stream=stream)
    if stream:
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    else:
        text = raw.parse().choices[0].message.content or ""
    assert orjson.loads(text) == {"a": 1}
    assert len(scripted.bodies) == 2
    if not stream:  # a stream's headers left before its answer was checked
        assert raw.headers["x-aigw-output-retries"] == "1"
    fix = scripted.bodies[1]["messages"][-1]["content"]
    assert "$.a" in fix and "one" not in fix


def test_json_still_invalid_after_the_retry_is_a_clear_error_in_the_anthropic_api(
        gw: RunningGateway, scripted: ScriptedUpstream) -> None:  # noqa: F811
    scripted.script.extend(["not json", "still not json"])
    with pytest.raises(anthropic.BadRequestError) as err:
        claude(gw).messages.create(model="scripted", max_tokens=100, messages=[{"role": "user", "content": "json"}],
                                   extra_body={"output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}})
    assert "response format" in str(err.value) and "not valid JSON" in str(err.value)
    assert len(scripted.bodies) == 2
