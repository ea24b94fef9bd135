"""Canonical (OpenAI Chat Completions) request -> Anthropic Messages request, as pure dict work.

No I/O, clock or logging here, so every mapping is tested on recorded fixtures.
Responses are mapped back in ``translate_response``, streams in ``translate_stream``.

Choices worth knowing:

* ``response_format`` ``json_schema`` becomes Anthropic's native structured output
  (``output_config.format``); ``json_object`` has no native twin, so one line is
  added to the system prompt asking for a single JSON object (see ``strict_schema``,
  which also reshapes the schemas of structured output and strict tools into what
  Anthropic's grammar takes).
* ``tool_choice`` without ``tools`` is OpenAI's own 400, not a silent drop.
* ``reasoning_effort`` becomes extended thinking (see ``thinking``).
* ``temperature`` is clamped to Anthropic's 0..1; ``n`` > 1 is refused; ``seed``,
  penalties and ``logprobs`` are dropped (Anthropic has no such knobs).
* Private ``_anthropic`` keys (see ``aigw.schema.anthropic``) carry what the
  canonical shape cannot: top level, fields merged into the request (top_k,
  thinking, ...); on an assistant message, ``thinking`` blocks to send back and its
  tool_use blocks' ``cache_control``; on a tool message, extra ``tool_result`` fields
  (is_error, cache_control); on a user message's image or PDF, the ``tool_result`` it
  came out of, where it goes back. ``cache_control`` on a content part or a tool is kept as-is.
* A ``file`` part becomes the block that holds its type (a PDF a document, plain text a
  text document, an image an image); an uploaded ``file_id``, another type, or an image
  type Anthropic does not read is a 400 before the call, never Anthropic's 400 passed on.
* OpenAI's custom tools (``type: "custom"``: free-text input, optionally held to a
  Lark or regex grammar), their calls and a ``tool_choice`` naming one are refused
  with a 400 that says so: Anthropic tools take a JSON object, and wrapping the text
  in one would drop the grammar the client relies on.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from aigw.errors import InvalidRequest
from aigw.providers.anthropic.strict_schema import apply_response_format
from aigw.providers.anthropic.thinking import DEFAULT_MAX_TOKENS, apply_reasoning_effort
from aigw.providers.anthropic.tools import NO_CUSTOM, apply_tools, tool_id
from aigw.schema.anthropic import BETA_KEY, beta_values
from aigw.schema.anthropic_blocks import IMAGE_MEDIA_TYPES, ONLY_ANTHROPIC
from aigw.types import JSON

SERVER_TOOLS_KEY = "server_tools"  # inside `_anthropic`: Anthropic server tools (web search, ...)


# ---------------------------------------------------------------- request: content


_TAKES = "anthropic takes PDF, plain text and JPEG, PNG, GIF or WebP images"


def _data_url(url: str, param: str) -> tuple[str, str]:
    """(media type, base64 data) of a ``data:`` URL; not base64 encoded is the client's 400."""
    header, sep, data = url[5:].partition(",")
    media_type, _, encoding = header.partition(";")
    if not sep or encoding != "base64":
        raise InvalidRequest("data URLs must be base64 encoded (data:<media type>;base64,<data>)", param=param)
    return media_type.strip().lower(), data


def _image_block(part: JSON, param: str) -> JSON:
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str) or not url:
        raise InvalidRequest("image_url.url must be a non-empty string", param=param)
    if url.startswith("data:"):
        return _inline_image(*_data_url(url, param), param)
    return {"type": "image", "source": {"type": "url", "url": url}}


def _inline_image(media_type: str, data: str, param: str) -> JSON:
    if media_type not in IMAGE_MEDIA_TYPES:  # Anthropic's own 400 otherwise, after the call was sent
        raise InvalidRequest(f"an image of type {media_type!r} cannot be sent: {_TAKES}", param=param)
    return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}


