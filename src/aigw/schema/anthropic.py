"""The inbound Anthropic Messages API: validate, convert to canonical and back.

Pure dict work (no pydantic per request): ``/v1/messages`` costs about what ``/v1/chat/completions`` does. Called:

* ``messages_request_to_canonical(body, beta=...)`` -> canonical OpenAI body, or
  ``InvalidRequest`` naming the field (``param="messages.0.content"``);
* ``keep_beta(body, header)`` for the OpenAI endpoint's ``anthropic-beta`` header;
* ``canonical_to_message(resp, model)`` -> Anthropic ``message`` object;
* ``AnthropicStreamEncoder`` (in ``anthropic_stream``) for ``stream: true``;
* ``render_error(err)`` -> (status, Anthropic error body).

The ``_anthropic`` convention (private; every non-Anthropic adapter drops it):

* top level of a canonical request: Anthropic-only request fields (``top_k``,
  ``thinking``, ``service_tier``, ``output_config`` minus ``format`` ...) merged back
  into the upstream request by the Anthropic adapter; ``anthropic_beta`` there
  holds the values of the client's ``anthropic-beta`` header;
* on an assistant message: ``{"thinking": [blocks]}`` to send back verbatim, and
  ``tool_use_cache_control`` (tool_use id -> its ``cache_control``);
* on a tool message: extra ``tool_result`` fields (``is_error``, ``cache_control``;
  for other upstreams ``is_error`` turns into an ``Error:`` prefix on the content);
* on an image or PDF part of a user message: ``{"tool_use_id", "at"}``, the ``tool_result``
  and the place in its content the part came out of (canonical tool messages take text only);
* on the part a PDF by URL or a Files API block became: ``{"block": <as sent>, "param"}``, only an
  Anthropic upstream takes it (``anthropic_foreign`` refuses it for others);
* on the part a document became: ``{"document": {title, context, citations, media_type}}``
  (a text document's text stays in the canonical part, where the guardrails see it);
* on a canonical response or final chunk: ``stop_reason``/``stop_sequence``/``thinking`` finish_reason cannot say.

``cache_control`` is kept on content parts and tools (an Anthropic extension of the
canonical shape, also to be dropped by other adapters). ``strip_private(body)``
removes all of these, copy-on-write, for non-Anthropic upstreams and OpenAI clients.
"""

from __future__ import annotations

from typing import Any

from aigw.errors import GatewayError, InvalidRequest
from aigw.schema import anthropic_blocks as blocks
from aigw.types import JSON

PRIVATE_KEY = "_anthropic"
START_USAGE = "start_usage"  # a stream's first chunk: the input usage its message_start reported
BETA_KEY = "anthropic_beta"  # inside ``_anthropic``: the flags of the client's anthropic-beta header
TOOL_ERROR_PREFIX = "Error: "  # a failed tool's result (is_error), for upstreams with no such flag
_MAPPED_FIELDS = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "metadata",
        "stop_sequences",
        "stream",
        "temperature",
        "top_p",
        "tools",
        "tool_choice",
        "output_config",
    }
)
_FINISH_TO_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "content_filter": "refusal",
}

# kind -> (status, Anthropic error type); unavailable is 529 overloaded_error, Anthropic clients' "try again soon"
_ERROR_BY_KIND: dict[str, tuple[int, str]] = {
    "bad_request": (400, "invalid_request_error"),
    "context_length_exceeded": (400, "invalid_request_error"),
    "content_policy": (400, "invalid_request_error"),
    "guardrail_blocked": (400, "invalid_request_error"),
    "auth": (401, "authentication_error"),
    "permission_denied": (403, "permission_error"),
    "not_found": (404, "not_found_error"),
    "payload_too_large": (413, "request_too_large"),
    "rate_limited": (429, "rate_limit_error"),
    "quota_exceeded": (429, "rate_limit_error"),
    "budget_exceeded": (429, "rate_limit_error"),
    "unavailable": (529, "overloaded_error"),
    "timeout": (504, "timeout_error"),
    "upstream_error": (502, "api_error"),
    "upstream_model_not_found": (502, "api_error"),
}


def _number(body: JSON, key: str, low: float, high: float) -> None:
    value = body.get(key)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise InvalidRequest(f"{key}: Input should be a number between {low:g} and {high:g}", param=key)


