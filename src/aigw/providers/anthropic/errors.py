"""Anthropic error bodies -> the gateway's error kinds.

Anthropic answers failures as ``{"type": "error", "error": {"type": T, "message": M}}``
with a status (400, 401, 403, 404, 413, 429, 500, 529, ...); mid-stream failures
arrive as an SSE ``error`` event with the same body and no status. The error
*type* is more precise than the status, so it wins; the status is the fallback
for bodies we cannot read (proxies, HTML pages).
"""

from __future__ import annotations

from typing import Any

from aigw import errors
from aigw.providers.http import error_for_status, parse_retry_after

# Phrases Anthropic uses when the prompt does not fit the model's window.
_CONTEXT_PHRASES = ("prompt is too long", "exceed context limit", "context window", "too many tokens")
_POLICY_PHRASES = ("content filtering policy", "usage policy", "content policy")
# An exhausted prepaid balance arrives as a 400 invalid_request_error ("Your credit balance is too low to
# access the Anthropic API"), not as a billing_error: the account's problem, not the caller's request.
_BILLING_PHRASES = ("credit balance is too low",)

# Status each error type arrives with; used for stream ``error`` events.
STATUS_BY_TYPE: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


def _upstream_auth(message: str, detail: str | None, code: str) -> errors.GatewayError:
    """The operator's upstream key failed: not the client's fault, so not a 401 to them."""
    return errors.AuthError(message, status=502, code=code, detail=detail)


def _from_type(
    err_type: str, message: str, retry_after: float | None, detail: str | None
) -> errors.GatewayError | None:
    lowered = message.lower()
    if err_type == "invalid_request_error":
        if any(p in lowered for p in _CONTEXT_PHRASES):
            return errors.ContextLengthExceeded(message, code=err_type, detail=detail)
        if any(p in lowered for p in _POLICY_PHRASES):
            return errors.ContentPolicy(message, code=err_type, detail=detail)
        if any(p in lowered for p in _BILLING_PHRASES):
            return errors.QuotaExceeded(message, code="upstream_billing", detail=detail)
        return errors.InvalidRequest(message, code=err_type, detail=detail)
    if err_type in ("authentication_error", "permission_error"):
        return _upstream_auth(message, detail, "upstream_auth")
    if err_type == "billing_error":  # the account behind this deployment has no credit: retrying cannot help
        return errors.QuotaExceeded(message, code="upstream_billing", detail=detail)
    if err_type == "not_found_error":
        return errors.NotFound(message, code=err_type, detail=detail)
    if err_type == "request_too_large":
        return errors.PayloadTooLarge(message, code=err_type, detail=detail)
    if err_type == "rate_limit_error":
        return errors.RateLimited(message, code=err_type, retry_after=retry_after, detail=detail)
    if err_type == "overloaded_error":
        return errors.Unavailable(message, code=err_type, retry_after=retry_after, detail=detail)
    if err_type == "timeout_error":
        return errors.UpstreamTimeout(message, code=err_type, detail=detail)
    if err_type == "api_error":
        return errors.UpstreamError(message, code=err_type, detail=detail)
    return None


def _error_fields(body: Any) -> tuple[str, str]:
    """(type, message) of an Anthropic error body, or empty strings."""
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            err_type = inner.get("type")
            message = inner.get("message")
            return (
                err_type if isinstance(err_type, str) else "",
                message if isinstance(message, str) else "",
            )
    return "", ""


def _model_gone(err_type: str, message: str) -> bool:
    """Anthropic's answer for a model it does not have (retired, misspelt in the deployment): a
    ``not_found_error`` whose message names the ``model`` field (``model: claude-x``). Its other 404s (a file
    id the client sent) are about the client's own input, not the deployment."""
    return err_type == "not_found_error" and message.startswith("model: ")


def map_error(status: int, text: str, body: Any, headers: Any) -> errors.GatewayError:
    """Map one non-2xx upstream answer (status, raw text, parsed JSON, headers) to a kind."""
    retry_after = parse_retry_after(headers) if headers is not None else None
    err_type, message = _error_fields(body)
    detail = text or None
    if _model_gone(err_type, message):
        return errors.UpstreamModelNotFound(f"upstream model not found: anthropic: {message}",
                                            code="upstream_model_not_found", detail=detail)
    message = f"anthropic: {message}" if message else f"anthropic returned HTTP {status}"
    mapped = _from_type(err_type, message, retry_after, detail) if err_type else None
    if mapped is None:
        mapped = error_for_status(status, message, retry_after=retry_after, detail=detail)
        if status == 413:
            mapped = errors.PayloadTooLarge(message, detail=detail)
    return mapped


def map_stream_error(data: dict[str, Any]) -> errors.GatewayError:
    """Map an SSE ``error`` event received after the stream had started."""
    err_type, _ = _error_fields(data)
    status = STATUS_BY_TYPE.get(err_type, 500)
    return map_error(status, "", data, None)
