"""The headers that tell a client whether and when to try an error again, the same on every path
(inference, admin): ``Retry-After`` and ``x-should-retry``. Kept apart so the admin API answers a refusal
exactly as the inference path does, with no copy of the rule to drift."""

from __future__ import annotations

import math

from aigw.errors import GatewayError
from aigw.http.respond import Headers


def retry_headers(err: GatewayError, status: int) -> Headers:
    """``Retry-After`` when ``err`` says when to come back, in whole seconds rounded up (a client that waits
    exactly this long must find room; the message says the same), at least 1; ``x-should-retry: false`` for
    an error no wait cures at a status the SDKs would retry on their own (budget exhausted, upstream auth)."""
    headers: Headers = []
    if err.retry_after is not None:
        headers.append((b"retry-after", str(max(1, math.ceil(err.retry_after))).encode()))
    if not err.retryable and sdk_retries(status):
        headers.append((b"x-should-retry", b"false"))
    return headers


def sdk_retries(status: int) -> bool:
    """Whether the OpenAI and Anthropic SDKs retry this status on their own (402: some clients do)."""
    return status in (402, 408, 409, 429) or status >= 500
