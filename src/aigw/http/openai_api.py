"""The OpenAI-compatible endpoints: /v1/chat/completions, /v1/completions, /v1/embeddings (/v1/models:
``models_api``)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import partial
from typing import Any

from aigw import errors
from aigw.http.flow import Flow, Parsed
from aigw.http.request import HttpRequest, Send
from aigw.http.respond import Headers
from aigw.http.wire_openai import DONE_FRAME, KEEPALIVE_FRAME, chunk_frame, error_body, error_frame
from aigw.pipeline.context import RequestContext
from aigw.routing.router import Router
from aigw.schema.anthropic import PRIVATE_KEY, keep_beta, strip_private
from aigw.schema.openai import validate_chat, validate_completion, validate_embeddings
from aigw.types import JSON

log = logging.getLogger("aigw.http")
HIDE_USAGE = "openai.hide_usage"


class OpenAIFormat:
    name = "openai"
    canonical = True
    keepalive = KEEPALIVE_FRAME
    own_headers: Callable[[str, dict[str, str]], Headers] | None = None  # x-ratelimit-* are OpenAI's names

    def __init__(self, debug: bool = False) -> None:
        self.debug = debug

    def render_error(self, err: errors.GatewayError, request_id: str | None = None) -> tuple[int, JSON]:
        return err.status, error_body(err, self.debug)

    def render_body(self, body: JSON, ctx: RequestContext) -> JSON:
        return strip_private(body) if PRIVATE_KEY in body else body

    def stream_error(self, err: errors.GatewayError) -> bytes:
        return error_frame(err, self.debug)

    async def frames(self, chunks: AsyncIterator[JSON], ctx: RequestContext) -> AsyncIterator[bytes]:
        hide_usage = ctx.state.get(HIDE_USAGE, False)
        private = ctx.served_by is not None and ctx.served_by.provider == "anthropic"
        try:
            async for chunk in chunks:
                if hide_usage and "usage" in chunk:  # asked of the upstream for the bill, not by the client:
                    if not chunk.get("choices") and chunk["usage"]:  # its usage chunk is dropped, and the null
                        continue  # usage OpenAI then puts on every chunk goes (it sends none unasked)
                    del chunk["usage"]  # in place, no copy a chunk: each is its own dict, read by the stages already
                if private or PRIVATE_KEY in chunk:  # Anthropic-only fields (live, or in a cached answer)
                    chunk = strip_private(chunk)
                yield chunk_frame(chunk)
        except errors.GatewayError as err:
            ctx.error = err
            yield error_frame(err, self.debug)
            return
        except Exception as exc:
            log.exception("stream failed", extra=ctx.log_ids())
            failed = errors.UpstreamError(f"stream failed ({type(exc).__name__})")
            ctx.error = failed
            yield error_frame(failed, self.debug)
            return
        yield DONE_FRAME


class Validated:
    """Request bodies (raw bytes, small ones) that passed the schema check lately.

    The check is a pure function of the body, so the same bytes again (a
    repeated question, which is what a cache hit is) skip pydantic: one dict
    lookup. Bounded: at most ``limit`` bodies of at most ``max_bytes`` each.
    """

    def __init__(self, check: Callable[[JSON], object], limit: int = 512, max_bytes: int = 8192) -> None:
        self.check = check
        self.limit = limit
        self.max_bytes = max_bytes
        self._seen: dict[bytes, None] = {}

    def __call__(self, body: JSON, raw: bytes) -> None:
        if raw in self._seen:
            return
        self.check(body)
        if 0 < len(raw) <= self.max_bytes:
            if len(self._seen) >= self.limit:
                self._seen.clear()
            self._seen[raw] = None


def _parsed(body: JSON) -> Parsed:
    parsed = Parsed(body, body["model"], bool(body.get("stream")))
    if parsed.stream:
        opts = body.get("stream_options") or {}
        if not opts.get("include_usage"):
            # we always need usage for accounting; the client gets it only if it asked
            body["stream_options"] = {**opts, "include_usage": True}
            parsed.state[HIDE_USAGE] = True
    return parsed


class OpenAIApi:
    def __init__(self, flow: Flow, router: Router, debug: bool = False) -> None:
        self.flow = flow
        self.router = router
        self.format = OpenAIFormat(debug)
        self._chat, self._completion = Validated(validate_chat), Validated(validate_completion)
        self._embeddings = Validated(validate_embeddings)

    def parse_chat(self, body: JSON, raw: bytes, *, beta: str | None = None) -> Parsed:
        self._chat(body, raw)
        if beta is not None:
            keep_beta(body, beta)
        return _parsed(body)

    def parse_completion(self, body: JSON, raw: bytes) -> Parsed:
        self._completion(body, raw)
        return _parsed(body)

    def parse_embeddings(self, body: JSON, raw: bytes) -> Parsed:
        self._embeddings(body, raw)
        return Parsed(body, body["model"], False)

    # The handlers hand back the flow's coroutine rather than await it in one of their own: one coroutine a
    # request fewer (the route table awaits whatever a handler returns).
    def chat(self, req: HttpRequest, send: Send) -> Coroutine[Any, Any, None]:
        beta = req.headers.get("anthropic-beta")  # for a model served by Anthropic; others drop it
        parse = self.parse_chat if beta is None else partial(self.parse_chat, beta=beta)
        return self.flow.handle(req, send, self.format, "chat", parse)

    def completions(self, req: HttpRequest, send: Send) -> Coroutine[Any, Any, None]:
        return self.flow.handle(req, send, self.format, "completions", self.parse_completion)

    def embeddings(self, req: HttpRequest, send: Send) -> Coroutine[Any, Any, None]:
        return self.flow.handle(req, send, self.format, "embeddings", self.parse_embeddings)
