"""What the fake Anthropic upstream checks and answers, as the real Messages API would.

``validate(body, models)`` raises ``WireError`` (status, Anthropic error type,
message) for requests the real API rejects; ``plan(body, cache)`` derives a
deterministic answer (content blocks, stop reason, usage) from the input.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson

TOP_LEVEL = frozenset(
    {
        "model", "messages", "max_tokens", "system", "metadata", "stop_sequences", "stream",
        "temperature", "top_p", "top_k", "tools", "tool_choice", "thinking", "service_tier",
        "output_config", "container", "mcp_servers", "context_management", "inference_geo",
        "speed", "cache_control",
    }
)  # fmt: skip
USER_BLOCKS = {"text", "image", "document", "tool_result", "search_result"}
ASSISTANT_BLOCKS = {"text", "tool_use", "thinking", "redacted_thinking", "server_tool_use"}
BLOCK_KEYS = {
    "type", "text", "source", "id", "name", "input", "tool_use_id", "content", "is_error",
    "cache_control", "thinking", "signature", "data", "citations", "title", "context",
}  # fmt: skip
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,128}$")
MEDIA_TYPES = {"image/jpeg", "image/png", "image/gif", "image/webp"}


class WireError(Exception):
    def __init__(self, status: int, err_type: str, message: str) -> None:
        super().__init__(message)
        self.status, self.err_type, self.message = status, err_type, message


def bad(message: str) -> WireError:
    return WireError(400, "invalid_request_error", message)


def _check(cond: Any, message: str) -> None:
    if not cond:
        raise bad(message)


# ------------------------------------------------------------------ validation


def _validate_block(block: Any, role: str, path: str, prev_tool_ids: set[str]) -> None:
    _check(isinstance(block, dict), f"{path}: Input should be a valid dictionary")
    btype = block.get("type")
    allowed = USER_BLOCKS if role == "user" else ASSISTANT_BLOCKS
    _check(
        btype in allowed,
        f"{path}.type: Input tag '{btype}' found using 'type' does not match any of the expected tags",
    )
    if btype == "text":
        _check(isinstance(block.get("text"), str), f"{path}.text: Field required")
        _check(block["text"] != "", f"{path}: text content blocks must be non-empty")
    elif btype == "image":
        source = block.get("source")
        _check(isinstance(source, dict), f"{path}.source: Field required")
        if source.get("type") == "base64":
            _check(
                source.get("media_type") in MEDIA_TYPES,
                f"{path}.source.base64.media_type: Input should be one of {sorted(MEDIA_TYPES)}",
            )
            _check(
                isinstance(source.get("data"), str) and source["data"],
                f"{path}.source.base64.data: Field required",
            )
        elif source.get("type") == "file":
            _check(isinstance(source.get("file_id"), str), f"{path}.source.file.file_id: Field required")
        else:
            _check(
                source.get("type") == "url" and isinstance(source.get("url"), str),
                f"{path}.source: Input tag does not match 'base64', 'url' or 'file'",
            )
    elif btype == "document":
        _validate_document(block, path)
    elif btype == "tool_use":
        _check(
            isinstance(block.get("id"), str) and re.match(r"^[a-zA-Z0-9_-]+$", block["id"]),
            f"{path}.id: String should match pattern '^[a-zA-Z0-9_-]+$'",
        )
        _check(isinstance(block.get("name"), str), f"{path}.name: Field required")
        _check(isinstance(block.get("input"), dict), f"{path}.input: Input should be a valid dictionary")
    elif btype == "tool_result":
        tool_use_id = block.get("tool_use_id")
        _check(isinstance(tool_use_id, str), f"{path}.tool_use_id: Field required")
        _check(
            tool_use_id in prev_tool_ids,
            f"{path}: unexpected `tool_use_id` found in `tool_result` blocks: {tool_use_id}. Each `tool_result` block must have a corresponding `tool_use` block in the previous message.",  # noqa: E501
        )
        inner = block.get("content")
        for k, item in enumerate(inner if isinstance(inner, list) else ()):
            _check(isinstance(item, dict) and item.get("type") in ("text", "image", "document", "search_result"),
                   f"{path}.content.{k}: Input tag does not match any of the expected tags: 'text', 'image', "
                   "'search_result', 'document'")
            _validate_block(item, "user", f"{path}.content.{k}", set())
    elif btype == "thinking":
        _check(isinstance(block.get("signature"), str), f"{path}.signature: Field required")
    for key in block:
        _check(key in BLOCK_KEYS, f"{path}.{key}: Extra inputs are not permitted")


# a document's source type -> (its media_type, the field that holds it), as Anthropic's API reference lists them
DOCUMENT_SOURCES: dict[str, tuple[str | None, str]] = {
    "base64": ("application/pdf", "data"), "text": ("text/plain", "data"), "url": (None, "url"),
    "content": (None, "content"), "file": (None, "file_id"),
}


def _validate_document(block: dict[str, Any], path: str) -> None:
    """A document block: a PDF (base64 or url), plain text, content blocks or an uploaded file."""
    source = block.get("source")
    _check(isinstance(source, dict), f"{path}.source: Field required")
    assert isinstance(source, dict)
    kind = source.get("type")
    _check(kind in DOCUMENT_SOURCES, f"{path}.source: Input tag '{kind}' found using 'type' does not match any of "
           "the expected tags: 'base64', 'text', 'content', 'url', 'file'")
    media_type, holder = DOCUMENT_SOURCES[kind]
    if media_type is not None:
        _check(source.get("media_type") == media_type, f"{path}.source.{kind}.media_type: Input should be "
               f"'{media_type}'")
    value = source.get(holder)
    if kind == "content":
        _check(isinstance(value, str) or (isinstance(value, list) and all(
            isinstance(b, dict) and b.get("type") in ("text", "image") for b in value)),
            f"{path}.source.content.content: Input should be a valid string or a list of text and image blocks")
    else:
        _check(isinstance(value, str) and (value or kind == "text"), f"{path}.source.{kind}.{holder}: Field required")
    citations = block.get("citations")
    _check(citations is None or (isinstance(citations, dict) and set(citations) <= {"enabled"}
                                 and isinstance(citations.get("enabled", False), bool)),
           f"{path}.citations: Input should be an object with a boolean 'enabled'")
    for key in ("title", "context"):
        _check(block.get(key) is None or isinstance(block[key], str), f"{path}.{key}: Input should be a valid string")


def _blocks(content: Any, path: str) -> list[Any]:
    if isinstance(content, str):
        _check(content != "", f"{path}: text content blocks must be non-empty")
        return [{"type": "text", "text": content}]
    _check(isinstance(content, list), f"{path}: Input should be a valid list")
    return content


def _validate_messages(messages: Any) -> None:
    _check(isinstance(messages, list), "messages: Field required")
    _check(messages, "messages: at least one message is required")
    prev_tool_ids: set[str] = set()
    for i, msg in enumerate(messages):
        path = f"messages.{i}"
        _check(isinstance(msg, dict), f"{path}: Input should be a valid dictionary")
        role = msg.get("role")
        if role == "system":
            raise bad(
                'messages: Unexpected role "system". The Messages API accepts a top-level `system` parameter, not "system" as an input message role.'  # noqa: E501
            )
        _check(role in ("user", "assistant"), f"{path}.role: Input should be 'user' or 'assistant'")
        if i == 0:
            _check(role == "user", 'messages: first message must use the "user" role')
        elif messages[i - 1].get("role") == role:
            raise bad(
                f'messages: roles must alternate between "user" and "assistant", but found multiple "{role}" roles in a row'  # noqa: E501
            )
        last_assistant = role == "assistant" and i == len(messages) - 1
        if last_assistant and msg.get("content") in ("", []):
            continue  # an empty final assistant turn is allowed (prefill)
        blocks = _blocks(msg.get("content"), f"{path}.content")
        _check(
            blocks,
            f"{path}: all messages must have non-empty content except for the optional final assistant message",
        )
        for j, block in enumerate(blocks):
            _validate_block(block, role, f"{path}.content.{j}", prev_tool_ids if role == "user" else set())
        if role == "user" and prev_tool_ids:
            answered = {b.get("tool_use_id") for b in blocks if b.get("type") == "tool_result"}
            missing = sorted(prev_tool_ids - answered)
            _check(
                not missing,
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks immediately after: {', '.join(missing)}. Each `tool_use` block must have a corresponding `tool_result` block in the next message.",  # noqa: E501
            )
        prev_tool_ids = {b["id"] for b in blocks if b.get("type") == "tool_use"} if role == "assistant" else set()


def _validate_tools(body: dict[str, Any]) -> None:
    tools = body.get("tools")
    names: set[str] = set()
    if tools is not None:
        _check(isinstance(tools, list), "tools: Input should be a valid list")
        for i, tool in enumerate(tools):
            _check(isinstance(tool, dict), f"tools.{i}: Input should be a valid dictionary")
            if tool.get("type") not in (None, "custom"):
                continue  # server tools (web_search_..., bash_...) have their own shapes
            _check(
                isinstance(tool.get("name"), str) and TOOL_NAME.match(tool["name"]),
                f"tools.{i}.custom.name: String should match pattern '^[a-zA-Z0-9_-]{{1,128}}$'",
            )
            schema = tool.get("input_schema")
            _check(
                isinstance(schema, dict) and schema.get("type") == "object",
                f"tools.{i}.custom.input_schema.type: Input should be 'object'",
            )
            names.add(tool["name"])
    choice = body.get("tool_choice")
    if choice is not None:
        _check(
            isinstance(choice, dict) and choice.get("type") in ("auto", "any", "tool", "none"),
            "tool_choice: Input tag does not match any of the expected tags: 'auto', 'any', 'tool', 'none'",
        )
        if choice["type"] == "tool":
            _check(
                choice.get("name") in names,
                f"tool_choice.name: tool '{choice.get('name')}' was not provided in tools",
            )
        _check(
            choice["type"] != "none" or "disable_parallel_tool_use" not in choice,
            "tool_choice.none.disable_parallel_tool_use: Extra inputs are not permitted",
        )


def _validate_system(system: Any) -> None:
    if system is None or isinstance(system, str):
        return
    _check(isinstance(system, list), "system: Input should be a valid string or list")
    for j, block in enumerate(system):
        _check(
            isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str),
            f"system.{j}: Input should be a text block",
        )
        _check(block["text"] != "", f"system.{j}: text content blocks must be non-empty")


def _validate_options(body: dict[str, Any]) -> None:
    for key in ("temperature", "top_p"):
        value = body.get(key)
        _check(
            value is None or (isinstance(value, int | float) and 0 <= value <= 1),
            f"{key}: Input should be less than or equal to 1",
        )
    stops = body.get("stop_sequences")
    _check(
        stops is None or (isinstance(stops, list) and all(isinstance(s, str) for s in stops)),
        "stop_sequences: Input should be a valid list of strings",
    )
    metadata = body.get("metadata")
    if metadata is not None:
        _check(
            isinstance(metadata, dict) and set(metadata) <= {"user_id"},
            "metadata: Extra inputs are not permitted",
        )
    thinking = body.get("thinking")
    if isinstance(thinking, dict) and thinking.get("type") == "enabled":
        budget = thinking.get("budget_tokens")
        _check(
            isinstance(budget, int) and budget >= 1024,
            "thinking.enabled.budget_tokens: Input should be greater than or equal to 1024",
        )
        _check(budget < body["max_tokens"], "`max_tokens` must be greater than `thinking.budget_tokens`")
        _check(body.get("temperature") in (None, 1), "`temperature` may only be set to 1 when thinking is enabled")
        _check((body.get("tool_choice") or {}).get("type") not in ("any", "tool"),
               "Thinking may not be enabled when tool_choice forces tool use.")
        _check_signed_tool_turn(body.get("messages") or [])
    fmt = (body.get("output_config") or {}).get("format")
    if fmt is not None:
        _check(
            isinstance(fmt, dict) and fmt.get("type") == "json_schema" and isinstance(fmt.get("schema"), dict),
            "output_config.format: Input should be a json_schema format",
        )
        _check_grammar(fmt["schema"], "output_config.format.schema")
    older = str(body.get("model")).startswith(NO_STRUCTURED_OUTPUTS)
    _check(fmt is None or not older, f"'{body.get('model')}' does not support structured outputs")
    for i, tool in enumerate(body.get("tools") or ()):
        _check(not (older and isinstance(tool, dict) and tool.get("strict") is True),
               f"tools.{i}.strict: '{body.get('model')}' does not support strict tool use")
        if isinstance(tool, dict) and tool.get("strict") is True:
            _check_grammar(tool.get("input_schema"), f"tools.{i}.custom.input_schema")


NO_STRUCTURED_OUTPUTS = ("claude-3", "claude-sonnet-4-0", "claude-opus-4-0", "claude-sonnet-4-2025",
                         "claude-opus-4-2025")  # older Claude models: no output_config.format, no strict tools
# what structured outputs (and strict tools) refuse, by type, as the real API names it
REFUSED = {"integer": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
           "number": ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"),
           "string": ("minLength", "maxLength", "pattern"), "array": ("maxItems", "uniqueItems")}


def _check_grammar(schema: Any, path: str) -> None:
    """Raise WireError for a schema Anthropic's structured-output grammar cannot compile."""
    if isinstance(schema, list):
        for sub in schema:
            _check_grammar(sub, path)
        return
    if not isinstance(schema, dict):
        return
    kind = schema.get("type")
    for key in REFUSED.get(kind, ()) if isinstance(kind, str) else ():
        _check(key not in schema, f"{path}: For '{kind}' type, property '{key}' is not supported")
    if kind == "object":
        _check(schema.get("additionalProperties") is False,
               f"{path}: For 'object' type, 'additionalProperties' must be explicitly set to false")
    for key in ("properties", "$defs"):
        for sub in (schema.get(key) or {}).values():
            _check_grammar(sub, path)
    for key in ("items", "anyOf", "allOf", "oneOf"):
        _check_grammar(schema.get(key), path)


