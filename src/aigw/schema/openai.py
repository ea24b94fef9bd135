"""The canonical wire shapes (OpenAI) and their validation at the edge.

Bodies stay plain dicts on the hot path; these pydantic models only *check* an
inbound body and produce an error that names the field. Unknown fields are
allowed (the OpenAI API grows faster than any gateway) and passed on; known
ones are checked strictly (``true`` is not an integer, ``"5"`` not a number).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from aigw import errors
from aigw.schema.openai_check import check_body
from aigw.types import JSON


class _Open(BaseModel):
    # strict: JSON types as sent. Lax mode read `true` as 1, "5" as 5 and "yes" as true, and passed the body on
    # unchanged, so an upstream got what the gateway had checked as something else.
    model_config = ConfigDict(extra="allow", strict=True)


class TextPart(_Open):
    type: Literal["text"]
    text: str


class ImageUrl(_Open):
    url: str


class ImagePart(_Open):
    type: Literal["image_url"]
    image_url: ImageUrl


class AudioPart(_Open):
    type: Literal["input_audio"]
    input_audio: dict[str, Any]


class FilePart(_Open):
    type: Literal["file"]
    file: dict[str, Any]


class RefusalPart(_Open):
    type: Literal["refusal"]
    refusal: str


_PART_TAGS = {"text": "Text", "image_url": "Image", "input_audio": "Audio", "file": "File", "refusal": "Refusal"}


def _part_kind(value: Any) -> str | None:
    """The branch of a content part: capitalised, as the tool tags, so ``_loc`` drops it from the param (a
    client reads ``messages.0.content.0.text``, not ``...content.0.text.text``)."""
    if not isinstance(value, dict):
        return "Text"  # the text branch then says it wants an object
    kind = value.get("type")
    return _PART_TAGS.get(kind) if isinstance(kind, str) else None


ContentPart = Annotated[
    Annotated[TextPart, Tag("Text")] | Annotated[ImagePart, Tag("Image")] | Annotated[AudioPart, Tag("Audio")]
    | Annotated[FilePart, Tag("File")] | Annotated[RefusalPart, Tag("Refusal")],
    Discriminator(_part_kind, custom_error_type="invalid_content_part",
                  custom_error_message="type must be one of 'text', 'image_url', 'input_audio', 'file', 'refusal'"),
]


class FunctionCall(_Open):
    name: str
    arguments: str


class ToolCall(_Open):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class CustomCall(_Open):
    name: str
    input: str  # free-form text, not JSON: the model wrote it to the tool's format


class CustomToolCall(_Open):
    id: str
    type: Literal["custom"]
    custom: CustomCall


def _kind(value: Any) -> str | None:
    """The branch of a tool (or tool call) union: its ``type``, ``function`` when absent (as before), else
    None (pydantic then names the bad ``type``). The tags are capitalised so ``_loc`` drops them from the
    param: a client reads ``tools.0.custom.name``, not ``tools.0.Custom.custom.name``."""
    if not isinstance(value, dict):
        return "Function"  # the function branch then says it wants an object
    kind = value.get("type", "function")
    return {"function": "Function", "custom": "Custom"}.get(kind) if isinstance(kind, str) else None


_BAD_KIND = "type must be 'function' or 'custom'"
AnyToolCall = Annotated[
    Annotated[ToolCall, Tag("Function")] | Annotated[CustomToolCall, Tag("Custom")],
    Discriminator(_kind, custom_error_type="invalid_tool_type", custom_error_message=_BAD_KIND),
]


class Message(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[AnyToolCall] | None = None
    tool_call_id: str | None = None


class FunctionDef(_Open):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    parameters: dict[str, Any] | None = None


class Tool(_Open):
    type: Literal["function"]
    function: FunctionDef


class TextFormat(_Open):
    type: Literal["text"]


class Grammar(_Open):
    definition: str
    syntax: Literal["lark", "regex"]


class GrammarFormat(_Open):
    type: Literal["grammar"]
    grammar: Grammar


def _format_kind(value: Any) -> str | None:
    kind = value.get("type") if isinstance(value, dict) else None
    return {"text": "Text", "grammar": "Grammar"}.get(kind) if isinstance(kind, str) else None


CustomFormat = Annotated[
    Annotated[TextFormat, Tag("Text")] | Annotated[GrammarFormat, Tag("Grammar")],
    Discriminator(_format_kind, custom_error_type="invalid_format_type",
                  custom_error_message="format.type must be 'text' or 'grammar'"),
]


class CustomDef(_Open):
    name: str = Field(min_length=1, max_length=128)
    description: str | None = None
    format: CustomFormat | None = None  # absent: unconstrained text


class CustomTool(_Open):
    """OpenAI's custom (free-form) tool: the model calls it with a string, optionally held to a grammar."""

    type: Literal["custom"]
    custom: CustomDef


