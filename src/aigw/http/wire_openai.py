"""OpenAI's wire format for what we send back: error bodies and SSE frames."""

from __future__ import annotations

import orjson

from aigw.errors import GatewayError, RateLimited
from aigw.observability.logging import SCRUBBER
from aigw.types import JSON

# our kind -> OpenAI error "type"
_TYPES = {
    "bad_request": "invalid_request_error",
    "auth": "authentication_error",
    "permission_denied": "permission_error",
    "not_found": "invalid_request_error",
    "payload_too_large": "invalid_request_error",
    "rate_limited": "rate_limit_error",
    "quota_exceeded": "insufficient_quota",
    "budget_exceeded": "insufficient_quota",
    "context_length_exceeded": "invalid_request_error",
    "content_policy": "invalid_request_error",
    "guardrail_blocked": "invalid_request_error",
    "timeout": "timeout_error",
    "unavailable": "service_unavailable_error",
    "upstream_error": "api_error",
    "upstream_model_not_found": "api_error",
}
# the types OpenAI gives its own 5xx answers: an error of ours at 5xx with a type of the client's 4xx (an upstream
# refusing the operator's key: "authentication_error") would tell a client that reads ``type`` its own key is wrong
_SERVER_TYPES = frozenset({"api_error", "server_error", "timeout_error", "service_unavailable_error"})
_CODES = {
    "context_length_exceeded": "context_length_exceeded",
    "content_policy": "content_policy_violation",
    "auth": "invalid_api_key",
    "budget_exceeded": "budget_exceeded",
    "rate_limited": "rate_limit_exceeded",
    "quota_exceeded": "insufficient_quota",
    "payload_too_large": "request_too_large",
    "guardrail_blocked": "guardrail_blocked",
    "timeout": "timeout",
    "unavailable": "unavailable",
    "upstream_model_not_found": "upstream_model_not_found",
}

DONE_FRAME = b"data: [DONE]\n\n"
KEEPALIVE_FRAME = b": keep-alive\n\n"  # an SSE comment: SSE readers (the OpenAI SDKs too) skip it


def without_secrets(err: GatewayError) -> GatewayError:
    """``err`` with config's secrets (provider ``api_key``s, secret headers, the master key) taken out of
    its message and raw upstream body: an upstream may quote the credential it was sent, and its message
    is passed on to the client."""
    message, detail = SCRUBBER.known(err.message), SCRUBBER.known(err.detail) if err.detail else err.detail
    if message != err.message:
        err.message = message
        err.args = (message,)
    err.detail = detail
    return err


def error_body(err: GatewayError, debug: bool = False) -> JSON:
    err = without_secrets(err)
    err_type = (isinstance(err, RateLimited) and err.ran_out) or _TYPES.get(err.kind, "api_error")
    if err.status >= 500 and err_type not in _SERVER_TYPES:
        err_type = "api_error"  # the gateway's upstream failed (upstream_auth): not the client's key or request
    body: JSON = {
        "message": err.message,
        "type": err_type,
        "param": err.param,
        "code": err.code or _CODES.get(err.kind),
    }
    if debug and err.detail:
        body["upstream_body"] = err.detail[:4000]
    return {"error": body}


def error_frame(err: GatewayError, debug: bool = False) -> bytes:
    """A mid-stream failure: an SSE event the OpenAI SDKs raise on (and no [DONE])."""
    return b"data: " + orjson.dumps(error_body(err, debug)) + b"\n\n"


def chunk_frame(chunk: JSON) -> bytes:
    return b"data: " + orjson.dumps(chunk) + b"\n\n"