def _file_block(part: JSON, param: str) -> JSON:
    """An OpenAI ``file`` part as the Anthropic block that holds it: a PDF a document, an image an image, plain
    text a text document (Anthropic's document blocks take PDFs and plain text only). An uploaded file
    (``file_id``) is the client's upload at OpenAI, which Anthropic cannot read: refused, as any other type."""
    spec = part.get("file")
    spec = spec if isinstance(spec, dict) else {}
    data_url = spec.get("file_data")
    if not isinstance(data_url, str) or not data_url.startswith("data:"):
        sent = "an uploaded file's file_id" if spec.get("file_id") else "file_data that is not a data URL"
        raise InvalidRequest(f"anthropic takes files inline only, as file_data holding a base64 data URL, not "
                             f"{sent}", param=param)
    media_type, data = _data_url(data_url, param)
    if media_type == "application/pdf":
        return {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if media_type == "text/plain":
        try:
            text = base64.b64decode(data, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise InvalidRequest("file_data of type text/plain must be base64 encoded UTF-8 text",
                                 param=param) from None
        return {"type": "document", "source": {"type": "text", "media_type": media_type, "data": text}}
    if media_type.startswith("image/"):
        return _inline_image(media_type, data, param)
    raise InvalidRequest(f"a file of type {media_type!r} cannot be sent: {_TAKES}", param=param)


def _part_block(part: Any, param: str) -> JSON | None:
    """One canonical content part -> one Anthropic block (None: nothing to send)."""
    if not isinstance(part, dict):
        raise InvalidRequest("content parts must be objects", param=param)
    private = part.get("_anthropic")
    if isinstance(private, dict) and isinstance(private.get(ONLY_ANTHROPIC), dict):
        return dict(private[ONLY_ANTHROPIC])  # an Anthropic client's block the canonical shape cannot hold
    ptype = part.get("type")
    if ptype in ("text", "refusal"):
        text = part.get(ptype)
        if not isinstance(text, str):
            raise InvalidRequest(f"{ptype} part needs a string '{ptype}'", param=param)
        if not text:
            return None
        block: JSON = {"type": "text", "text": text}
    elif ptype == "image_url":
        block = _image_block(part, param)
    elif ptype == "file":
        block = _file_block(part, param)
    else:
        raise InvalidRequest(f"content part type {ptype!r} is not supported by anthropic", param=param)
    if "cache_control" in part:
        block["cache_control"] = part["cache_control"]
    if isinstance(private, dict) and isinstance(private.get("document"), dict):
        block = _document(block, private["document"])
    return block


def _document(block: JSON, fields: JSON) -> JSON:
    """A document block again, from the part an Anthropic client's document became (see ``aigw.schema``)."""
    fields = dict(fields)
    media_type = fields.pop("media_type", None)
    if block["type"] == "text":  # a text document: its text as the guardrails left it
        source = {"type": "text", "media_type": media_type or "text/plain", "data": block.pop("text")}
        block = {"type": "document", "source": source, **{k: v for k, v in block.items() if k != "type"}}
    return {**block, **fields}


def _content_blocks(content: Any, param: str) -> list[JSON]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    if not isinstance(content, list):
        raise InvalidRequest("content must be a string or a list of parts", param=param)
    blocks = []
    for i, part in enumerate(content):
        block = _part_block(part, f"{param}.{i}")
        if block is not None:
            blocks.append(block)
    return blocks


def _tool_use_blocks(tool_calls: Any, param: str) -> list[JSON]:
    if not isinstance(tool_calls, list):
        raise InvalidRequest("tool_calls must be a list", param=param)
    blocks = []
    for i, call in enumerate(tool_calls):
        if isinstance(call, dict) and call.get("type") == "custom":
            raise InvalidRequest(NO_CUSTOM.format(what="custom tool calls"), param=f"{param}.{i}")
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise InvalidRequest("each tool call needs function.name", param=f"{param}.{i}")
        raw = fn.get("arguments") or "{}"
        try:
            args = orjson.loads(raw) if isinstance(raw, str) else raw
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "tool call arguments must be valid JSON", param=f"{param}.{i}.function.arguments"
            ) from None
        if not isinstance(args, dict):
            raise InvalidRequest("tool call arguments must be a JSON object", param=f"{param}.{i}.function.arguments")
        blocks.append({"type": "tool_use", "id": tool_id(call.get("id")) or f"toolu_{i}", "name": fn["name"],
                       "input": args})
    return blocks


def _tool_result_block(msg: JSON, param: str) -> JSON:
    content = msg.get("content")
    if isinstance(content, list):
        content = _content_blocks(content, f"{param}.content")
    elif content is not None and not isinstance(content, str):
        raise InvalidRequest("tool message content must be a string or parts", param=f"{param}.content")
    block: JSON = {"type": "tool_result", "tool_use_id": tool_id(msg.get("tool_call_id"))}
    if content:
        block["content"] = content
    extra = msg.get("_anthropic")
    if isinstance(extra, dict):
        block.update(extra)
    return block


# ---------------------------------------------------------------- request: messages


def _signed(block: Any) -> bool:
    """Whether Anthropic takes this thinking block back. Another provider's reasoning, shown to an Anthropic
    client as a thinking block with an empty signature, would be Anthropic's 400 "Invalid `signature` in
    `thinking` block" after a fallback or a change of model: it is left out."""
    return not (isinstance(block, dict) and block.get("type") == "thinking" and not block.get("signature"))


def _turn_blocks(msg: JSON, role: str, param: str) -> list[JSON]:
    if role == "tool":
        return [_tool_result_block(msg, param)]
    blocks = _content_blocks(msg.get("content"), f"{param}.content")
    if role == "assistant":
        extra = msg.get("_anthropic")
        if isinstance(extra, dict) and isinstance(extra.get("thinking"), list):
            blocks = [*(b for b in extra["thinking"] if _signed(b)), *blocks]
        if msg.get("tool_calls"):
            uses = _tool_use_blocks(msg["tool_calls"], f"{param}.tool_calls")
            cached = extra.get("tool_use_cache_control") if isinstance(extra, dict) else None
            if isinstance(cached, dict):
                uses = [{**u, "cache_control": cached[u["id"]]} if u["id"] in cached else u for u in uses]
            blocks += uses
    return blocks


def _back_into_results(msg: JSON, turn: JSON | None, param: str) -> JSON:
    """A user message without the images and PDFs that came out of a ``tool_result`` (canonical tool messages
    take text only; see ``aigw.schema.anthropic``): each goes back into its result, where the client sent it."""
    content = msg.get("content")
    if not isinstance(content, list) or turn is None or turn["role"] != "user":
        return msg
    results = {b.get("tool_use_id"): b for b in turn["content"] if b.get("type") == "tool_result"}
    kept = []
    for i, part in enumerate(content):
        origin = part.get("_anthropic") if isinstance(part, dict) else None
        result = results.get(origin.get("tool_use_id")) if isinstance(origin, dict) else None
        block = _part_block(part, f"{param}.content.{i}") if result is not None else None
        if result is None or block is None or not isinstance(origin, dict):
            kept.append(part)
            continue
        inner = result.get("content")
        inner = inner if isinstance(inner, list) else [{"type": "text", "text": inner}] if inner else []
        at = origin.get("at")
        inner.insert(at if isinstance(at, int) and at >= 0 else len(inner), block)
        result["content"] = inner
    return msg if len(kept) == len(content) else {**msg, "content": kept}


def _compact(content: list[JSON]) -> str | list[JSON]:
    """A lone plain text block is sent as a string, as most clients do."""
    if len(content) == 1 and content[0].get("type") == "text" and len(content[0]) == 2:
        return str(content[0]["text"])
    return content


def split_messages(messages: Any) -> tuple[list[JSON], list[JSON]]:
    """Canonical messages -> (system blocks, alternating Anthropic turns)."""
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("messages must be a non-empty list", param="messages")
    system: list[JSON] = []
    turns: list[JSON] = []
    for i, msg in enumerate(messages):
        param = f"messages.{i}"
        role = msg.get("role") if isinstance(msg, dict) else None
        if role in ("system", "developer"):
            for block in _content_blocks(msg.get("content"), f"{param}.content"):
                if block["type"] != "text":
                    raise InvalidRequest("system messages may only contain text", param=f"{param}.content")
                system.append(block)
            continue
        if role not in ("user", "assistant", "tool"):
            raise InvalidRequest(f"unsupported message role {role!r}", param=f"{param}.role")
        wire_role = "assistant" if role == "assistant" else "user"
        rest = _back_into_results(msg, turns[-1] if turns else None, param) if role == "user" else msg
        moved, msg = rest is not msg, rest
        blocks = _turn_blocks(msg, role, param)
        if not blocks and (role == "assistant" or moved):
            continue  # an empty assistant turn carries nothing, nor a user one whose parts went back into results
        if turns and turns[-1]["role"] == wire_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": wire_role, "content": blocks})
    if not turns:
        raise InvalidRequest("messages must contain at least one user or assistant message", param="messages")
    for turn in turns:
        turn["content"] = _compact(turn["content"])
    return system, turns


# ---------------------------------------------------------------- request: options


def _merge_private(req: JSON, extra: Any) -> None:
    """Add the top-level ``_anthropic`` fields without overriding what was translated.

    The key can come from any client, so it must not change the model, the messages
    or any limit the gateway set (the routed model is what is priced and allowed).
    """
    if not isinstance(extra, dict):
        return
    for key, value in extra.items():
        if key in (BETA_KEY, "model", "messages", "stream"):
            continue
        if key == SERVER_TOOLS_KEY:
            if isinstance(value, list):
                req["tools"] = [*req.get("tools", []), *value]
            continue
        current = req.get(key)
        if current is None:
            req[key] = value
        elif isinstance(current, dict) and isinstance(value, dict):
            req[key] = {**value, **current}


def _system_value(system: list[JSON]) -> str | list[JSON]:
    if any(len(block) > 2 for block in system):
        return system  # cache_control or other block fields must survive
    return "\n\n".join(str(block["text"]) for block in system)


def _sampling(req: JSON, body: JSON) -> None:
    if body.get("n") not in (None, 1):
        raise InvalidRequest("anthropic models return one choice; n must be 1", param="n")
    temperature = body.get("temperature")
    if temperature is not None:
        req["temperature"] = min(max(float(temperature), 0.0), 1.0)
    if body.get("top_p") is not None:
        req["top_p"] = body["top_p"]
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if isinstance(stop, list) else []
    # Anthropic refuses a stop sequence that is empty or only whitespace (400 "each stop sequence must contain
    # non-whitespace"), a common OpenAI setting (stop=["\n"]): those are left out, the others kept.
    kept = [s for s in stops if not isinstance(s, str) or s.strip()]
    if kept:
        req["stop_sequences"] = kept
    if isinstance(body.get("user"), str) and body["user"]:
        req["metadata"] = {"user_id": body["user"]}


def to_anthropic_request(body: JSON, upstream_model: str, *, stream: bool = False) -> JSON:
    """Canonical chat request -> Anthropic Messages request body."""
    system, turns = split_messages(body.get("messages"))
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
    req: JSON = {"model": upstream_model, "max_tokens": max_tokens, "messages": turns}
    apply_response_format(req, body.get("response_format"), system)
    if system:
        req["system"] = _system_value(system)
    _sampling(req, body)
    if body.get("tools"):
        apply_tools(req, body["tools"], body.get("tool_choice"), body.get("parallel_tool_calls"))
    elif body.get("tool_choice") is not None:  # OpenAI's own answer; dropping it would hide the client's bug
        raise InvalidRequest("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                             "specified.", param="tool_choice")
    apply_reasoning_effort(req, body, DEFAULT_MAX_TOKENS)
    if stream:
        req["stream"] = True
    _merge_private(req, body.get("_anthropic"))
    return req


def beta_header(body: JSON) -> str | None:
    """Value for the ``anthropic-beta`` header an inbound Anthropic client asked for."""
    extra = body.get("_anthropic")
    betas = extra.get(BETA_KEY) if isinstance(extra, dict) else None
    if isinstance(betas, list) and betas:
        return ",".join(str(b) for b in betas)
    return betas if isinstance(betas, str) and betas else None


def merge_betas(configured: str | None, asked: str) -> str:
    """The operator's ``anthropic-beta`` flags, then the client's new ones: each flag once."""
    if not configured:
        return asked
    return ",".join(dict.fromkeys([*beta_values(configured), *beta_values(asked)]))
