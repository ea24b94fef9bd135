"""Request-scoped state: everything one request carries through the pipeline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

from aigw.config.models import Deployment
from aigw.errors import GatewayError
from aigw.types import JSON

Api = Literal["openai", "anthropic"]
Endpoint = Literal["chat", "completions", "embeddings"]


@dataclass(slots=True)
class Principal:
    """Who is calling: filled by auth. The master key is an admin with no tenant."""

    key_id: str = ""
    key_prefix: str = ""
    tenant_id: str = ""
    project_id: str = ""
    is_admin: bool = False
    allowed_models: frozenset[str] | None = None  # None = all
    extra: dict[str, Any] = field(default_factory=dict)  # limits, budgets, metadata


@dataclass(slots=True)
class RequestContext:
    request_id: str
    api: Api
    endpoint: Endpoint
    body: JSON
    model: str
    stream: bool = False
    principal: Principal = field(default_factory=Principal)
    headers: dict[str, str] = field(default_factory=dict)  # inbound, lower-case names
    response_headers: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    deadline_s: float | None = None  # whole-request limit asked by the client
    served_by: Deployment | None = None
    served_model: str = ""  # the public model that finally answered (after fallbacks)
    attempts: int = 0
    retries: int = 0
    fallbacks: list[str] = field(default_factory=list)
    upstream_s: float = 0.0  # time spent waiting on upstreams
    first_token_s: float | None = None
    usage: JSON | None = None
    handled_by: str = ""  # "", "cache", "rules"
    error: GatewayError | None = None
    state: dict[str, Any] = field(default_factory=dict)  # per-stage scratch space


@dataclass(slots=True)
class Completed:
    """A whole answer (chat.completion, text_completion or embeddings list)."""

    body: JSON


@dataclass(slots=True)
class Streaming:
    """A stream of canonical chunks; the first one has already arrived."""

    chunks: AsyncIterator[JSON]


Result = Completed | Streaming
