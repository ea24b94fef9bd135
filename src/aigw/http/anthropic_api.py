"""The Anthropic Messages endpoint: /v1/messages, served by any provider.

Requests are converted to the canonical (OpenAI) shape at the edge, answers
and streams back to Anthropic's exact wire format, errors to Anthropic's shape.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from functools import partial
from typing import Any

import orjson

from aigw import errors
from aigw.accounting.tokens import LOCAL_COUNTER
from aigw.durations import parse_go_duration
from aigw.http.flow import Flow, Parsed, check_model_allowed, send_error
from aigw.http.request import HttpRequest, Send
from aigw.http.respond import Headers, send_json
from aigw.http.wire_openai import without_secrets
from aigw.pipeline.context import RequestContext
from aigw.schema import anthropic as wire
from aigw.schema.anthropic_stream import PING_FRAME, AnthropicStreamEncoder
from aigw.types import JSON

log = logging.getLogger("aigw.http")


class AnthropicFormat:
    name = "anthropic"
    canonical = False
    keepalive = PING_FRAME

    def __init__(self, debug: bool = False) -> None:
        self.debug = debug

    def render_error(self, err: errors.GatewayError, request_id: str | None = None) -> tuple[int, JSON]:
        """As Anthropic's own errors: ``request_id`` at the top level, beside ``type`` and ``error``."""
        return wire.render_error(without_secrets(err), request_id=request_id)

    def own_headers(self, request_id: str, stage_headers: dict[str, str]) -> Headers:
        """What Anthropic's API sends beside an answer: ``request-id`` (its SDKs read it into
        ``_request_id``) and the rate limits under Anthropic's names, resets as RFC 3339 times. Tokens are
        input and output together (what ``tpm`` counts): ``anthropic-ratelimit-tokens-*``, never the
        ``input-tokens``/``output-tokens`` variants, which would claim separate limits aigw does not keep."""
        out: Headers = [(b"request-id", request_id.encode("latin-1"))]
        for kind in ("requests", "tokens"):
            limit = stage_headers.get(f"x-ratelimit-limit-{kind}")
            if limit is None:
                continue
            name = b"anthropic-ratelimit-" + kind.encode()
            out.append((name + b"-limit", limit.encode()))
            remaining = stage_headers.get(f"x-ratelimit-remaining-{kind}")
            if remaining is not None:  # unknown (the store's read failed): the limit alone, never "0 left"
                out.append((name + b"-remaining", remaining.encode()))
            wait = parse_go_duration(stage_headers.get(f"x-ratelimit-reset-{kind}", ""))
            if wait is not None:  # rounded up to the second: a client waiting until then finds room
                at = time.gmtime(math.ceil(time.time() + wait))
                out.append((name + b"-reset", time.strftime("%Y-%m-%dT%H:%M:%SZ", at).encode()))
        return out

    def render_body(self, body: JSON, ctx: RequestContext) -> JSON:
        return wire.canonical_to_message(body, ctx.served_model or ctx.model)  # after a fallback: who served

    def stream_error(self, err: errors.GatewayError) -> bytes:
        return AnthropicStreamEncoder("").error_frame(without_secrets(err))

    async def frames(self, chunks: AsyncIterator[JSON], ctx: RequestContext) -> AsyncIterator[bytes]:
        encoder = AnthropicStreamEncoder(ctx.served_model or ctx.model)
        try:
            async for chunk in chunks:
                frame = encoder.feed(chunk)
                if frame:
                    yield frame
        except errors.GatewayError as err:
            ctx.error = err
            yield encoder.error_frame(without_secrets(err))
            return
        except Exception as exc:
            log.exception("stream failed", extra=ctx.log_ids())
            failed = errors.UpstreamError(f"stream failed ({type(exc).__name__})")
            ctx.error = failed
            yield encoder.error_frame(failed)
            return
        if not encoder.upstream_finished:  # ended without a finish_reason: cut short, maybe mid tool call
            cut = errors.UpstreamError("upstream stream ended without a finish_reason")
            ctx.error = cut
            yield encoder.error_frame(cut)
            return
        yield encoder.finish()


