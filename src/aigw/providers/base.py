"""The provider contract: what every upstream adapter must do, and what it may.

A provider adapter turns a canonical request (an OpenAI Chat Completions body as a
dict) into its upstream's wire format, sends it, and turns the answer back into
canonical form: a ``chat.completion`` dict, or ``chat.completion.chunk`` dicts for
a stream. Failures are raised as ``aigw.errors.GatewayError`` subclasses.

Adapters know HTTP and their provider; they know nothing of keys, budgets,
caches or tenants. Only ``chat`` and ``stream_chat`` are required; embeddings and
legacy completions are optional capabilities detected with ``isinstance`` on the
runtime-checkable protocols below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from aigw.types import JSON


@dataclass(slots=True, frozen=True)
class Timeouts:
    """Per-attempt limits in seconds; ``None`` means no limit of that kind."""

    connect: float | None = 10.0
    first_token: float | None = None  # streams: headers + first event
    chunk: float | None = None  # streams: the longest wait for each later chunk (the router enforces it)
    total: float | None = 600.0


@dataclass(slots=True)
class CallOptions:
    """What the router tells an adapter about one attempt."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    headers: dict[str, str] = field(default_factory=dict)  # e.g. traceparent, x-request-id
    # Set by the adapter once the request is written to an open connection to the upstream (HTTP adapters:
    # ``providers.http.sent_body``): from then on the upstream may be working on it, and bill it, however the
    # call ends (a timeout, a cut, the caller gone); before it (connecting, a connect timeout) it cannot.
    # The router reads it to bill the prompt of a call that ended without an answer (``Served.cut``).
    sent: bool = False
    # Set by the adapter when the upstream answered an error status (``providers.http.read_error_body``): it
    # refused the call and bills nothing, even if the call then ends on a timeout or the caller's leaving while
    # the error body is read.
    refused: bool = False

    @property
    def billable(self) -> bool:
        """Whether the upstream may bill this call: it had the request and did not refuse it."""
        return self.sent and not self.refused


@runtime_checkable
class Provider(Protocol):
    """One deployment's adapter. ``kind`` is the provider name in config."""

    kind: str
    upstream_model: str

    async def chat(self, body: JSON, call: CallOptions) -> JSON:
        """Send a non-streaming chat request; return a canonical chat.completion dict."""
        ...

    def stream_chat(self, body: JSON, call: CallOptions) -> AsyncIterator[JSON]:
        """Stream canonical chat.completion.chunk dicts.

        The last chunk carries ``usage`` when the upstream reported it. A stream
        that ends without the upstream's proper end marker raises UpstreamError.
        """
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class SupportsEmbeddings(Protocol):
    async def embeddings(self, body: JSON, call: CallOptions) -> JSON: ...


@runtime_checkable
class SupportsCompletions(Protocol):
    """Legacy /v1/completions spoken natively by the upstream."""

    async def completions(self, body: JSON, call: CallOptions) -> JSON: ...

    def stream_completions(self, body: JSON, call: CallOptions) -> AsyncIterator[JSON]: ...


@runtime_checkable
class SupportsModelList(Protocol):
    """A free call used by active health probes (never a paid completion).

    What a listing answered 200 shows, for reviving a dead deployment early (``routing.probe``), an adapter says
    in two class attributes (absent: nothing): ``listing_needs_key``, the upstream refuses the listing without
    the deployment's own key (so a 200 shows the key accepted); ``listing_names_models``, the listing's ids are
    the names ``upstream_model`` is called by (so its presence shows the model exists)."""

    async def list_models(self, call: CallOptions) -> JSON: ...
