"""Anthropic content blocks <-> canonical messages and parts (used by ``schema.anthropic``).

Validation follows the real API: each error names the path of the bad field,
e.g. ``messages.1.content.0.source.data``. A user turn that mixes tool results
and other content becomes canonical ``tool`` messages followed by one ``user``
message (images inside a tool result move there, since canonical tool messages
carry text only).
"""

from __future__ import annotations

from typing import Any

import orjson

from aigw.errors import InvalidRequest
from aigw.types import JSON

_USER_BLOCKS = frozenset({"text", "image", "document", "tool_result"})
_ASSISTANT_BLOCKS = frozenset({"text", "tool_use", "thinking", "redacted_thinking"})
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})  # Anthropic's image types
_DOCUMENT_MEDIA_TYPES = {"base64": "application/pdf", "text": "text/plain"}  # a document source's one media type
ONLY_ANTHROPIC = "block"  # in a part's ``_anthropic``: the client's block, which only Anthropic can take, as sent
_TOOL_MAPPED = frozenset({"name", "description", "input_schema", "strict", "cache_control"})  # canonical has these


def _need(cond: bool, message: str, param: str) -> None:
    if not cond:
        raise InvalidRequest(f"{param}: {message}", param=param)


def _text_part(block: JSON, param: str) -> JSON:
    _need(isinstance(block.get("text"), str), "Input should be a valid string", f"{param}.text")
    part: JSON = {"type": "text", "text": block["text"]}
    if block.get("cache_control") is not None:
        part["cache_control"] = block["cache_control"]
    return part


def _source(block: JSON, param: str) -> JSON:
    source = block.get("source")
    _need(isinstance(source, dict), "Field required (an object)", f"{param}.source")
    assert isinstance(source, dict)
    return source


def _image_part(block: JSON, param: str) -> JSON:
    source = _source(block, param)
    if source.get("type") == "base64":
        _need(source.get("media_type") in IMAGE_MEDIA_TYPES, "Input should be 'image/jpeg', 'image/png', "
              "'image/gif' or 'image/webp'", f"{param}.source.media_type")
        _need(isinstance(source.get("data"), str), "Field required", f"{param}.source.data")
        url = f"data:{source['media_type']};base64,{source['data']}"
    elif source.get("type") == "url":
        _need(isinstance(source.get("url"), str), "Field required", f"{param}.source.url")
        url = source["url"]
    elif source.get("type") == "file":
        return _anthropic_only(block, source, "file_id", param)
    else:
        raise InvalidRequest(f"{param}.source.type: Input should be 'base64', 'url' or 'file'",
                             param=f"{param}.source")
    part: JSON = {"type": "image_url", "image_url": {"url": url}}
    if block.get("cache_control") is not None:
        part["cache_control"] = block["cache_control"]
    return part


def _document_part(block: JSON, param: str) -> JSON:
    source = _source(block, param)
    kind = source.get("type")
    if kind in _DOCUMENT_MEDIA_TYPES:  # Anthropic's 400 for another type, whichever upstream would have it
        _need(source.get("media_type") in (None, _DOCUMENT_MEDIA_TYPES[kind]),
              f"Input should be '{_DOCUMENT_MEDIA_TYPES[kind]}'", f"{param}.source.media_type")
    if kind == "text" and isinstance(source.get("data"), str):
        part: JSON = {"type": "text", "text": source["data"]}
    elif kind == "base64" and isinstance(source.get("data"), str):
        media_type = source.get("media_type") or "application/pdf"
        file = {"file_data": f"data:{media_type};base64,{source['data']}"}
        file["filename"] = str(block.get("title") or "document.pdf")
        part = {"type": "file", "file": file}
    elif source.get("type") in ("url", "file"):
        return _anthropic_only(block, source, "url" if source["type"] == "url" else "file_id", param)
    else:
        raise InvalidRequest(f"{param}.source: only base64, text, url and file documents are supported",
                             param=f"{param}.source")
    if block.get("cache_control") is not None:  # a large document is what prompt caching is most often for
        part["cache_control"] = block["cache_control"]
    # what only Anthropic reads (a text document's text stays canonical, where the guardrails see it)
    document = {k: block[k] for k in ("title", "context", "citations") if block.get(k) is not None}
    if part["type"] == "text":
        document["media_type"] = source.get("media_type") or "text/plain"
    if document:
        part["_anthropic"] = {"document": document, "param": param}
    elif part["type"] == "file":  # where the client put it, for an upstream that refuses it (Azure takes no PDFs)
        part["_anthropic"] = {"param": param}
    return part


