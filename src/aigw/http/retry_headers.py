"""The headers that tell a client whether and when to try an error again, the same on every path
(inference, admin): ``Retry-After`` and ``x-should-retry``. Kept apart so the admin API answers a refusal
exactly as the inference path does, with no copy of the rule to drift."""

from __future__ import annotations

import math

from aigw.errors import GatewayError
from aigw.http.respond import Headers


def retry_headers(err: GatewayError, status: int) -> Headers:
    """``Retry-After`` when ``err`` says when to come back, in whole seconds rounded up (a client that waits
    exactly this long must find room; the message says the same), at least 1, and ``retry-after-ms``, the same
    wait to the millisecond (rounded up, as the message's ``try again in 174ms``): the openai and anthropic SDKs
    read it first, so they sleep the wait itself, not up to a second more; ``x-should-retry: false`` for
    an error no wait cures at a status the SDKs would retry on their own (budget exhausted, upstream auth)."""
    headers: Headers = []
    if err.retry_after is not None:
        ms = max(1, math.ceil(err.retry_after * 1000 - 1e-6))  # float noise: 0.174 s is 174 ms, not 175
        headers.append((b"retry-after", str(math.ceil(ms / 1000)).encode()))
        headers.append((b"retry-after-ms", str(ms).encode()))
    if not err.retryable and sdk_retries(status):
        headers.append((b"x-should-retry", b"false"))
    return headers


def sdk_retries(status: int) -> bool:
    """Whether the OpenAI and Anthropic SDKs retry this status on their own (402: some clients do)."""
    return status in (402, 408, 409, 429) or status >= 500