def _validate_top(body: Any) -> JSON:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("model: Field required (a non-empty string)", param="model")
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise InvalidRequest("max_tokens: Field required", param="max_tokens")
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise InvalidRequest("max_tokens: Input should be an integer of at least 1", param="max_tokens")
    _number(body, "temperature", 0, 1)
    _number(body, "top_p", 0, 1)
    stops = body.get("stop_sequences")
    if stops is not None and (not isinstance(stops, list) or not all(isinstance(s, str) for s in stops)):
        raise InvalidRequest("stop_sequences: Input should be a list of strings", param="stop_sequences")
    if body.get("stream") is not None and not isinstance(body["stream"], bool):
        raise InvalidRequest("stream: Input should be a boolean", param="stream")
    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise InvalidRequest("metadata: Input should be an object", param="metadata")
    _anthropic_only(body)
    return body


def _anthropic_only(body: JSON) -> None:
    """Fields only an Anthropic upstream reads (others drop them): checked here all the same, so a client
    gets Anthropic's 400 for a wrong type whichever deployment serves it, not a silent drop."""
    top_k = body.get("top_k")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
        raise InvalidRequest("top_k: Input should be a non-negative integer", param="top_k")
    thinking = body.get("thinking")
    if thinking is not None and not (isinstance(thinking, dict) and isinstance(thinking.get("type"), str)):
        raise InvalidRequest("thinking: Input should be an object with a type", param="thinking.type")
    tier = body.get("service_tier")
    if tier is not None and not isinstance(tier, str):
        raise InvalidRequest("service_tier: Input should be a string", param="service_tier")
    container = body.get("container")  # a container's id, or the parameters of a new one
    if container is not None and not isinstance(container, str | dict):
        raise InvalidRequest("container: Input should be a string or an object", param="container")
    user_id = (body.get("metadata") or {}).get("user_id")
    if user_id is not None and not isinstance(user_id, str):
        raise InvalidRequest("metadata.user_id: Input should be a valid string", param="metadata.user_id")


def _tool_choice(choice: Any, out: JSON) -> None:
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise InvalidRequest("tool_choice.type: Input should be 'auto', 'any', 'tool' or 'none'", param="tool_choice")
    ctype = choice["type"]
    if ctype == "tool":
        if not isinstance(choice.get("name"), str):
            raise InvalidRequest("tool_choice.name: Field required", param="tool_choice.name")
        out["tool_choice"] = {"type": "function", "function": {"name": choice["name"]}}
    else:
        out["tool_choice"] = {"auto": "auto", "any": "required", "none": "none"}[ctype]
    if choice.get("disable_parallel_tool_use") is True:
        out["parallel_tool_calls"] = False


