"""Pure translation for the OpenAI family, on recorded wire fixtures (no network).

fixtures/openai/: requests.json (canonical body + shaping -> upstream body), errors.json
(status + headers + body -> error kind), chat_completion_*.json and stream_*.json
(answers as OpenAI, Azure, Groq and vLLM send them).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigw import errors
from aigw.providers.azure.errors import map_error as azure_map_error
from aigw.providers.openai import translate
from aigw.providers.openai.errors import map_error, map_error_event, scrub
from aigw.types import JSON
from tests.providers.openai_family import joined_text, joined_tool_calls

FIXTURES = Path(__file__).parent / "fixtures" / "openai"


def load(name: str) -> Any:
    return orjson.loads((FIXTURES / name).read_bytes())


def shaping(spec: JSON) -> translate.Shaping:
    return translate.Shaping(
        max_tokens_field=spec.get("max_tokens_field"),
        drop_params=frozenset(spec.get("drop_params", ())),
        role_map=spec.get("role_map", {}),
        merge_system_messages=spec.get("merge_system_messages", False),
        stream_options=spec.get("stream_options", True),
    )


# -- requests ------------------------------------------------------------------------------


@pytest.mark.parametrize("case", load("requests.json"), ids=lambda c: c["name"])
def test_request_shaping(case: JSON) -> None:
    body = case["body"]
    before = copy.deepcopy(body)
    out = translate.shape_chat(body, case["model"], shaping(case["shaping"]), stream=case["stream"])
    assert out == case["expected"]
    assert body == before, "the canonical body is never mutated"


def test_no_copy_when_nothing_changes() -> None:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    assert translate.shape_chat(body, "gpt-4o-mini", translate.PLAIN, stream=False) is body
    rules = translate.Shaping(role_map={"developer": "system"}, merge_system_messages=True)
    assert translate.shape_chat(body, "gpt-4o-mini", rules, stream=False) is body


def test_model_change_is_one_shallow_copy() -> None:
    messages = [{"role": "user", "content": "hi"}]
    out = translate.shape_chat({"model": "fast", "messages": messages}, "gpt-4o-mini", translate.PLAIN,
                               stream=False)
    assert out["model"] == "gpt-4o-mini" and out["messages"] is messages


@pytest.mark.parametrize(("model", "field"), [
    ("gpt-4o-mini", None), ("o1", "max_completion_tokens"), ("o3-mini", "max_completion_tokens"),
    ("o4-mini-2025-04-16", "max_completion_tokens"), ("gpt-5-mini", "max_completion_tokens"),
    ("gpt-4.1", None),
])
def test_openai_model_rules(model: str, field: str | None) -> None:
    assert translate.shaping_for_model(model).max_tokens_field == field


def test_completion_and_embedding_bodies() -> None:
    body = {"model": "fast", "prompt": "Say", "stream_options": {"include_usage": True}}
    assert translate.shape_completion(body, "gpt-3.5-turbo-instruct", translate.PLAIN, stream=False) == {
        "model": "gpt-3.5-turbo-instruct", "prompt": "Say"}
    embed = {"model": "e", "input": "x", "encoding_format": "base64"}
    assert translate.shape_embeddings(embed, "text-embedding-3-small")["encoding_format"] == "base64"


# -- answers and streams ---------------------------------------------------------------------


def test_chat_completion_passes_through_untouched() -> None:
    data = load("chat_completion_parallel_tools.json")
    assert translate.checked(data, "choices", "chat completion") is data
    with pytest.raises(errors.UpstreamError, match="without 'choices'"):
        translate.checked({"id": "x"}, "choices", "chat completion")


def run_stream(chunks: list[JSON]) -> list[JSON]:
    mover = translate.UsageMover()
    out = [c for c in (mover.see(chunk) for chunk in chunks) if c is not None]
    last = mover.final()
    return out + ([last] if last is not None else [])


def test_openai_stream_is_forwarded_as_is() -> None:
    chunks = load("stream_parallel_tool_calls.json")
    out = run_stream(copy.deepcopy(chunks))
    assert out == chunks
    calls = joined_tool_calls(out)
    assert [c["name"] for c in calls] == ["get_weather", "get_time"]
    assert orjson.loads(calls[0]["arguments"]) == {"location": "Paris"}


def test_azure_preamble_is_dropped_and_usage_stays_last() -> None:
    out = run_stream(load("stream_azure.json"))
    assert len(out) == 4 and all(c["id"] == "chatcmpl-AzU1" for c in out)
    assert joined_text(out) == "Hello" and out[-1]["usage"]["total_tokens"] == 10


@pytest.mark.parametrize(("fixture", "total"), [
    ("stream_groq_x_groq_usage.json", 14), ("stream_vllm_usage_on_finish.json", 18)])
def test_usage_on_a_content_chunk_moves_to_a_final_chunk(fixture: str, total: int) -> None:
    out = run_stream(load(fixture))
    assert out[-1]["choices"] == [] and out[-1]["usage"]["total_tokens"] == total
    assert out[-1]["id"] == out[0]["id"] and out[-1]["object"] == "chat.completion.chunk"
    assert all(not c.get("usage") for c in out[:-1])
    assert out[-2]["choices"][0]["finish_reason"] == "stop"


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize("case", load("errors.json"), ids=lambda c: c["name"])
def test_error_mapping(case: JSON) -> None:
    mapper = azure_map_error if case["mapper"] == "azure" else map_error
    text = case.get("text") or orjson.dumps(case["body"]).decode()
    parsed = case.get("body")
    err = mapper(case["status"], text, parsed, case["headers"])
    assert err.kind == case["kind"]
    assert err.status == case["status_out"]
    assert err.code == case.get("code")
    assert err.param == case.get("param")
    assert err.retry_after == case.get("retry_after")
    assert err.detail == text, "the raw body is kept for debug mode only"
    assert "sk-proj" not in err.message and "<html" not in err.message


@pytest.mark.parametrize(("event", "kind"), [
    ({"error": {"message": "The server had an error", "type": "server_error", "param": None, "code": None}},
     errors.UpstreamError),
    ({"error": {"message": "Rate limit reached", "type": "tokens", "code": "rate_limit_exceeded"}},
     errors.RateLimited),
    ({"error": {"message": "context window exceeded", "type": "invalid_request_error"}},
     errors.ContextLengthExceeded),
    ({"error": {"message": "Overloaded", "code": 503}}, errors.Unavailable),
    ({"error": "boom"}, errors.UpstreamError),
    ({"error": {"message": "You exceeded your current quota", "type": "insufficient_quota",
                "code": "insufficient_quota"}}, errors.QuotaExceeded),
])
def test_stream_error_events(event: JSON, kind: type[errors.GatewayError]) -> None:
    assert type(map_error_event(event)) is kind


def test_scrub_cuts_and_redacts() -> None:
    assert scrub("key sk-abcdef123456 leaked") == "key [redacted] leaked"
    assert scrub("azure 0123456789abcdef0123456789abcdef key") == "azure [redacted] key"
    assert len(scrub("x" * 5000)) == 500


def test_a_moved_usage_chunk_keeps_the_service_tier_that_prices_it() -> None:
    """The gateway bills a stream by the tier its usage chunk reports: a flex stream stays flex."""
    chunks = [{**c, "service_tier": "flex"} for c in load("stream_vllm_usage_on_finish.json")]
    out = run_stream(chunks)
    assert out[-1]["usage"] and out[-1]["service_tier"] == "flex"


def test_float_embeddings_become_the_base64_the_client_asked_for() -> None:
    answer = {"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]}]}
    as_asked = translate.embeddings_as_asked(answer, {"encoding_format": "base64"})
    assert as_asked["data"][0]["embedding"] == "AAAAPwAAgL8="  # OpenAI's little-endian float32
    assert answer["data"][0]["embedding"] == [0.5, -1.0]  # the upstream's answer is not changed in place
    assert translate.embeddings_as_asked(answer, {"encoding_format": "float"}) is answer
    already = {"data": [{"index": 0, "embedding": "AAAAPwAAgL8="}]}
    assert translate.embeddings_as_asked(already, {"encoding_format": "base64"}) is already


def test_merged_system_messages_keep_their_text_parts_apart() -> None:
    # parts are separate pieces of text: they were glued ("Be brief.Answer in French."), as one sentence
    parts = [{"type": "text", "text": "Be brief."}, {"type": "text", "text": "Answer in French."}]
    messages = [{"role": "system", "content": parts}, {"role": "user", "content": "hi"},
                {"role": "system", "content": "No lists."}]
    merged = translate.merge_system_messages(messages)
    assert merged[0] == {"role": "system", "content": "Be brief.\nAnswer in French.\n\nNo lists."}
