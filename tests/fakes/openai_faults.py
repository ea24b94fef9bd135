"""Faults shaped like the errors OpenAI and Azure OpenAI really send (bodies and headers).

    from tests.fakes import openai_faults as oai
    fake.faults.push(oai.rate_limited(retry_after=2))      # 429 + retry-after / retry-after-ms
    fake.faults.push(oai.server_error(503))
    fake.faults.push(oai.context_length())
    fake.faults.push(oai.content_filter(azure=True))        # Azure's content_filter + innererror
    fake.faults.push(oai.stream_error(after=2))             # 2 chunks, then data: {"error": ...}

Generic faults (cut, stall, slow, non-JSON) are ``tests.fakes.faults.Fault``'s constructors.
"""

from __future__ import annotations

from typing import Any

from tests.fakes.faults import Fault
from tests.fakes.openai_wire import error_body


def error(status: int, message: str, *, type_: str | None = "invalid_request_error",
          param: str | None = None, code: str | None = None, **headers: str) -> Fault:
    """Any OpenAI-shaped error answer."""
    return Fault(status=status, body=error_body(message, type_, param, code), headers=headers)


def rate_limited(retry_after: float = 1.0, *, ms_header: bool = True, azure: bool = False) -> Fault:
    """429 with Retry-After (whole seconds) and, like OpenAI, retry-after-ms."""
    headers = {"retry-after": str(max(1, round(retry_after))), "x-ratelimit-remaining-requests": "0"}
    if ms_header:
        headers["retry-after-ms"] = str(int(retry_after * 1000))
    if azure:
        body: dict[str, Any] = {"error": {
            "code": "429",
            "message": "Requests to the ChatCompletions_Create Operation under Azure OpenAI API version"
                       " 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier."
                       f" Please retry after {max(1, round(retry_after))} seconds.",
        }}
    else:
        body = error_body("Rate limit reached for gpt-4o-mini in organization org-fake on requests per"
                          " min (RPM): Limit 3, Used 3, Requested 1. Please try again in 20s.",
                          "requests", None, "rate_limit_exceeded")
    return Fault(status=429, body=body, headers=headers)


def insufficient_quota() -> Fault:
    return error(429, "You exceeded your current quota, please check your plan and billing details.",
                 type_="insufficient_quota", code="insufficient_quota")


def payment_required() -> Fault:
    """What OpenAI-compatible hosts (OpenRouter, DeepSeek) answer when the account is out of credit."""
    return error(402, "Insufficient credits. Add more credits to your account.", type_="payment_required",
                 code="insufficient_credits")


def server_error(status: int = 500) -> Fault:
    if status == 503:
        return error(503, "The engine is currently overloaded, please try again later.",
                     type_="server_error")
    return error(status, "The server had an error while processing your request. Sorry about that!",
                 type_="server_error")


def bad_auth() -> Fault:
    return error(401, "Incorrect API key provided: sk-abc12***********wxyz. You can find your API key"
                      " at https://platform.openai.com/account/api-keys.", code="invalid_api_key")


def not_found(model: str = "gpt-9") -> Fault:
    return error(404, f"The model `{model}` does not exist or you do not have access to it.",
                 code="model_not_found")


def deployment_not_found() -> Fault:
    """Azure OpenAI's 404 for a deployment name the resource does not have (no ``type``)."""
    return Fault(status=404, body={"error": {
        "code": "DeploymentNotFound",
        "message": "The API deployment for this resource does not exist. If you created the deployment within"
                   " the last 5 minutes, please wait a moment and try again."}})


def file_not_found(file_id: str = "file-abc123") -> Fault:
    """OpenAI's 404 for a file id the client sent: about the client's input, not the deployment."""
    return error(404, f"No such File object: {file_id}", param="id")


def previous_response_not_found(response_id: str = "resp_abc123") -> Fault:
    return error(404, f"Previous response with id '{response_id}' not found.", param="previous_response_id",
                 code="previous_response_not_found")


def bad_request(param: str = "temperature") -> Fault:
    return error(400, f"Invalid type for '{param}': expected a decimal, but got a string instead.",
                 param=param, code="invalid_type")


def context_length(window: int = 128000) -> Fault:
    return error(400, f"This model's maximum context length is {window} tokens. However, your messages"
                      f" resulted in {window + 12} tokens. Please reduce the length of the messages.",
                 param="messages", code="context_length_exceeded")


def content_filter(*, azure: bool = False) -> Fault:
    if not azure:
        return error(400, "Invalid prompt: your prompt was flagged as potentially violating our usage"
                          " policy.", code="invalid_prompt")
    severity = {"filtered": False, "severity": "safe"}
    return Fault(status=400, body={"error": {
        "message": "The response was filtered due to the prompt triggering Azure OpenAI's content"
                   " management policy. Please modify your prompt and retry.",
        "type": None, "param": "prompt", "code": "content_filter", "status": 400,
        "innererror": {"code": "ResponsibleAIPolicyViolation", "content_filter_result": {
            "hate": severity, "jailbreak": {"filtered": False, "detected": False},
            "self_harm": severity, "sexual": severity,
            "violence": {"filtered": True, "severity": "medium"}}},
    }})


def stream_error(after: int = 1, message: str = "The server had an error while processing your request.",
                 type_: str = "server_error", code: str | None = None) -> Fault:
    """A stream that sends `after` chunks, then an error event and no [DONE] (as OpenAI does)."""
    return Fault(cut_after=after, stream_error=error_body(message, type_, None, code))