def _output_config(config: Any, out: JSON, private: JSON) -> None:
    if not isinstance(config, dict):
        raise InvalidRequest("output_config: Input should be an object", param="output_config")
    rest = {k: v for k, v in config.items() if k != "format"}
    fmt = config.get("format")
    if isinstance(fmt, dict) and fmt.get("type") == "json_schema":
        schema = fmt.get("schema") or {}
        spec = {"name": "output", "schema": schema, "strict": blocks.openai_strict(schema)}  # see openai_strict
        out["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif fmt is not None:
        rest["format"] = fmt
    if rest:
        private["output_config"] = rest


def beta_values(header: str | None) -> list[str]:
    """The flags of an ``anthropic-beta`` header (a comma list), in order, each once."""
    if not header:
        return []
    return list(dict.fromkeys(flag for part in header.split(",") if (flag := part.strip())))


def keep_beta(canonical: JSON, header: str | None) -> None:
    """Keep an ``anthropic-beta`` header on a canonical body (from the OpenAI endpoint).

    It rides in ``_anthropic``, so only an Anthropic upstream ever sees it.
    """
    betas = beta_values(header)
    if not betas:
        return
    private = canonical.get(PRIVATE_KEY)
    if not isinstance(private, dict):
        private = canonical[PRIVATE_KEY] = {}
    private[BETA_KEY] = betas


def messages_request_to_canonical(body: Any, *, beta: str | None = None) -> JSON:
    """Validate an Anthropic Messages request and return the canonical body.

    ``beta`` is the client's ``anthropic-beta`` header, kept for an Anthropic upstream.
    """
    body = _validate_top(body)
    messages = blocks.system_messages(body.get("system"))
    messages += blocks.convert_messages(body.get("messages"))
    out: JSON = {"model": body["model"], "messages": messages, "max_tokens": body["max_tokens"]}
    private: JSON = {}
    for key in ("temperature", "top_p"):
        if body.get(key) is not None:
            out[key] = body[key]
    if body.get("stop_sequences"):
        out["stop"] = list(body["stop_sequences"])
    user_id = (body.get("metadata") or {}).get("user_id")
    if isinstance(user_id, str) and user_id:
        out["user"] = user_id
    if body.get("tools") is not None:
        tools, server_tools = blocks.convert_tools(body["tools"])
        if tools:
            out["tools"] = tools
        if server_tools:
            private["server_tools"] = server_tools
    if body.get("tool_choice") is not None:
        _tool_choice(body["tool_choice"], out)
        if "tools" not in out:  # only server tools (or none): canonical tool_choice needs function tools
            out.pop("tool_choice")
            out.pop("parallel_tool_calls", None)
            private["tool_choice"] = body["tool_choice"]
    if body.get("output_config") is not None:
        _output_config(body["output_config"], out, private)
    if body.get("stream"):
        out["stream"] = True
        out["stream_options"] = {"include_usage": True}
    private.update({k: v for k, v in body.items() if k not in _MAPPED_FIELDS})
    if betas := beta_values(beta):
        private[BETA_KEY] = betas
    if private:
        out["_anthropic"] = private
    return out


# ---------------------------------------------------------------- responses


def message_id(canonical_id: Any) -> str:
    """An Anthropic-looking id (``msg_...``) for any canonical id."""
    raw = str(canonical_id or "")
    if raw.startswith("msg_"):
        return raw
    return "msg_" + ("".join(c for c in raw if c.isalnum()) or "gateway")


def anthropic_usage(usage: Any) -> JSON:
    """Canonical usage -> Anthropic usage, the counts the ledger bills (input_tokens without cache reads and writes,
    output_tokens with thinking); ``cache_creation`` only when there were writes (an answer without any as ever)."""
    usage = usage if isinstance(usage, dict) else {}
    details = usage.get("prompt_tokens_details")
    details = details if isinstance(details, dict) else {}
    # DeepSeek names its cache reads prompt_cache_hit_tokens (inside prompt_tokens, as OpenAI's cached_tokens)
    read = int(details.get("cached_tokens") or usage.get("prompt_cache_hit_tokens") or 0)
    write = int(details.get("cache_write_tokens") or 0)
    prompt = int(usage.get("prompt_tokens") or 0)
    output = int(usage.get("completion_tokens") or 0)
    # Gemini's and xAI's OpenAI-compatible APIs count thinking in total_tokens only: it is output (and billed so)
    if isinstance(total := usage.get("total_tokens"), int) and total > prompt + output:
        output = total - prompt
    out: JSON = {
        "input_tokens": max(0, prompt - read - write),
        "output_tokens": output,
        "cache_creation_input_tokens": write,
        "cache_read_input_tokens": read,
    }
    if write > 0:  # the split by TTL, as Anthropic sends it: a 1-hour write is priced 2x input, a 5-minute one 1.25x
        hour = min(write, max(0, int(details.get("cache_write_1h_tokens") or 0)))
        out["cache_creation"] = {"ephemeral_5m_input_tokens": write - hour, "ephemeral_1h_input_tokens": hour}
    tools = usage.get("server_tool_use")
    if isinstance(tools, dict):  # web searches and fetches the provider ran on its side, as it reported them
        out["server_tool_use"] = tools
    for key in ("inference_geo", "speed"):  # where and how fast it ran, as Anthropic reported it
        if isinstance(value := usage.get(key), str):
            out[key] = value
    return out


def matched_stop(choice: JSON, private: JSON) -> JSON:
    """``private`` with the stop sequence an OpenAI-compatible server says it stopped at: vLLM names the stop
    string in the choice's ``stop_reason`` (OpenAI itself says only ``stop``), which is Anthropic's
    ``stop_reason: stop_sequence`` with that ``stop_sequence``. An Anthropic upstream's own, carried, wins."""
    matched = choice.get("stop_reason")
    if isinstance(matched, str) and matched and choice.get("finish_reason") == "stop" and "stop_reason" not in private:
        return {**private, "stop_reason": "stop_sequence", "stop_sequence": matched}
    return private


def stop_reason(finish_reason: Any, private: Any, called_tools: bool = False) -> str:
    """Anthropic stop_reason: the upstream's own if it was carried, else mapped. An answer that called tools ends
    with ``tool_use`` even when an OpenAI-compatible server said ``stop`` (vLLM, Ollama): agent loops wait for it."""
    if isinstance(private, dict) and isinstance(private.get("stop_reason"), str):
        return str(private["stop_reason"])
    mapped = _FINISH_TO_STOP.get(str(finish_reason), "end_turn")
    return "tool_use" if called_tools and mapped == "end_turn" else mapped


def canonical_to_message(resp: JSON, model: str) -> JSON:
    """Canonical ``chat.completion`` -> Anthropic ``message`` (``model`` = name the client sent)."""
    choices = resp.get("choices") or [{}]
    choice = choices[0]
    message = choice.get("message") or {}
    private = resp.get("_anthropic")
    private = matched_stop(choice, private if isinstance(private, dict) else {})
    content = blocks.response_content(message, private.get("thinking"))
    return {
        "id": message_id(resp.get("id")),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        "stop_reason": stop_reason(choice.get("finish_reason"), private, bool(message.get("tool_calls"))),
        "stop_sequence": private.get("stop_sequence"),
        "usage": anthropic_usage(resp.get("usage")),
    }


def error_body(err: GatewayError) -> tuple[int, JSON]:
    """(status, inner ``error`` object) for one gateway error."""
    status, err_type = _ERROR_BY_KIND.get(err.kind, (500, "api_error"))
    if err.kind not in ("unavailable",):
        status = err.status
    if status >= 500 and err_type not in ("overloaded_error", "timeout_error"):
        err_type = "api_error"  # e.g. the operator's upstream key failed: not the client's auth
    elif status == 402:  # a budget answered as Payment Required (``tenancy.budget_status``), an upstream's 402
        err_type = "billing_error"
    return status, {"type": err_type, "message": err.message}


def render_error(err: GatewayError, *, request_id: str | None = None) -> tuple[int, JSON]:
    """Our error -> (HTTP status, Anthropic error body). Retry-After is the caller's header."""
    status, inner = error_body(err)
    body: JSON = {"type": "error", "error": inner}
    if request_id:
        body["request_id"] = request_id
    return status, body


# ---------------------------------------------------------------- for every other provider


def _without(obj: Any, key: str) -> Any:
    return {k: v for k, v in obj.items() if k != key} if isinstance(obj, dict) and key in obj else obj


def _clean_parts(parts: Any) -> Any:
    if not isinstance(parts, list):
        return parts
    cleaned = [_without(_without(p, "cache_control"), PRIVATE_KEY) for p in parts]
    return cleaned if any(c is not p for c, p in zip(cleaned, parts, strict=True)) else parts


def _failed_tool(msg: JSON) -> JSON:
    """A tool message from a ``tool_result`` with ``is_error: true``. OpenAI's tool messages have no such
    flag, so the content says it, where the model reads it."""
    content = msg.get("content")
    if isinstance(content, list):
        return {**msg, "content": [{"type": "text", "text": TOOL_ERROR_PREFIX}, *content]}
    return {**msg, "content": f"{TOOL_ERROR_PREFIX}{content}" if content else TOOL_ERROR_PREFIX.rstrip()}


def _clean_item(item: Any, nested: str) -> Any:
    """One message, tool or choice without private keys (the same object when it had none)."""
    if isinstance(item, dict) and item.get("role") == "tool":
        private = item.get(PRIVATE_KEY)
        if isinstance(private, dict) and private.get("is_error") is True:
            item = _failed_tool(item)
    out = _without(_without(item, PRIVATE_KEY), "cache_control")
    if isinstance(out, dict):
        for key in (nested, "delta", "message"):
            value = out.get(key)
            cleaned = _clean_parts(value) if key == nested else _clean_item(value, "content")
            if cleaned is not value:
                out = {**out, key: cleaned}
    return out


def _clean_list(items: Any, nested: str) -> Any:
    if not isinstance(items, list):
        return items
    cleaned = [_clean_item(item, nested) for item in items]
    return cleaned if any(c is not i for c, i in zip(cleaned, items, strict=True)) else items


def strip_private(body: JSON) -> JSON:
    """``body`` without the Anthropic-only extensions, for any non-Anthropic upstream or client.

    Removes ``_anthropic`` (top level, messages, content parts, choices, deltas) and ``cache_control``
    (content parts, tools); a tool result's ``is_error`` becomes an ``Error:`` prefix on its
    content. Copy-on-write: ``body`` itself is never changed (a retry may send it to an
    Anthropic deployment), and is returned as-is when it has none.
    """
    out = _without(body, PRIVATE_KEY)
    for key, nested in (("messages", "content"), ("tools", "function"), ("choices", "content")):
        value = body.get(key)
        cleaned = _clean_list(value, nested)
        if cleaned is not value:
            out = {**out, key: cleaned}
    return out  # type: ignore[no-any-return]