AnyTool = Annotated[
    Annotated[Tool, Tag("Function")] | Annotated[CustomTool, Tag("Custom")],
    Discriminator(_kind, custom_error_type="invalid_tool_type", custom_error_message=_BAD_KIND),
]


class StreamOptions(_Open):
    include_usage: bool | None = None


class ResponseFormat(_Open):
    type: str  # the output checks look it up in a set: a list or an object there failed after the upstream call
    json_schema: dict[str, Any] | None = None


class ChatRequest(_Open):
    model: str = Field(min_length=1)
    messages: list[Message] = Field(min_length=1)
    tools: list[AnyTool] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    stop: str | list[str] | None = None
    n: int | None = Field(default=None, ge=1, le=128)
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    # a string: its value is the upstream's to judge (OpenAI adds efforts); a list or an object was a 500
    reasoning_effort: str | None = None


class CompletionRequest(_Open):
    model: str = Field(min_length=1)
    prompt: str | list[str] | list[int] | list[list[int]]
    max_tokens: int | None = Field(default=None, ge=0)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = Field(default=None, ge=1, le=128)
    stop: str | list[str] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None  # read by the HTTP layer when streaming: an object or nothing
    echo: bool | None = None
    suffix: str | None = None
    # unchecked, `"best_of": "3"` passed the translation's refusal and a penalty of 3 (a 400 on chat) reached a
    # translated provider, which dropped it. No upper bound on logprobs and best_of: OpenAI's (5, 20) are not
    # vLLM's, and a native upstream judges its own; a float bias is vLLM's too
    logprobs: int | None = Field(default=None, ge=0)
    best_of: int | None = Field(default=None, ge=0)
    presence_penalty: float | None = Field(default=None, ge=-2, le=2)
    frequency_penalty: float | None = Field(default=None, ge=-2, le=2)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = None
    seed: int | None = None
    user: str | None = None


