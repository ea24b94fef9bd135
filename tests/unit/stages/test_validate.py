"""The validate stage: structure, roles, sizes and max_tokens ceilings; a violation names the field."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from aigw.errors import InvalidRequest
from aigw.schema.anthropic import messages_request_to_canonical
from tests.unit.stages.guardrail_harness import Harness, chat, config, verdicts

IMAGE = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}


async def rejected(h: Harness, body: dict[str, Any], **kw: Any) -> InvalidRequest:
    ctx = h.ctx(body, **kw)
    sent = len(h.upstream.bodies)
    with pytest.raises(InvalidRequest) as info:
        await h.run(ctx)
    assert info.value.status == 400
    assert verdicts(ctx)["validate"]["action"] == "block"
    assert len(h.upstream.bodies) == sent  # nothing went upstream
    return info.value


def test_no_validate_section_builds_no_stage() -> None:
    assert Harness(config({"pii": {"mode": "flag"}})).names() == ["pii"]


@pytest.mark.parametrize(("limits", "body", "param", "words"), [
    ({"max_messages": 2}, {"model": "mock", "messages": [{"role": "user", "content": "a"}] * 3}, "messages",
     "Too many messages: 3"),
    ({"max_chars": 10}, chat("x" * 11), "messages", "11 characters"),
    ({"max_input_tokens": 5}, chat("word " * 10), "messages", "input tokens"),
    ({"max_images": 1}, {"model": "mock", "messages": [{"role": "user", "content": [IMAGE, IMAGE]}]}, "messages",
     "2 images"),
    ({"max_tokens": 100}, chat("hi", max_tokens=101), "max_tokens", "max_tokens is 101"),
    ({"max_tokens": 100}, chat("hi", max_completion_tokens=500), "max_completion_tokens", "100"),
    ({"roles": ["user", "assistant"]}, chat("hi", system="be brief"), "messages[0].role", "role"),
])
async def test_each_limit_is_a_400_naming_the_field(limits: dict[str, Any], body: dict[str, Any], param: str,
                                                    words: str) -> None:
    err = await rejected(Harness(config({"validate": limits})), body)
    assert err.param == param
    assert words in err.message


async def test_within_the_limits_passes() -> None:
    h = Harness(config({"validate": {"max_messages": 3, "max_chars": 100, "max_input_tokens": 50, "max_images": 1,
                                     "max_tokens": 100, "roles": ["system", "user"]}}))
    ctx = h.ctx({"model": "mock", "max_tokens": 100, "messages": [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "hi"}, IMAGE]}]})
    await h.run(ctx)
    assert len(h.upstream.bodies) == 1 and verdicts(ctx)["validate"]["action"] == "pass"


@pytest.mark.parametrize(("messages", "param"), [
    ([{"role": "user", "content": None}], "messages[0].content"),
    ([{"role": "user", "content": "q"}, {"role": "assistant", "content": None}], "messages[1].content"),
    ([{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "nope", "content": "r"}],
     "messages[1].tool_call_id"),
])
async def test_malformed_conversations_are_rejected(messages: list[dict[str, Any]], param: str) -> None:
    err = await rejected(Harness(config({"validate": {}})), {"model": "mock", "messages": messages})
    assert err.param == param


async def test_a_tool_result_that_answers_a_call_is_fine() -> None:
    h = Harness(config({"validate": {}}))
    await h.run(h.ctx({"model": "mock", "messages": [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": None,
         "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"}]}))
    assert len(h.upstream.bodies) == 1


async def test_ceilings_per_model_and_per_key() -> None:
    small = {"guardrails": {"validate": {"max_tokens": 10}}}
    cfg = config({"validate": {"max_tokens": 1000}}, routing={"small": small})
    h = Harness(cfg)
    await h.run(h.ctx(chat("hi", max_tokens=500)))
    err = await rejected(h, chat("hi", model="small", max_tokens=500))
    assert err.param == "max_tokens" and "10" in err.message
    err = await rejected(h, chat("hi", max_tokens=500), extra={"guardrails": {"validate": {"max_tokens": 200}}})
    assert "200" in err.message


async def test_legacy_prompt_sizes() -> None:
    h = Harness(config({"validate": {"max_chars": 5}}))
    err = await rejected(h, {"model": "mock", "prompt": "too long a prompt"}, endpoint="completions")
    assert err.param == "prompt"


async def test_a_custom_tool_calls_input_counts_toward_the_size_and_answers_its_result() -> None:
    h = Harness(config({"validate": {"max_chars": 50}}))
    call = {"id": "c1", "type": "custom", "custom": {"name": "shell", "input": "x" * 60}}
    body = {"model": "mock", "messages": [{"role": "user", "content": "go"},
                                          {"role": "assistant", "content": None, "tool_calls": [call]},
                                          {"role": "tool", "tool_call_id": "c1", "content": "ok"}]}
    assert "characters" in (await rejected(h, body)).message
    call["custom"]["input"] = "ls"  # type: ignore[index]
    await h.run(h.ctx(body))  # the tool result answers the custom call by its id


@pytest.mark.parametrize("absent", [{}, {"max_tokens": None}, {"max_completion_tokens": None},
                                    {"max_tokens": None, "max_completion_tokens": None}], ids=str)
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
async def test_a_chat_request_without_max_tokens_is_sent_with_the_ceiling(absent: dict[str, Any],
                                                                          stream: bool) -> None:
    h = Harness(config({"validate": {"max_tokens": 100}}))
    body = chat("hi", stream=stream, **absent)
    ctx = h.ctx(body)
    await (h.stream(ctx) if stream else h.run(ctx))
    sent = h.upstream.bodies[-1]
    assert sent["max_tokens"] == 100 and sent.get("max_completion_tokens") is None  # one field, an int
    assert "max_completion_tokens" not in sent  # a null beside it would win the adapters' rename
    assert body == chat("hi", stream=stream, **absent)  # the client's body itself is not changed
    assert verdicts(ctx)["validate"]["action"] == "pass"


@pytest.mark.parametrize("asked", [{"max_tokens": 60}, {"max_completion_tokens": 60}, {"max_tokens": 100}], ids=str)
async def test_a_max_tokens_within_the_ceiling_is_sent_as_asked(asked: dict[str, Any]) -> None:
    h = Harness(config({"validate": {"max_tokens": 100}}))
    await h.run(h.ctx(chat("hi", **asked)))
    sent = h.upstream.bodies[-1]
    assert {k: sent.get(k) for k in ("max_tokens", "max_completion_tokens") if k in sent} == asked


async def test_the_ceiling_set_is_the_requests_own_policys() -> None:
    small = {"guardrails": {"validate": {"max_tokens": 10}}}
    h = Harness(config({"validate": {"max_tokens": 1000}}, routing={"small": small}))
    await h.run(h.ctx(chat("hi", model="small")))
    assert h.upstream.bodies[-1]["max_tokens"] == 10
    await h.run(h.ctx(chat("hi"), extra={"guardrails": {"validate": {"max_tokens": 200}}}))
    assert h.upstream.bodies[-1]["max_tokens"] == 200
    await h.run(h.ctx(chat("hi")))
    assert h.upstream.bodies[-1]["max_tokens"] == 1000


async def test_without_a_ceiling_nothing_is_added() -> None:
    h = Harness(config({"validate": {"max_chars": 1000}}))
    await h.run(h.ctx(chat("hi")))
    assert "max_tokens" not in h.upstream.bodies[-1]


@pytest.mark.parametrize(("ceiling", "sent"), [(100, 16), (10, 10)])
async def test_a_legacy_completion_without_max_tokens_keeps_the_apis_default_under_the_ceiling(
        ceiling: int, sent: int) -> None:
    h = Harness(config({"validate": {"max_tokens": ceiling}}))
    await h.run(h.ctx({"model": "mock", "prompt": "Say hi"}, endpoint="completions"))
    assert h.upstream.bodies[-1]["max_tokens"] == sent  # OpenAI's documented default is 16


async def test_embeddings_get_no_max_tokens() -> None:
    h = Harness(config({"validate": {"max_tokens": 100}}))
    await h.run(h.ctx({"model": "mock", "input": "hello"}, endpoint="embeddings"))
    assert "max_tokens" not in h.upstream.bodies[-1]


async def test_an_anthropic_requests_required_max_tokens_is_held_to_the_ceiling() -> None:
    h = Harness(config({"validate": {"max_tokens": 100}}))
    over = messages_request_to_canonical({"model": "mock", "max_tokens": 101,
                                          "messages": [{"role": "user", "content": "hi"}]})
    err = await rejected(h, over)
    assert err.param == "max_tokens" and "101" in err.message
    within = messages_request_to_canonical({"model": "mock", "max_tokens": 100,
                                            "messages": [{"role": "user", "content": "hi"}]})
    await h.run(h.ctx(within))
    assert h.upstream.bodies[-1]["max_tokens"] == 100


PNG_B64 = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 24).decode()
JPEG_B64 = base64.b64encode(b"\xff\xd8\xff\xe0" + b"\x00" * 24).decode()
PDF_B64 = base64.b64encode(b"%PDF-1.7\n" + b"\x00" * 24).decode()


def _file(**spec: str) -> dict[str, Any]:
    return {"type": "file", "file": spec}


@pytest.mark.parametrize("part", [
    _file(file_data=f"data:image/png;base64,{PNG_B64}", filename="a.png"),
    _file(file_data=f"data:image/webp;base64,{PDF_B64}"),  # the declared type decides
    _file(file_data=JPEG_B64, filename="upload"),  # bare base64 (OpenAI takes it): the bytes say JPEG
    _file(file_data=f"data:application/octet-stream;base64,{PNG_B64}"),
    _file(file_id="file-abc123", filename="Photo.JPG"),  # an uploaded file: its name says image
    {**IMAGE, "text": "a caption"},  # an image part with a text field is still an image
    {"type": "input_image", "image_url": "https://example.com/a.png"},  # Responses-style, should it come in
], ids=["data-url", "declared", "bare-jpeg", "octet-png", "file-id", "captioned", "input_image"])
async def test_every_shape_of_image_counts_once(part: dict[str, Any]) -> None:
    h = Harness(config({"validate": {"max_images": 1}}))
    err = await rejected(h, {"model": "mock", "messages": [{"role": "user", "content": [IMAGE, part]}]})
    assert err.param == "messages" and "2 images" in err.message
    await h.run(h.ctx({"model": "mock", "messages": [{"role": "user", "content": [part]}]}))


@pytest.mark.parametrize("part", [
    _file(file_data=f"data:application/pdf;base64,{PDF_B64}", filename="report.pdf"),
    _file(file_data=f"data:application/pdf;base64,{PNG_B64}", filename="a.png"),  # declared a PDF: sent as one
    _file(file_data=PDF_B64),
    _file(file_id="file-abc123"),
    {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}},
], ids=["pdf", "declared-pdf", "bare-pdf", "file-id", "audio"])
async def test_other_files_are_no_images(part: dict[str, Any]) -> None:
    h = Harness(config({"validate": {"max_images": 0}}))
    ctx = h.ctx({"model": "mock", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}, part]}]})
    await h.run(ctx)
    assert verdicts(ctx)["validate"]["action"] == "pass" and len(h.upstream.bodies) == 1


async def test_anthropic_images_count_once_wherever_they_are() -> None:
    """A base64 image block, a url and a base64 one inside a tool_result (moved to the user turn after it)
    and a JPEG after it: four images (the PDF is none). A base64 document that is an image is Anthropic's
    400 (its documents are PDFs), refused before this stage."""
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG_B64}}
    by_url = {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}
    as_doc = {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": JPEG_B64}}
    pdf = {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": PDF_B64}}
    body = messages_request_to_canonical({"model": "mock", "max_tokens": 10, "messages": [
        {"role": "user", "content": [image, {"type": "text", "text": "look"}]},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "shot", "input": {}}]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t1",
                                      "content": [{"type": "text", "text": "here"}, by_url, image]}, as_doc, pdf]}]})
    err = await rejected(Harness(config({"validate": {"max_images": 3}})), body)
    assert "4 images" in err.message
    h = Harness(config({"validate": {"max_images": 4}}))
    await h.run(h.ctx(body))
    assert len(h.upstream.bodies) == 1


async def test_an_anthropic_files_api_image_counts_and_its_pdf_does_not() -> None:
    """An image block by Files API id (carried as sent, for an Anthropic upstream) is an image; a document by
    file id or URL is not."""
    by_file = {"type": "image", "source": {"type": "file", "file_id": "file_011CNha8iCJcU1wXNR6q4V8w"}}
    doc = {"type": "document", "source": {"type": "file", "file_id": "file_011CPMxVD3fHLUhvTqtsQA5w"}}
    by_url = {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}
    body = messages_request_to_canonical({"model": "mock", "max_tokens": 10, "messages": [
        {"role": "user", "content": [by_file, doc, by_url, {"type": "text", "text": "what is in these?"}]}]})
    err = await rejected(Harness(config({"validate": {"max_images": 0}})), body)
    assert "1 images" in err.message
    h = Harness(config({"validate": {"max_images": 1}}))
    await h.run(h.ctx(body))
    assert len(h.upstream.bodies) == 1
