"""The rate-limit headers of OpenAI's API, from a rate-limit answer (``Admission``).

Written by the limits stage for every accepted call and every refusal of a key,
project or tenant, and by the route terminal when every deployment of a model
is at its own caps. The Anthropic endpoint renames them (``anthropic_api``).
"""

from __future__ import annotations

from aigw.durations import go_duration
from aigw.stores.base import Admission


def add_headers(out: dict[str, str], a: Admission) -> None:
    """OpenAI's six headers, resets in its format (``go_duration``: ``20ms``, ``12.5s``, ``1m0s``), for the
    requests and the tokens of the levels the store reports (an accepted call and a refusal alike)."""
    if a.limit_requests is not None:
        out["x-ratelimit-limit-requests"] = str(a.limit_requests)
        out["x-ratelimit-remaining-requests"] = str(a.remaining_requests or 0)
        out["x-ratelimit-reset-requests"] = go_duration(a.reset_requests_s)
    if a.limit_tokens is not None:
        out["x-ratelimit-limit-tokens"] = str(a.limit_tokens)
        out["x-ratelimit-remaining-tokens"] = str(a.remaining_tokens or 0)
        out["x-ratelimit-reset-tokens"] = go_duration(a.reset_tokens_s)