class EmbeddingRequest(_Open):
    model: str = Field(min_length=1)
    input: str | list[str] | list[int] | list[list[int]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: int | None = Field(default=None, ge=1)
    user: str | None = None


def validate_chat(body: JSON) -> JSON:
    """Check a chat request and return it unchanged (raises InvalidRequest naming the field)."""
    check_body(ChatRequest, body)
    _stream_options_need_stream(body)
    for i, msg in enumerate(body["messages"]):
        _check_role_fields(msg, f"messages[{i}]")
    if body.get("tool_choice") is not None and not body.get("tools"):  # OpenAI's (and vLLM's) 400
        raise errors.InvalidRequest("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' "
                                    "are specified.", param="tool_choice")
    return body


_NEEDS_CONTENT = frozenset({"system", "developer", "user", "tool"})  # only an assistant's may be absent or null


def _check_role_fields(msg: JSON, at: str) -> None:
    """What OpenAI requires of a message beyond its types: content (but from the assistant, who may only call
    tools), and a tool result's ``tool_call_id``."""
    role = msg["role"]
    if role == "tool" and "tool_call_id" not in msg:
        raise errors.InvalidRequest(f"Missing required parameter: '{at}.tool_call_id'.",
                                    param=f"{at}.tool_call_id", code="missing_required_parameter")
    if role in _NEEDS_CONTENT and msg.get("content") is None:
        missing = "content" not in msg
        said = f"Missing required parameter: '{at}.content'." if missing else \
            f"Invalid value for '{at}.content': a {role} message needs a string or an array of content parts"
        raise errors.InvalidRequest(said, param=f"{at}.content",
                                    code="missing_required_parameter" if missing else "invalid_type")


def _stream_options_need_stream(body: JSON) -> None:
    if body.get("stream_options") is not None and not body.get("stream"):
        raise errors.InvalidRequest(
            "stream_options is only allowed when stream is true", param="stream_options"
        )


def validate_completion(body: JSON) -> JSON:
    check_body(CompletionRequest, body)
    _stream_options_need_stream(body)
    return body


def validate_embeddings(body: JSON) -> JSON:
    try:
        check_body(EmbeddingRequest, body)
    except errors.InvalidRequest as exc:
        if exc.param is None or not exc.param.startswith(("input.", "input[")):
            raise
        # pydantic names the union branch it tried last ("input.str"): the client wrote ``input``
        raise errors.InvalidRequest("Invalid value for 'input': a string, an array of strings, an array of "
                                    "token ids or an array of token id arrays", param="input",
                                    code="invalid_type") from None
    value = body["input"]
    if isinstance(value, list) and not value:
        raise errors.InvalidRequest("'input' must not be empty", param="input")
    # as OpenAI: an empty string or token array is a 400 (there is nothing to embed), not a vector of nothing
    if value == "" or (isinstance(value, list) and any(item == "" or item == [] for item in value)):
        raise errors.InvalidRequest("'input' must not contain an empty string or an empty token array",
                                    param="input")
    return body


def last_user_text(body: JSON) -> str:
    """Text of the last user message (rules, caches and mocks key on it)."""
    for msg in reversed(body.get("messages") or ()):
        if msg.get("role") == "user":
            return content_text(msg.get("content"))
    return ""


def content_text(content: Any) -> str:
    """The text of a message's content: a string, or its text parts one per line (parts are separate
    pieces of text: ["What is the capital", "of Peru?"] is not "capitalof")."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def call_kind(call: Any) -> str | None:
    """Where a tool call (or a streamed piece of one) keeps its text: ``"function"`` (JSON ``arguments``),
    ``"custom"`` (a custom tool's free-text ``input``), or None (no text in it). A string wins over an empty
    echo: some servers send ``custom: {}`` beside a function call's arguments."""
    if not isinstance(call, dict):
        return None
    fn = call.get("function")
    if isinstance(fn, dict) and isinstance(fn.get("arguments"), str):
        return "function"
    custom = call.get("custom")
    if isinstance(custom, dict) and isinstance(custom.get("input"), str):
        return "custom"
    return None


_TEXT_FIELD = {"function": "arguments", "custom": "input"}


def call_text(call: Any) -> str | None:
    """A tool call's text: a function's ``arguments`` or a custom tool's ``input`` (None: neither)."""
    kind = call_kind(call)
    return None if kind is None else str(call[kind][_TEXT_FIELD[kind]])


def call_name(call: Any) -> str:
    """The name of the function or custom tool a call names ("" when it names none)."""
    if not isinstance(call, dict):
        return ""
    for kind in ("function", "custom"):
        part = call.get(kind)
        if isinstance(part, dict) and isinstance(part.get("name"), str):
            return str(part["name"])
    return ""


def with_call_text(call: JSON, text: str) -> JSON:
    """A copy of a tool call (or streamed piece) with its text replaced; the call itself when it has none."""
    kind = call_kind(call)
    if kind is None:
        return call
    return {**call, kind: {**call[kind], _TEXT_FIELD[kind]: text}}