def _check_signed_tool_turn(messages: list[Any]) -> None:
    """With thinking on, the last assistant turn that called tools must start with its thinking block."""
    turns = [m for m in messages if isinstance(m, dict) and m.get("role") == "assistant"]
    content = turns[-1].get("content") if turns else None
    if not isinstance(content, list) or not any(isinstance(b, dict) and b.get("type") == "tool_use" for b in content):
        return
    first = content[0] if isinstance(content[0], dict) else {}
    _check(first.get("type") in ("thinking", "redacted_thinking"),
           f"messages.{messages.index(turns[-1])}.content.0.type: Expected `thinking` or `redacted_thinking`, but "
           "found `" + str(first.get("type")) + "`. When `thinking` is enabled, a final `assistant` message must "
           "start with a thinking block.")


def validate(body: Any, models: set[str]) -> None:
    """Raise WireError for a body the real API would reject."""
    _check(isinstance(body, dict), "Input should be a valid dictionary")
    for key in body:
        _check(key in TOP_LEVEL, f"{key}: Extra inputs are not permitted")
    _check(isinstance(body.get("model"), str), "model: Field required")
    max_tokens = body.get("max_tokens")
    _check(max_tokens is not None, "max_tokens: Field required")
    _check(
        isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 1,
        "max_tokens: Input should be greater than or equal to 1",
    )
    _validate_messages(body.get("messages"))
    _validate_system(body.get("system"))
    _validate_tools(body)
    _validate_options(body)
    _check(
        body.get("stream") is None or isinstance(body["stream"], bool),
        "stream: Input should be a valid boolean",
    )
    if body["model"] not in models:
        raise WireError(404, "not_found_error", f"model: {body['model']}")


