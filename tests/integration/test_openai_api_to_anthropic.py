"""OpenAI clients in front of an Anthropic deployment: the OpenAI knobs Anthropic spells differently.

``reasoning_effort`` turns into extended thinking (and the thinking comes back as ``reasoning_content``),
``tool_choice`` without ``tools`` is OpenAI's own 400; all with the official SDK against the fake upstream,
which enforces Anthropic's thinking rules.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway, running_gateway

WEATHER: Any = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def gw(upstreams: Upstreams) -> Iterator[RunningGateway]:
    claude = {"name": "claude", "provider": "anthropic", "model": "claude-sonnet-4-5",
              "api_base": upstreams.anthropic_server.url, "api_key": ANTHROPIC_KEY}
    cfg: dict[str, Any] = {
        "models": [claude, {**claude, "name": "claude-old", "model": "claude-3-5-haiku-20241022"}],
        "routing": {"*": {"num_retries": 0}}, "circuit_breaker": {"enabled": False},
    }
    with running_gateway(cfg) as g:
        yield g


@pytest.fixture
def client(gw: RunningGateway, ups: Upstreams) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.v1, api_key="k", max_retries=0)


def test_tool_choice_without_tools_is_openais_400(client: openai.OpenAI, ups: Upstreams) -> None:
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(model="claude", messages=[{"role": "user", "content": "hi"}],
                                           tool_choice="required", stream=stream)  # type: ignore[call-overload]
        body = err.value.body
        assert isinstance(body, dict) and body["param"] == "tool_choice" and body["type"] == "invalid_request_error"
        assert "'tool_choice' is only allowed when 'tools' are specified" in body["message"]
    assert ups.anthropic.traffic.requests == 0