def _anthropic_only(block: JSON, source: JSON, field: str, param: str) -> JSON:
    """A block whose content the canonical shape cannot hold (a PDF by URL, a file of Anthropic's Files API):
    a ``file`` part carrying the block as sent, for an Anthropic upstream; any other refuses it up front,
    naming ``param`` (``anthropic_foreign.for_openai``). Nothing in it for the guardrails to read."""
    _need(isinstance(source.get(field), str) and bool(source[field]), "Field required", f"{param}.source.{field}")
    spec = {"file_id": source[field]} if field == "file_id" else {}
    return {"type": "file", "file": spec, "_anthropic": {ONLY_ANTHROPIC: block, "param": param}}


def _compact(parts: list[JSON]) -> str | list[JSON]:
    if len(parts) == 1 and parts[0]["type"] == "text" and len(parts[0]) == 2:
        return str(parts[0]["text"])
    return parts


def _moved(part: JSON, tool_use_id: str, at: int) -> JSON:
    """A tool result's image or PDF, for the user message that follows, marked with the result and the place
    it came from: an Anthropic upstream gets it back there (``strip_private`` drops the mark for others)."""
    return {**part, "_anthropic": {**part.get("_anthropic", {}), "tool_use_id": tool_use_id, "at": at}}


def _tool_result(block: JSON, param: str, images: list[JSON]) -> JSON:
    """One ``tool_result`` -> a tool message. Its images and PDFs (OpenAI tool messages take text only) go to
    ``images``, sent in the user message that follows; a text document is text."""
    tool_use_id = block.get("tool_use_id")
    _need(isinstance(tool_use_id, str) and bool(tool_use_id), "Field required", f"{param}.tool_use_id")
    tool_use_id = str(tool_use_id)
    content = block.get("content")
    texts: list[JSON] = []
    if isinstance(content, list):
        for j, inner in enumerate(content):
            _need(isinstance(inner, dict), "Input should be an object", f"{param}.content.{j}")
            if inner.get("type") == "image":
                images.append(_moved(_image_part(inner, f"{param}.content.{j}"), tool_use_id, j))
            elif inner.get("type") == "text":
                texts.append(_text_part(inner, f"{param}.content.{j}"))
            elif inner.get("type") == "document":
                part = _document_part(inner, f"{param}.content.{j}")
                if part["type"] == "text":
                    texts.append(part)
                else:
                    images.append(_moved(part, tool_use_id, j))
            else:
                raise InvalidRequest(f"{param}.content.{j}.type: Input should be 'text', 'image' or 'document'",
                                     param=param)
    else:
        _need(
            content is None or isinstance(content, str),
            "Input should be a string or a list",
            f"{param}.content",
        )
    msg: JSON = {"role": "tool", "tool_call_id": tool_use_id}
    msg["content"] = _compact(texts) if texts else (content if isinstance(content, str) else "")
    extra = {k: block[k] for k in ("is_error", "cache_control") if block.get(k) is not None}
    if extra:
        msg["_anthropic"] = extra
    return msg


def _block_type(block: Any) -> str | None:
    """A content block's ``type`` when it is a string (a list or an object there is not a type: looked up in a
    set, it would raise TypeError, a 500, instead of the client's 400)."""
    btype = block.get("type") if isinstance(block, dict) else None
    return btype if isinstance(btype, str) else None