def parse_messages(body: JSON, raw: bytes = b"", *, beta: str | None = None) -> Parsed:
    """``beta`` is the client's ``anthropic-beta`` header, kept for an Anthropic upstream only."""
    canonical = wire.messages_request_to_canonical(body, beta=beta)
    private = canonical.get(wire.PRIVATE_KEY)
    if isinstance(private, dict) and "timeout" in private:  # the gateway's own field, as on the OpenAI endpoints:
        canonical["timeout"] = private.pop("timeout")  # checked and removed with the deadline, never sent upstream
    # the marker tells non-Anthropic adapters to drop Anthropic-only extensions (cheap check)
    canonical.setdefault(wire.PRIVATE_KEY, {})
    stream = bool(canonical.get("stream"))
    if stream:
        canonical["stream_options"] = {"include_usage": True}
    return Parsed(canonical, canonical["model"], stream)


class AnthropicApi:
    def __init__(self, flow: Flow, debug: bool = False, known_model: Callable[[str], bool] | None = None) -> None:
        self.flow = flow
        self.format = AnthropicFormat(debug)
        self._known_model = known_model  # count_tokens answers only for a model the gateway serves

    def messages(self, req: HttpRequest, send: Send) -> Coroutine[Any, Any, None]:
        """The flow's coroutine, handed back to be awaited by the route table (one coroutine a request fewer)."""
        beta = req.headers.get("anthropic-beta")
        parse = parse_messages if beta is None else partial(parse_messages, beta=beta)
        return self.flow.handle(req, send, self.format, "chat", parse)

    async def count_tokens(self, req: HttpRequest, send: Send) -> None:
        """A local count with the shipped tokenizer (cl100k: exact for OpenAI's older models, close for the
        rest), messages and tool definitions; free, no upstream call."""
        try:
            principal = await self.flow.auth.authenticate(req.headers)
            body = await req.json(self.flow.max_body)
            body.setdefault("max_tokens", 1)
            canonical = wire.messages_request_to_canonical(body)
            model = str(canonical.get("model") or "")
            if self._known_model is not None and not self._known_model(model):  # as Anthropic answers
                raise errors.NotFound(f"The model `{model}` does not exist or you do not have access to it.",
                                      param="model", code="model_not_found")
            check_model_allowed(principal, model)
        except errors.GatewayError as err:
            self.flow.auth.refused("count_tokens", await send_error(send, self.format, err, req.request_id), err)
            return
        # off the event loop: the first count loads the encoding (~0.1 s), a long prompt takes milliseconds
        tokens = await asyncio.to_thread(_input_tokens, canonical)
        headers = [(b"x-request-id", req.request_id.encode()), *self.format.own_headers(req.request_id, {})]
        await send_json(send, 200, {"input_tokens": max(1, tokens)}, headers)  # `request-id`: the SDK's _request_id


def _input_tokens(canonical: JSON) -> int:
    tools = canonical.get("tools")
    messages = canonical["messages"]
    return LOCAL_COUNTER.count_messages(messages) + (LOCAL_COUNTER.count_text(orjson.dumps(tools).decode())
                                                     if tools else 0) + _running_thinking(messages)


def _running_thinking(messages: list[JSON]) -> int:
    """The thinking of a turn still running (the last assistant message, followed only by its tool results),
    which Anthropic keeps in the context; an earlier turn's thinking it strips, and so is not counted."""
    last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i].get("role") == "assistant"), None)
    if last is None or last == len(messages) - 1 or any(m.get("role") != "tool" for m in messages[last + 1:]):
        return 0
    private = messages[last].get(wire.PRIVATE_KEY)
    blocks = private.get("thinking") if isinstance(private, dict) else None
    return sum(LOCAL_COUNTER.count_text(b["thinking"]) for b in blocks or ()
               if isinstance(b, dict) and isinstance(b.get("thinking"), str))