# ------------------------------------------------------------------ answers


def words(text: str) -> int:
    return len(text.split())


def _texts(content: Any) -> list[tuple[str, bool]]:
    """(text, has cache_control) for each block, as the cache sees them in order."""
    if isinstance(content, str):
        return [(content, False)]
    out = []
    for block in content or []:
        text = block.get("text") or ""
        if block.get("type") == "tool_result":
            inner = block.get("content")
            text = inner if isinstance(inner, str) else " ".join(b.get("text", "") for b in inner or [])
        elif block.get("type") == "tool_use":
            text = block.get("name", "") + " " + orjson.dumps(block.get("input")).decode()
        elif block.get("type") == "image":
            text = "image " * 10
        out.append((text, block.get("cache_control") is not None))
    return out


def _units(body: dict[str, Any]) -> list[tuple[str, bool]]:
    units = [
        (t.get("name", "") + " " + orjson.dumps(t.get("input_schema")).decode(), "cache_control" in t)
        for t in body.get("tools") or []
    ]
    units += _texts(body.get("system"))
    for msg in body["messages"]:
        units += _texts(msg.get("content"))
    return units


@dataclass
class Plan:
    blocks: list[dict[str, Any]]
    stop_reason: str
    stop_sequence: str | None
    usage: dict[str, int]
    extra: dict[str, Any] = field(default_factory=dict)