def _user_messages(content: list[Any], param: str) -> list[JSON]:
    out: list[JSON] = []
    parts: list[JSON] = []
    images: list[JSON] = []
    for j, block in enumerate(content):
        bparam = f"{param}.{j}"
        btype = _block_type(block)
        _need(btype in _USER_BLOCKS, f"Input should be one of {sorted(_USER_BLOCKS)}", f"{bparam}.type")
        if btype == "tool_result":
            if parts:
                out.append({"role": "user", "content": _compact(parts)})
                parts = []
            out.append(_tool_result(block, bparam, images))
        elif btype == "text":
            parts.append(_text_part(block, bparam))
        elif btype == "image":
            parts.append(_image_part(block, bparam))
        else:
            parts.append(_document_part(block, bparam))
    parts = images + parts
    if parts:
        out.append({"role": "user", "content": _compact(parts)})
    return out


def _assistant_message(content: list[Any], param: str) -> JSON:
    texts: list[JSON] = []
    calls: list[JSON] = []
    thinking: list[JSON] = []
    cached: JSON = {}  # tool_use id -> its cache_control (canonical tool calls have no place for it)
    for j, block in enumerate(content):
        bparam = f"{param}.{j}"
        btype = _block_type(block)
        _need(
            btype in _ASSISTANT_BLOCKS,
            f"Input should be one of {sorted(_ASSISTANT_BLOCKS)}",
            f"{bparam}.type",
        )
        if btype == "text":
            texts.append(_text_part(block, bparam))
        elif btype == "tool_use":
            _need(isinstance(block.get("id"), str), "Field required", f"{bparam}.id")
            _need(isinstance(block.get("name"), str), "Field required", f"{bparam}.name")
            _need(isinstance(block.get("input"), dict), "Input should be an object", f"{bparam}.input")
            arguments = orjson.dumps(block["input"]).decode()
            function = {"name": block["name"], "arguments": arguments}
            calls.append({"id": block["id"], "type": "function", "function": function})
            if block.get("cache_control") is not None:
                cached[block["id"]] = block["cache_control"]
        else:
            thinking.append(block)
    msg: JSON = {"role": "assistant", "content": None}
    if texts:
        plain = all(len(t) == 2 for t in texts)
        msg["content"] = "".join(str(t["text"]) for t in texts) if plain else texts
    if calls:
        msg["tool_calls"] = calls
    private = {k: v for k, v in (("thinking", thinking), ("tool_use_cache_control", cached)) if v}
    if private:
        msg["_anthropic"] = private
    return msg


def convert_messages(messages: Any) -> list[JSON]:
    """Anthropic ``messages`` -> canonical messages (roles user/assistant/tool)."""
    _need(isinstance(messages, list), "Field required (a list)", "messages")
    _need(bool(messages), "at least one message is required", "messages")
    out: list[JSON] = []
    for i, msg in enumerate(messages):
        param = f"messages.{i}"
        _need(isinstance(msg, dict), "Input should be an object", param)
        role = msg.get("role")
        _need(role in ("user", "assistant"), "Input should be 'user' or 'assistant'", f"{param}.role")
        content = msg.get("content")
        _need(isinstance(content, str | list), "Input should be a valid string or list", f"{param}.content")
        _need(bool(content) or (role == "assistant" and i == len(messages) - 1),  # Anthropic's own rule
              "all messages must have non-empty content except for the optional final assistant message", param)
        if isinstance(content, str):
            out.append({"role": role, "content": content})
            continue
        if role == "user":
            out.extend(_user_messages(content, f"{param}.content"))
        else:
            out.append(_assistant_message(content, f"{param}.content"))
    return out


def system_messages(system: Any) -> list[JSON]:
    """Top-level ``system`` (string or text blocks) -> zero or one canonical system message."""
    if system is None or system == "":
        return []
    if isinstance(system, str):
        return [{"role": "system", "content": system}]
    _need(isinstance(system, list), "Input should be a valid string or list", "system")
    parts = []
    for j, block in enumerate(system):
        param = f"system.{j}"
        _need(isinstance(block, dict) and block.get("type") == "text", "Input should be a text block", param)
        parts.append(_text_part(block, param))
    return [{"role": "system", "content": _compact(parts)}] if parts else []


