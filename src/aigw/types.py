"""Small shared types: the JSON shapes we pass around and the clock protocol."""

from __future__ import annotations

import time
from typing import Any, Protocol

# Canonical request/response bodies are plain dicts in the OpenAI Chat Completions
# shape (validated at the edge by ``aigw.schema.openai``). Dicts keep the hot path
# free of model construction and let a pass-through body go upstream untouched.
JSON = dict[str, Any]


class Clock(Protocol):
    """Injected wherever time matters, so tests can move it."""

    def now(self) -> float: ...  # wall clock, seconds since the epoch

    def monotonic(self) -> float: ...


class SystemClock:
    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()