def _usage(body: dict[str, Any], cache: set[str]) -> dict[str, int]:
    units = _units(body)
    total = sum(words(t) for t, _ in units) + len(body["messages"])
    last = max((i for i, (_, c) in enumerate(units) if c), default=-1)
    prefix = sum(words(t) for t, _ in units[: last + 1])
    read = write = 0
    if last >= 0:
        key = hashlib.sha256(orjson.dumps(units[: last + 1])).hexdigest()
        if key in cache:
            read = prefix
        else:
            cache.add(key)
            write = prefix
    return {
        "input_tokens": total - prefix,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
        "output_tokens": 0,
    }


def value_for(schema: Any, text: str, defs: dict[str, Any] | None = None) -> Any:
    """A deterministic value matching a (simple) JSON schema, derived from the text; ``$ref`` to ``$defs``
    and ``anyOf`` (its first branch) are followed."""
    schema = schema if isinstance(schema, dict) else {}
    defs = {**(defs or {}), **(schema.get("$defs") or {})}
    if isinstance(schema.get("$ref"), str):
        return value_for(defs.get(schema["$ref"].rsplit("/", 1)[-1]), text, defs)
    if schema.get("anyOf"):
        return value_for(schema["anyOf"][0], text, defs)
    if schema.get("enum"):
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {name: value_for(sub, text, defs) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [value_for(schema.get("items"), text, defs)]
    if kind in ("integer", "number"):
        return words(text)
    if kind == "boolean":
        return True
    return text[:40]


def last_user_text(body: dict[str, Any]) -> tuple[str, bool]:
    """(text of the last user turn, whether it was only tool results)."""
    content = body["messages"][-1].get("content") if body["messages"][-1]["role"] == "user" else ""
    pieces = _texts(content)
    only_results = isinstance(content, list) and all(b.get("type") == "tool_result" for b in content)
    return " ".join(t for t, _ in pieces).strip(), only_results


def _tool_blocks(body: dict[str, Any], text: str) -> list[dict[str, Any]]:
    choice = body.get("tool_choice") or {"type": "auto"}
    tools = [t for t in body["tools"] if t.get("type") in (None, "custom")]
    if choice["type"] == "tool":
        tools = [t for t in tools if t["name"] == choice["name"]]
    elif choice.get("disable_parallel_tool_use"):
        tools = tools[:1]
    blocks = []
    for i, tool in enumerate(tools[:2]):
        digest = hashlib.sha256(f"{tool['name']}|{text}|{i}".encode()).hexdigest()[:24]
        blocks.append(
            {
                "type": "tool_use",
                "id": f"toolu_{digest}",
                "name": tool["name"],
                "input": value_for(tool["input_schema"], text),
            }
        )
    return blocks


def _cut(text: str, body: dict[str, Any]) -> tuple[str, str, str | None]:
    """Apply stop_sequences then max_tokens (one token = one word) to an answer."""
    hits = [(text.find(s), s) for s in body.get("stop_sequences") or [] if s and s in text]
    if hits:
        at, seq = min(hits)
        return text[:at], "stop_sequence", seq
    parts = text.split(" ")
    if len(parts) > body["max_tokens"]:
        return " ".join(parts[: body["max_tokens"]]), "max_tokens", None
    return text, "end_turn", None


def plan(body: dict[str, Any], cache: set[str]) -> Plan:
    """The deterministic answer to a valid request."""
    usage = _usage(body, cache)
    text, only_results = last_user_text(body)
    choice = (body.get("tool_choice") or {}).get("type", "auto")
    blocks: list[dict[str, Any]] = []
    thinking = body.get("thinking") or {}
    if thinking.get("type") == "enabled":
        sig = hashlib.sha256(text.encode()).hexdigest()[:32]
        blocks.append({"type": "thinking", "thinking": f"The user said: {text[:60]}", "signature": f"sig_{sig}"})
    wants_tools = body.get("tools") and choice != "none" and (choice in ("any", "tool") or not only_results)
    tool_blocks = _tool_blocks(body, text) if wants_tools else []
    if tool_blocks:
        names = ", ".join(b["name"] for b in tool_blocks)
        blocks += [{"type": "text", "text": f"Calling {names}."}, *tool_blocks]
        stop, seq = "tool_use", None
    else:
        fmt = (body.get("output_config") or {}).get("format")
        if fmt:
            answer = orjson.dumps(value_for(fmt["schema"], text)).decode()
        else:
            answer = ("tool results: " if only_results else "echo: ") + text
        answer, stop, seq = _cut(answer, body)
        if answer:
            blocks.append({"type": "text", "text": answer})
    usage["output_tokens"] = sum(
        words(b.get("text") or b.get("thinking") or orjson.dumps(b.get("input")).decode()) for b in blocks
    )
    if any(str(t.get("type", "")).startswith("web_search_") for t in body.get("tools") or ()):
        usage["server_tool_use"] = {"web_search_requests": 1}  # the server searched once (billed per search)
    return Plan(blocks, stop, seq, usage)
