"""Map OpenAI-family failures (status + ``{"error": {...}}`` body) to the gateway's kinds.

Shared by ``openai``, ``azure`` and ``openai_compatible``: the body shape is the same
family-wide, and the codes routing cares about (context length, content filter, rate
limits, an exhausted quota, a model the upstream does not have) are read from ``code``,
``type``, Azure's ``innererror`` and, for servers that only send prose, the message. Variants seen in the wild are
accepted too: vLLM's top-level ``{"object": "error", "message": ...}``, Ollama's
``{"error": "text"}``, numeric ``code`` fields (OpenRouter) and Google's error object
wrapped in a one-item list (Gemini's OpenAI-compatible endpoint). Upstream messages are
kept (they say which parameter was wrong) but cut short and scrubbed of anything that
looks like a key; the raw body goes to ``detail`` only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from aigw import errors
from aigw.providers.http import error_for_status, parse_retry_after

_CONTEXT_CODES = frozenset({"context_length_exceeded", "context_window_exceeded"})
_BILLING = "upstream_billing"  # a 402: the account behind the deployment cannot pay for the call
_QUOTA = "insufficient_quota"  # a 429 that waiting will not fix: the account has no quota or credit
_POLICY_CODES = frozenset(
    {"content_policy_violation", "content_filter", "ResponsibleAIPolicyViolation", "invalid_prompt"}
)
_CONTEXT_TEXT = re.compile(
    r"context.length|context window|maximum context|prompt is too long|too many tokens", re.IGNORECASE
)
# A 404 that says the model or deployment the gateway's deployment names does not exist upstream (OpenAI's and
# Groq's ``model_not_found``, Azure's ``DeploymentNotFound``; vLLM's "The model `x` does not exist." and Ollama's
# 'model "x" not found, try pulling it first' carry no such code). Every other 404 is about the client's own
# input (a file, batch or ``previous_response_id`` it named) and stays a plain 404.
_MODEL_GONE_CODES = frozenset({"model_not_found", "DeploymentNotFound"})
_MODEL_GONE_TEXT = re.compile(r"^(?:The model `[^`]*` does not exist|model (?:\"[^\"]*\"|'[^']*') not found)")
MODEL_GONE = "upstream_model_not_found"
_KEYLIKE = re.compile(r"\b(?:sk-[A-Za-z0-9_\-*]{6,}|[A-Fa-f0-9]{32,})\b")
_MAX_MESSAGE = 500

# Stream error events carry no HTTP status: infer one from the error's type.
_STATUS_BY_TYPE = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_exceeded": 429,
    "rate_limit_error": 429,
    "requests": 429,
    "tokens": 429,
    "insufficient_quota": 429,
    "server_error": 500,
    "api_error": 500,
    "overloaded_error": 503,
    "service_unavailable": 503,
    "timeout": 504,
}
# Statuses whose meaning survives a non-JSON body (proxies and load balancers); a 413 is a body over the
# proxy's limit (nginx's client_max_body_size): the caller's request, which no retry makes smaller.
_STATUS_SPEAKS_FOR_ITSELF = frozenset({401, 403, 408, 413, 429, 503, 504, 529})


def scrub(message: str) -> str:
    """Cut an upstream message short and drop key-like strings (partial keys appear in 401s)."""
    message = _KEYLIKE.sub("[redacted]", message)
    return message if len(message) <= _MAX_MESSAGE else message[: _MAX_MESSAGE - 3] + "..."


def error_fields(parsed: Any) -> dict[str, Any] | None:
    """The ``error`` object of any family variant, or None when the body has none."""
    if isinstance(parsed, list) and len(parsed) == 1:  # Google's APIs: [{"error": {...}}]
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        return None
    err = parsed.get("error")
    if isinstance(err, dict):
        return err
    if isinstance(err, str):
        return {"message": err}
    if parsed.get("object") == "error" or ("message" in parsed and "choices" not in parsed):
        return parsed
    detail = parsed.get("detail")
    if isinstance(detail, str):  # FastAPI-based servers
        return {"message": detail}
    if isinstance(detail, list) and detail:  # FastAPI's request validation (a 422): one item per problem
        return {"message": validation_message(detail)}
    return None


def validation_message(items: list[Any]) -> str:
    """``loc: msg`` of each pydantic validation problem (``body.messages.0.content: Field required``); never
    its ``input``, which holds the caller's prompt."""
    parts = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("msg"), str):
            loc = item.get("loc")
            where = ".".join(str(p) for p in loc) if isinstance(loc, list) else ""
            parts.append(f"{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts) or "the upstream rejected the request as invalid"


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _message(err: Mapping[str, Any]) -> str | None:
    """The error's message; Mistral's 422 puts pydantic's problems there as ``{"detail": [...]}`` or a list."""
    message = err.get("message")
    if isinstance(message, dict):
        message = message.get("detail")
    if isinstance(message, list) and message:
        return validation_message(message)
    return _text(message)


def _policy_hit(err: Mapping[str, Any]) -> bool:
    if err.get("code") in _POLICY_CODES or err.get("type") in _POLICY_CODES:
        return True
    inner = err.get("innererror")
    return isinstance(inner, dict) and (
        inner.get("code") in _POLICY_CODES or "content_filter_result" in inner
    )


def map_error(status: int, text: str, parsed: Any, headers: Any) -> errors.GatewayError:
    """Turn an upstream error answer into the gateway error a client should see."""
    retry_after = parse_retry_after(headers) if headers is not None else None
    err = error_fields(parsed)
    if err is None:
        if status in _STATUS_SPEAKS_FOR_ITSELF:
            return error_for_status(
                status, f"upstream returned HTTP {status}", retry_after=retry_after, detail=text
            )
        return errors.UpstreamError(
            f"upstream returned HTTP {status} with a body that is not an OpenAI-style JSON error"
            " (is api_base right?)",
            detail=text,
        )
    return map_error_fields(status, err, retry_after=retry_after, detail=text)


def map_error_fields(
    status: int, err: Mapping[str, Any], *, retry_after: float | None = None, detail: str | None = None
) -> errors.GatewayError:
    """Classify one ``error`` object; ``status`` is the HTTP status (or one inferred)."""
    message = scrub(_message(err) or f"upstream returned HTTP {status}")
    raw_code = err.get("code")
    code = raw_code if isinstance(raw_code, str) and raw_code else None
    param = _text(err.get("param"))
    if status < 500 and _policy_hit(err):
        return errors.ContentPolicy(message, param=param, code=code or "content_filter", detail=detail)
    if status in (400, 413, 422) and (code in _CONTEXT_CODES or _CONTEXT_TEXT.search(message)):
        return errors.ContextLengthExceeded(
            message, param=param, code="context_length_exceeded", detail=detail
        )
    if status == 429 and _QUOTA in (code, err.get("type")):
        return errors.QuotaExceeded(message, param=param, code=code or _QUOTA, detail=detail)
    if status == 402:  # Payment Required: OpenRouter's "Insufficient credits", DeepSeek's "Insufficient Balance"
        return errors.QuotaExceeded(message, param=param, code=_BILLING, detail=detail)
    if status == 404 and (code in _MODEL_GONE_CODES or _MODEL_GONE_TEXT.match(message)):
        return errors.UpstreamModelNotFound(f"upstream model not found: {message}", code=MODEL_GONE, detail=detail)
    mapped = error_for_status(status, message, retry_after=retry_after, detail=detail)
    if isinstance(mapped, errors.AuthError):
        mapped.message = "upstream rejected the credentials configured for this deployment"
        mapped.args = (mapped.message,)
        return mapped
    mapped.param = param
    mapped.code = code
    return mapped


def map_error_event(payload: dict[str, Any]) -> errors.GatewayError:
    """Map an error that arrived inside a stream (``data: {"error": ...}``), where no status exists."""
    err = error_fields(payload) or {"message": "upstream sent an error event"}
    status = err.get("status") if isinstance(err.get("status"), int) else None
    if status is None and isinstance(err.get("code"), int):
        status = err["code"]
    if status is None:
        status = _STATUS_BY_TYPE.get(str(err.get("type")), _STATUS_BY_TYPE.get(str(err.get("code")), 500))
    if err.get("code") == "rate_limit_exceeded":
        status = 429
    return map_error_fields(int(status), err, detail=None)
