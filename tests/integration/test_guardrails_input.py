"""Input validation and prompt-injection checks through the gateway, both APIs, plain and streamed."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.integration.conftest import Upstreams
from tests.integration.guardrails_support import (
    ATTACK,
    ScriptedUpstream,
    ask,
    claude,
    gateway_config,
    logged,
    oai,
    scripted,  # noqa: F401  (fixture)
    scripted_server,  # noqa: F401  (fixture)
)
from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture(scope="module")
def gw(upstreams: Upstreams, scripted_server: ScriptedUpstream,  # noqa: F811
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    guardrails = {"validate": {"max_tokens": 300, "max_messages": 4, "max_chars": 2000, "max_images": 2},
                  "injection": {"mode": "block", "threshold": 0.8}}
    cfg = gateway_config(upstreams, scripted_server, tmp_path_factory.mktemp("in") / "gw.db", guardrails)
    cfg["models"].append({**cfg["models"][0], "name": "oai-flag"})
    cfg["models"].append({**cfg["models"][0], "name": "oai-reasoning", "model": "o3-mini"})
    cfg["routing"]["oai-flag"] = {"guardrails": {"injection": {"mode": "flag"}, "validate": {"roles": ["user"]}}}
    with running_gateway(cfg) as gw:
        yield gw


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_limits_are_400s_naming_the_field(gw: RunningGateway, ups: Upstreams, stream: bool) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai(gw).chat.completions.create(model="oai", messages=[{"role": "user", "content": "hi"}], max_tokens=301,
                                        stream=stream)
    assert err.value.param == "max_tokens" and "300" in str(err.value)  # type: ignore[attr-defined]
    with pytest.raises(anthropic.BadRequestError) as aerr:
        claude(gw).messages.create(model="claude", max_tokens=1000, messages=[{"role": "user", "content": "hi"}],
                                   stream=stream)
    assert "max_tokens is 1000" in str(aerr.value)
    with pytest.raises(openai.BadRequestError) as err:
        oai(gw).chat.completions.create(model="oai", messages=[{"role": "user", "content": "x" * 2001}])
    assert err.value.param == "messages" and "2001 characters" in str(err.value)  # type: ignore[attr-defined]
    with pytest.raises(anthropic.BadRequestError) as aerr:
        claude(gw).messages.create(model="oai-flag", max_tokens=10, system="be brief",
                                   messages=[{"role": "user", "content": "hi"}])
    assert "role is not allowed" in str(aerr.value)
    assert ups.openai.traffic.requests == 0 and ups.anthropic.traffic.requests == 0


def test_a_tool_result_without_its_call_is_rejected(gw: RunningGateway, ups: Upstreams) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        oai(gw).chat.completions.create(model="oai", messages=[
            {"role": "user", "content": "hi"}, {"role": "tool", "tool_call_id": "call_x", "content": "42"}])
    assert err.value.param == "messages[1].tool_call_id"  # type: ignore[attr-defined]


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
@pytest.mark.parametrize("api", ["openai", "anthropic"])
def test_injection_block_is_a_400_and_nothing_goes_upstream(gw: RunningGateway, ups: Upstreams, api: str,
                                                           stream: bool) -> None:
    error = openai.BadRequestError if api == "openai" else anthropic.BadRequestError
    with pytest.raises(error) as err:
        ask(api, gw, "claude", ATTACK, stream)
    assert "prompt-injection" in str(err.value) and "override" in str(err.value)
    assert ups.anthropic.traffic.requests == 0
    assert ask(api, gw, "claude", "How do I ignore a failing test in pytest?", stream)


@pytest.mark.parametrize("field", ["title", "context"])
def test_injection_in_an_anthropic_documents_title_or_context_is_blocked(gw: RunningGateway, ups: Upstreams,
                                                                        field: str) -> None:
    document = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "Q3 figures."},
                field: ATTACK}
    with pytest.raises(anthropic.BadRequestError) as err:
        claude(gw).messages.create(model="claude", max_tokens=50, messages=[  # type: ignore[misc,list-item]
            {"role": "user", "content": [document, {"type": "text", "text": "Summarise it."}]}])
    assert "prompt-injection" in str(err.value) and "override" in str(err.value)
    assert ups.anthropic.traffic.requests == 0


def test_injection_flag_passes_and_is_recorded(gw: RunningGateway, ups: Upstreams) -> None:
    rid = "req_inj_" + uuid.uuid4().hex[:8]
    assert ask("openai", gw, "oai-flag", ATTACK, stream=True, extra_headers={"x-request-id": rid})
    verdict = logged(gw, rid)["guardrails"]["injection"]
    assert verdict["action"] == "flag" and verdict["score"] >= 0.8 and "injection:override" in verdict["reasons"]
    assert ups.openai.traffic.requests == 1


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_a_request_without_max_tokens_reaches_each_upstream_with_the_ceiling(
        gw: RunningGateway, ups: Upstreams, scripted: ScriptedUpstream, stream: bool) -> None:  # noqa: F811
    """The ceiling (300) holds when the client sets no max: each upstream gets it in the field it reads, not
    its own default (the whole output limit; 4096 from the Anthropic adapter)."""
    def sent(model: str) -> dict[str, Any]:
        assert ask("openai", gw, model, "hi", stream)
        if model == "claude":
            return ups.anthropic.traffic.last.body  # type: ignore[no-any-return]
        return scripted.bodies[-1] if model == "scripted" else ups.openai.traffic.last.body  # type: ignore[no-any-return]

    assert sent("oai")["max_tokens"] == 300
    reasoning = sent("oai-reasoning")  # OpenAI's reasoning models refuse max_tokens
    assert reasoning["max_completion_tokens"] == 300 and "max_tokens" not in reasoning
    assert sent("claude")["max_tokens"] == 300
    assert sent("scripted")["max_tokens"] == 300
    assert ask("openai", gw, "oai", "hi", stream, max_completion_tokens=120)  # within: sent as asked
    assert ups.openai.traffic.last.body["max_completion_tokens"] == 120
    assert "max_tokens" not in ups.openai.traffic.last.body
    assert ask("anthropic", gw, "claude", "hi", stream)  # Anthropic's required max_tokens (200): as asked
    assert ups.anthropic.traffic.last.body["max_tokens"] == 200


PNG = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(24)).decode()
PDF = base64.b64encode(b"%PDF-1.7\n" + bytes(24)).decode()


def test_images_in_file_parts_count_toward_max_images(gw: RunningGateway, scripted: ScriptedUpstream) -> None:  # noqa: F811
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}}
    as_file = {"type": "file", "file": {"file_data": f"data:image/png;base64,{PNG}", "filename": "shot.png"}}
    pdf = {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF}", "filename": "a.pdf"}}
    with pytest.raises(openai.BadRequestError) as err:
        oai(gw).chat.completions.create(model="scripted", messages=[  # type: ignore[misc,list-item]
            {"role": "user", "content": [{"type": "text", "text": "compare"}, image, as_file, as_file]}])
    assert err.value.param == "messages" and "3 images; the limit is 2" in str(err.value)  # type: ignore[attr-defined]
    assert scripted.bodies == []
    assert oai(gw).chat.completions.create(model="scripted", messages=[  # type: ignore[misc,list-item]
        {"role": "user", "content": [{"type": "text", "text": "compare"}, image, as_file, pdf]}])
    assert len(scripted.bodies[-1]["messages"][0]["content"]) == 4  # a PDF is no image


def test_anthropic_images_count_toward_max_images(gw: RunningGateway, ups: Upstreams) -> None:
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
    # a third image (a base64 document holding an image is Anthropic's own 400: its documents are PDFs)
    as_doc = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    turns = [{"role": "user", "content": [image, {"type": "text", "text": "take another"}]},
             {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "shot", "input": {}}]},
             {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [image]}]}]
    for extra in ([], [as_doc]):  # the tool result's image is the second; an image by URL the third
        convo = [*turns[:2], {"role": "user", "content": [*turns[2]["content"], *extra]}]
        if not extra:
            assert claude(gw).messages.create(model="claude", max_tokens=50, messages=convo)  # type: ignore[arg-type]
            continue
        with pytest.raises(anthropic.BadRequestError) as err:
            claude(gw).messages.create(model="claude", max_tokens=50, messages=convo)  # type: ignore[arg-type]
        assert "3 images; the limit is 2" in str(err.value)
    assert ups.anthropic.traffic.requests == 1
