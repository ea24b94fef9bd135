"""OpenAI's wire format, as the API reference describes it: validation, answers, chunks, errors.

Pure functions used by the fake upstreams. Answers are derived from the input so tests
can predict them: the assistant echoes the last user text ("Echo: ..."), truncated to
``max_tokens``/``max_completion_tokens`` words (finish_reason ``length``); with tools
offered and a user message last it calls them (every offered tool unless
``parallel_tool_calls`` is false or ``tool_choice`` names one) with arguments built
from their JSON schemas (a custom tool gets the last user text as its free-text
``input``, streamed as ``custom.input`` pieces); after tool results it answers "Tool results: ...";
``response_format`` json_object/json_schema gives JSON content; ``logprobs`` one entry per streamed piece.
Tokens are counted as whitespace-separated words, plus 3 per message.
"""

from __future__ import annotations

import base64
import hashlib
import random
import struct
import time
from typing import Any

import orjson

JSON = dict[str, Any]
FINGERPRINT = "fp_f85bea6784"

# model id -> (kind, context window in tokens, embedding dimensions)
MODELS: dict[str, tuple[str, int, int]] = {
    "gpt-4o-mini": ("chat", 128_000, 0),
    "gpt-4o": ("chat", 128_000, 0),
    "o3-mini": ("chat", 200_000, 0),
    "tiny-context": ("chat", 40, 0),
    "gpt-3.5-turbo-instruct": ("completion", 4_096, 0),
    "text-embedding-3-small": ("embedding", 8_191, 1536),
    "text-embedding-ada-002": ("embedding", 8_191, 1536),
}
REASONING = ("o1", "o3", "o4", "gpt-5")


