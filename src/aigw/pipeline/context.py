"""Request-scoped state: everything one request carries through the pipeline."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from aigw.config.models import Deployment
from aigw.errors import GatewayError
from aigw.types import JSON

Api = Literal["openai", "anthropic"]
Endpoint = Literal["chat", "completions", "embeddings"]
# ctx.state key: the upstream's whole answer as it came, for a local count when its usage is absent or unreadable
ANSWER_BODY = "answer_body"


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
    service_tier: str = ""  # the processing tier the upstream reported it used (OpenAI's ``service_tier``)
    handled_by: str = ""  # "", "cache", "rules"
    error: GatewayError | None = None
    state: dict[str, Any] = field(default_factory=dict)  # per-stage scratch space
    # The request's bytes and the body parsed from them. A stage that changes the request assigns a new
    # ``body`` (never edits it in place), so ``body is source[1]`` means the body is still what those bytes
    # say, and what is computed from it may be memoised on the bytes (the cache key: ``ExactKeys``).
    source: tuple[bytes, JSON] | None = None

    def log_ids(self) -> dict[str, str]:
        """``extra=`` for a log line about this request (an error it met, say): the request's own line names it by
        these fields, so a search for a tenant's or a request's lines finds this one too."""
        return {"request_id": self.request_id, "tenant_id": self.principal.tenant_id}


@dataclass(slots=True)
class Completed:
    """A whole answer (chat.completion, text_completion or embeddings list)."""

    body: JSON


@dataclass(slots=True)
class Streaming:
    """A stream of canonical chunks; the first one has already arrived."""

    chunks: AsyncIterator[JSON]


class Prerendered(Completed):
    """A whole answer held already serialized: ``raw`` is the OpenAI wire body, ready to send as is
    (no private, gateway-internal fields). ``body`` decodes it on first use; setting ``body`` drops
    ``raw``, so a stage that changes the answer is never bypassed.
    """

    __slots__ = ("_body", "raw")

    def __init__(self, raw: bytes, body: JSON | None = None) -> None:
        self.raw: bytes | None = raw
        self._body = body

    @property
    def body(self) -> JSON:
        if self._body is None:
            self._body = orjson.loads(self.raw or b"null")
        return self._body

    @body.setter
    def body(self, value: JSON) -> None:
        self._body, self.raw = value, None


class Replay(Streaming):
    """A stream whose chunks are all known already (a cached answer replayed): the HTTP layer may
    send it in one write instead of frame by frame."""

    __slots__ = ()


Result = Completed | Streaming