def convert_tools(tools: Any) -> tuple[list[JSON], list[JSON]]:
    """Anthropic tools -> (canonical function tools, server tools kept for Anthropic)."""
    _need(isinstance(tools, list), "Input should be a valid list", "tools")
    functions: list[JSON] = []
    server: list[JSON] = []
    for i, tool in enumerate(tools):
        param = f"tools.{i}"
        _need(isinstance(tool, dict), "Input should be an object", param)
        if tool.get("type") not in (None, "custom") and "input_schema" not in tool:
            server.append(tool)
            continue
        _need(isinstance(tool.get("name"), str) and bool(tool["name"]), "Field required", f"{param}.name")
        _need(isinstance(tool.get("input_schema"), dict), "Field required (an object)", f"{param}.input_schema")
        function: JSON = {"name": tool["name"], "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        item: JSON = {"type": "function", "function": function}
        # what only Anthropic reads (input_examples, defer_loading, allowed_callers, type), for an Anthropic upstream
        private = {k: v for k, v in tool.items() if k not in _TOOL_MAPPED}
        if tool.get("strict") is not None:
            function["strict"] = tool["strict"] is True and openai_strict(tool["input_schema"])
            if tool["strict"] is True and not function["strict"]:  # kept for an Anthropic upstream
                private["strict"] = True
        if private:
            item["_anthropic"] = private
        if tool.get("cache_control") is not None:
            item["cache_control"] = tool["cache_control"]
        functions.append(item)
    return functions, server


def openai_strict(schema: Any) -> bool:
    """Whether OpenAI's strict mode takes this schema: every object closed (``additionalProperties: false``)
    and requiring all its properties. Anthropic's strict mode takes optional properties; sent as strict to an
    OpenAI-style upstream such a schema is its 400, so it goes without strict there (the schema still guides)."""
    if isinstance(schema, list):
        return all(openai_strict(s) for s in schema)
    if not isinstance(schema, dict):
        return True
    props = schema.get("properties")
    if schema.get("type") == "object" and (schema.get("additionalProperties") is not False
                                           or set(props or ()) - set(schema.get("required") or ())):
        return False
    subs = [*(props or {}).values(), *(schema.get("$defs") or {}).values()]
    return openai_strict([*subs, schema.get("items"), *(schema.get(k) or () for k in ("anyOf", "allOf"))])


def parse_arguments(arguments: Any) -> JSON:
    """Tool-call arguments (a JSON string) -> tool_use ``input`` (always an object)."""
    if isinstance(arguments, dict):
        return arguments
    try:
        parsed = orjson.loads(arguments or "{}")
    except orjson.JSONDecodeError:
        return {"_raw_arguments": str(arguments)}  # the model wrote invalid JSON: keep it visible
    return parsed if isinstance(parsed, dict) else {"value": parsed}


def response_content(message: JSON, thinking: Any) -> list[JSON]:
    """Canonical assistant message -> Anthropic content blocks (thinking, text, tool_use)."""
    out: list[JSON] = []
    if isinstance(thinking, list):
        out.extend(thinking)
    elif message.get("reasoning_content"):
        out.append({"type": "thinking", "thinking": message["reasoning_content"], "signature": ""})
    content = message.get("content")
    if isinstance(content, list):
        content = "".join(str(p.get("text") or p.get("refusal") or "") for p in content if isinstance(p, dict))
    text = content or message.get("refusal")
    if text:
        out.append({"type": "text", "text": text})
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        tool_use = {"type": "tool_use", "id": call.get("id"), "name": fn.get("name")}
        tool_use["input"] = parse_arguments(fn.get("arguments"))
        out.append(tool_use)
    return out