class WireError(Exception):
    """An error answer: HTTP status plus OpenAI's error body."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = error_body(message, type_, param, code)


def error_body(message: str, type_: str | None = "invalid_request_error",
               param: str | None = None, code: str | None = None) -> JSON:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def digest(body: Any) -> str:
    return hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()


def text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p.get("text", "[image]") for p in content if isinstance(p, dict))
    return ""


def count(text: str) -> int:
    return len(text.split())


IMAGE_TOKENS = {"low": 85}  # as OpenAI bills an image part; any other detail: a 1024x1024 image's 765
IMAGE_TOKENS_HIGH = 765


def image_tokens(content: Any) -> int:
    """What the images of a message cost (the fake reads no image bytes: every image is 1024x1024)."""
    if not isinstance(content, list):
        return 0
    return sum(IMAGE_TOKENS.get((p.get("image_url") or {}).get("detail"), IMAGE_TOKENS_HIGH)
               for p in content if isinstance(p, dict) and p.get("type") == "image_url")


def prompt_tokens(messages: list[JSON]) -> int:
    return sum(count(text_of(m.get("content"))) + image_tokens(m.get("content")) + 3 for m in messages) + 3


# -- validation -------------------------------------------------------------------


def check_model(body: JSON, kind: str, endpoint: str) -> str:
    model = body.get("model")
    if not model:
        raise WireError(400, "you must provide a model parameter")
    if model not in MODELS:
        raise WireError(404, f"The model `{model}` does not exist or you do not have access to it.",
                        code="model_not_found")
    if MODELS[model][0] != kind:
        raise WireError(404, f"This is not a {kind} model and thus not supported in the {endpoint}"
                        " endpoint.")
    return str(model)


def check_stream_options(body: JSON) -> None:
    if body.get("stream_options") is not None and not body.get("stream"):
        raise WireError(400, "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
                        param="stream_options")


def validate_chat(body: JSON) -> str:
    """Reject what the real API rejects; returns the model id."""
    model = check_model(body, "chat", "v1/chat/completions")
    messages = body.get("messages")
    if messages is None:
        raise WireError(400, "Missing required parameter: 'messages'.", param="messages",
                        code="missing_required_parameter")
    if not isinstance(messages, list) or not messages:
        raise WireError(400, "Invalid 'messages': empty array. Expected an array with minimum length 1,"
                        " but got an empty array instead.", param="messages", code="empty_array")
    check_stream_options(body)
    for i, msg in enumerate(messages):
        check_parts(msg, f"messages[{i}]")
    if model.startswith(REASONING) and "max_tokens" in body:
        raise WireError(400, "Unsupported parameter: 'max_tokens' is not supported with this model."
                        " Use 'max_completion_tokens' instead.", param="max_tokens",
                        code="unsupported_parameter")
    fmt = (body.get("response_format") or {}).get("type")
    if fmt == "json_object" and "json" not in orjson.dumps(messages).decode().lower():
        raise WireError(400, "'messages' must contain the word 'json' in some form, to use"
                        " 'response_format' of type 'json_object'.", param="messages")
    window = MODELS[model][1]
    used = prompt_tokens(messages)
    if used + int(body.get("max_completion_tokens") or body.get("max_tokens") or 0) > window:
        raise WireError(400, f"This model's maximum context length is {window} tokens. However, your"
                        f" messages resulted in {used} tokens. Please reduce the length of the messages.",
                        param="messages", code="context_length_exceeded")
    return model


PART_TYPES = ("text", "image_url", "input_audio", "refusal", "audio", "file")
TEXT_ONLY_ROLES = frozenset({"system", "developer", "tool"})  # their content parts are text only


def check_parts(msg: Any, at: str) -> None:
    """A message's content parts as the API checks them: a known ``type``; text only from system, developer
    and tool messages; an ``image_url`` with its ``url``; a ``file`` with either an uploaded ``file_id`` or
    inline ``file_data`` (a base64 data URL) and the ``filename`` that goes with it, never both."""
    content = msg.get("content") if isinstance(msg, dict) else None
    if not isinstance(content, list):
        return
    for j, part in enumerate(content):
        where = f"{at}.content[{j}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind not in PART_TYPES:
            listed = ", ".join(f"'{t}'" for t in PART_TYPES[:-1]) + f", and '{PART_TYPES[-1]}'"
            raise WireError(400, f"Invalid value: '{kind}'. Supported values are: {listed}.",
                            param=f"{where}.type", code="invalid_value")
        if msg.get("role") in TEXT_ONLY_ROLES and kind != "text":
            raise WireError(400, f"Invalid value: '{kind}'. Supported values are: 'text'.",
                            param=f"{where}.type", code="invalid_value")
        if kind == "image_url":
            url = (part.get("image_url") or {}).get("url") if isinstance(part.get("image_url"), dict) else None
            if not isinstance(url, str) or not url:
                raise WireError(400, f"Missing required parameter: '{where}.image_url.url'.",
                                param=f"{where}.image_url.url", code="missing_required_parameter")
        elif kind == "file":
            _check_file(part.get("file"), f"{where}.file")


def _check_file(spec: Any, where: str) -> None:
    spec = spec if isinstance(spec, dict) else {}
    if "file_id" in spec and ("file_data" in spec or "filename" in spec):
        raise WireError(400, f"Mutually exclusive parameters: '{where}'. Ensure you are only providing one of: "
                        "'file_id' or 'file_data'.", param=where, code="mutually_exclusive_parameters")
    if isinstance(spec.get("file_id"), str) and spec["file_id"]:
        return
    if not isinstance(spec.get("file_data"), str) or not isinstance(spec.get("filename"), str):
        # as the API says it: a file part without an upload's id names the id it then wanted
        raise WireError(400, f"Missing required parameter: '{where}.file_id'.", param=f"{where}.file_id",
                        code="missing_required_parameter")
    head, comma, _ = spec["file_data"].partition(",")
    if not (head.startswith("data:") and head.endswith(";base64") and comma):
        raise WireError(400, f"Invalid '{where}.file_data'. Expected a base64-encoded data URL.",
                        param=f"{where}.file_data", code="invalid_value")


# -- answers ----------------------------------------------------------------------


def example(schema: Any, seed: str) -> Any:
    """A deterministic value that fits a (simple) JSON schema."""
    if not isinstance(schema, dict):
        return seed
    kind = schema.get("type")
    if "enum" in schema:
        return schema["enum"][0]
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: example(v, seed) for k, v in props.items()}
    return {"integer": len(seed), "number": len(seed) / 2, "boolean": True, "array": [],
            "null": None}.get(str(kind), seed)


def _named(tool: JSON) -> tuple[str, str]:
    return tool["type"], tool[tool["type"]]["name"]


def tool_calls(body: JSON) -> list[JSON] | None:
    tools = [t for t in body.get("tools") or [] if t.get("type") in ("function", "custom")]
    messages = body["messages"]
    choice = body.get("tool_choice")
    if not tools or messages[-1].get("role") != "user" or choice == "none":
        return None
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = {_named(t) for t in choice["allowed_tools"]["tools"]}
        tools = [t for t in tools if _named(t) in allowed]
    elif isinstance(choice, dict):
        tools = [t for t in tools if _named(t) == (choice["type"], choice[choice["type"]]["name"])]
    elif body.get("parallel_tool_calls") is False:
        tools = tools[:1]
    last = text_of(messages[-1].get("content"))
    seed = last.split(" ")[0] or "x"
    calls = []
    for i, t in enumerate(tools[:3]):
        call_id = f"call_{digest([body, i])[:24]}"
        if t["type"] == "custom":
            calls.append({"id": call_id, "type": "custom", "custom": {"name": t["custom"]["name"], "input": last}})
            continue
        args = orjson.dumps(example(t["function"].get("parameters"), seed)).decode()
        calls.append({"id": call_id, "type": "function",
                      "function": {"name": t["function"]["name"], "arguments": args}})
    return calls


def answer(body: JSON) -> tuple[str | None, list[JSON] | None, str]:
    """(content, tool_calls, finish_reason) for a validated chat request."""
    calls = tool_calls(body)
    if calls:
        return None, calls, "tool_calls"
    messages = body["messages"]
    last = messages[-1]
    if last.get("role") == "tool":
        tail = [text_of(m.get("content")) for m in messages if m.get("role") == "tool"]
        text = "Tool results: " + "; ".join(tail)
    else:
        users = [m for m in messages if m.get("role") == "user"]
        text = "Echo: " + (text_of(users[-1].get("content")) if users else "")
    fmt = body.get("response_format") or {}
    if fmt.get("type") == "json_object":
        text = orjson.dumps({"echo": text}).decode()
    elif fmt.get("type") == "json_schema":
        text = orjson.dumps(example(fmt["json_schema"].get("schema"), text)).decode()
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    words = text.split(" ")
    if limit is not None and len(words) > int(limit):
        return " ".join(words[: int(limit)]), None, "length"
    return text, None, "stop"


def usage(prompt: int, completion: int) -> JSON:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion,
            "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0,
                                          "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0}}


def completion_tokens(content: str | None, calls: list[JSON] | None) -> int:
    if calls:
        return sum(count(c["function"]["arguments"] if c["type"] == "function" else c["custom"]["input"]) + 5
                   for c in calls)
    return count(content or "")


def logprobs(tokens: list[str], body: JSON) -> JSON | None:
    """``choice.logprobs`` for these tokens when asked (``logprobs: true``), ``top_logprobs`` alternatives each."""
    if not body.get("logprobs"):
        return None
    top = int(body.get("top_logprobs") or 0)
    entries = []
    for token in tokens:
        own = -round(int(digest(token)[:4], 16) / 65536, 4)
        alts = [(token, own)] + [(f"{token}{i}", own - 1 - i) for i in range(max(0, top - 1))]
        entries.append({"token": token, "logprob": own, "bytes": list(token.encode()),
                        "top_logprobs": [{"token": t, "logprob": p, "bytes": list(t.encode())} for t, p in alts]})
    return {"content": entries, "refusal": None}


def chat_completion(body: JSON, model: str) -> JSON:
    content, calls, finish = answer(body)
    message: JSON = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if calls:
        message["tool_calls"] = calls
    n = int(body.get("n") or 1)
    scores = None if calls else logprobs(pieces(content or ""), body)
    return {
        "id": "chatcmpl-" + digest(body)[:29], "object": "chat.completion", "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": message, "logprobs": scores, "finish_reason": finish}
                    for i in range(n)],
        "usage": usage(prompt_tokens(body["messages"]), n * completion_tokens(content, calls)),
        "service_tier": served_tier(body), "system_fingerprint": FINGERPRINT,
    }


def served_tier(body: JSON) -> str:
    """The tier the answer reports it was processed in: flex or priority when asked, else default."""
    asked = body.get("service_tier")
    return asked if asked in ("flex", "priority") else "default"


def pieces(text: str, size: int = 0) -> list[str]:
    """Split text the way streams do: words with their leading space, or fixed-size fragments."""
    if size:
        return [text[i:i + size] for i in range(0, len(text), size)] or [""]
    words = text.split(" ")
    return [words[0]] + [" " + w for w in words[1:]]


def chat_chunks(body: JSON, model: str) -> list[JSON]:
    """The chat.completion.chunk objects of one streamed answer, usage chunk included if asked."""
    content, calls, finish = answer(body)
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    head = {"id": "chatcmpl-" + digest(body)[:29], "object": "chat.completion.chunk",
            "created": int(time.time()), "model": model, "service_tier": served_tier(body),
            "system_fingerprint": FINGERPRINT}
    if include_usage:
        head["usage"] = None
    deltas: list[JSON] = []
    if calls:
        deltas.append({"role": "assistant", "content": None, "refusal": None})
        for i, call in enumerate(calls):
            kind = call["type"]
            field = "arguments" if kind == "function" else "input"  # custom: free text, as OpenAI streams it
            spec = call[kind]
            deltas.append({"tool_calls": [{"index": i, "id": call["id"], "type": kind,
                                           kind: {"name": spec["name"], field: ""}}]})
            deltas += [{"tool_calls": [{"index": i, kind: {field: part}}]} for part in pieces(spec[field], 7)]
    else:
        deltas.append({"role": "assistant", "content": "", "refusal": None})
        deltas += [{"content": part} for part in pieces(content or "")]
    chunks: list[JSON] = []
    for index in range(int(body.get("n") or 1)):
        chunks += [{**head, "choices": [{"index": index, "delta": d, "finish_reason": None,
                                         "logprobs": logprobs([d["content"]], body) if d.get("content") else None}]}
                   for d in deltas]
        chunks.append({**head, "choices": [{"index": index, "delta": {}, "logprobs": None,
                                            "finish_reason": finish}]})
    if include_usage:
        n = int(body.get("n") or 1)
        chunks.append({**head, "choices": [],
                       "usage": usage(prompt_tokens(body["messages"]), n * completion_tokens(content, calls))})
    return chunks


def frame(chunks: list[JSON]) -> list[bytes]:
    return [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]


# -- legacy completions and embeddings -----------------------------------------------


def validate_completion(body: JSON) -> str:
    model = check_model(body, "completion", "v1/completions")
    if "prompt" not in body:
        raise WireError(400, "Missing required parameter: 'prompt'.", param="prompt",
                        code="missing_required_parameter")
    check_stream_options(body)
    return model


def completion_answer(body: JSON) -> tuple[str, str, int]:
    prompt = body["prompt"]
    text = " " + (prompt if isinstance(prompt, str) else " ".join(map(str, prompt))) + " indeed."
    limit = int(body.get("max_tokens") or 16)
    words = text.split(" ")
    if len(words) - 1 > limit:
        return " ".join(words[: limit + 1]), "length", count(str(prompt))
    return text, "stop", count(str(prompt))


def completion(body: JSON, model: str) -> JSON:
    text, finish, prompt = completion_answer(body)
    return {"id": "cmpl-" + digest(body)[:29], "object": "text_completion", "created": int(time.time()),
            "model": model, "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
            "usage": {"prompt_tokens": prompt, "completion_tokens": count(text),
                      "total_tokens": prompt + count(text)}}


def completion_chunks(body: JSON, model: str) -> list[JSON]:
    text, finish, prompt = completion_answer(body)
    head = {"id": "cmpl-" + digest(body)[:29], "object": "text_completion", "created": int(time.time()),
            "model": model, "system_fingerprint": FINGERPRINT}
    chunks = [{**head, "choices": [{"text": part, "index": 0, "logprobs": None, "finish_reason": None}]}
              for part in pieces(text)]
    chunks.append({**head, "choices": [{"text": "", "index": 0, "logprobs": None, "finish_reason": finish}]})
    if (body.get("stream_options") or {}).get("include_usage"):
        chunks.append({**head, "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens":
                                                       count(text), "total_tokens": prompt + count(text)}})
    return chunks


def vector(text: str, dims: int) -> list[float]:
    """A deterministic unit vector whose floats survive a float32 round trip exactly."""
    rng = random.Random(hashlib.sha256(text.encode()).digest())
    raw = [rng.gauss(0.0, 1.0) for _ in range(dims)]
    norm = sum(x * x for x in raw) ** 0.5 or 1.0
    return list(struct.unpack(f"<{dims}f", struct.pack(f"<{dims}f", *(x / norm for x in raw))))


def embeddings(body: JSON) -> JSON:
    model = check_model(body, "embedding", "v1/embeddings")
    if "input" not in body:
        raise WireError(400, "Missing required parameter: 'input'.", param="input",
                        code="missing_required_parameter")
    inputs = body["input"]
    if isinstance(inputs, str) or (isinstance(inputs, list) and inputs and isinstance(inputs[0], int)):
        inputs = [inputs]
    if not inputs or inputs == [""]:
        raise WireError(400, "'$.input' is invalid. Please check the API reference.", param="input")
    dims = int(body.get("dimensions") or MODELS[model][2])
    fmt = body.get("encoding_format") or "float"
    data = []
    for i, item in enumerate(inputs):
        vec = vector(str(item), dims)
        value: Any = vec if fmt == "float" else base64.b64encode(struct.pack(f"<{dims}f", *vec)).decode()
        data.append({"object": "embedding", "index": i, "embedding": value})
    tokens = sum(count(str(item)) for item in inputs)
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def model_list() -> JSON:
    return {"object": "list", "data": [{"id": m, "object": "model", "created": 1_700_000_000,
                                        "owned_by": "system"} for m in MODELS]}
