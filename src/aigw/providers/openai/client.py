"""OpenAI adapter: moves bytes between the canonical shapes and ``{api_base}/...``.

The canonical shapes *are* OpenAI's, so the work here is transport: one orjson dump
out, one load back, SSE chunks forwarded as they arrive, every failure mapped to the
error tree, and no call that can hang (connect, first-token and total limits). An
upstream that ignores ``stream: true`` and answers a whole JSON completion has that
answer streamed on as the chunks a live stream would have sent. Azure
and OpenAI-compatible servers reuse this class with other URLs, auth headers, error
mapping and a ``Shaping``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import cast

import aiohttp
import orjson

from aigw import errors
from aigw.config.models import Deployment
from aigw.providers.base import CallOptions, Provider, Timeouts
from aigw.providers.http import (
    ErrorMapper,
    HttpClients,
    SseEvent,
    client_timeout,
    iter_sse,
    parse_json_event,
    reached,
    read_error_body,
    sent_body,
    took_call,
    transport_error,
)
from aigw.providers.openai import translate
from aigw.providers.openai.errors import error_fields, map_error, map_error_event
from aigw.schema.replay import replay_chunks
from aigw.types import JSON

DEFAULT_API_BASE = "https://api.openai.com/v1"
OPS = ("chat/completions", "completions", "embeddings", "models")
_TRANSPORT = (aiohttp.ClientError, TimeoutError)
DRAIN_AFTER_DONE_S = 0.05
SseEvents = AsyncGenerator[SseEvent, None]
log = logging.getLogger("aigw.providers")


@functools.lru_cache(maxsize=64)
def _timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    return client_timeout(t)


def bearer(api_key: str) -> dict[str, str]:
    """``Authorization: Bearer`` or, for keyless local servers, nothing."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


class OpenAIProvider:
    """Chat, streams, embeddings, legacy completions and the model list over one pooled session."""

    kind = "openai"
    listing_needs_key = True  # GET /models is refused (401) without a valid key
    listing_names_models = True  # its ids are the models chat takes

    def __init__(
        self,
        deployment: Deployment,
        clients: HttpClients,
        *,
        shaping: translate.Shaping | None = None,
        auth: Mapping[str, str] | None = None,
        error_mapper: ErrorMapper = map_error,
    ) -> None:
        self.deployment = deployment
        self.upstream_model = deployment.model
        self._clients = clients
        self._shaping = shaping if shaping is not None else translate.shaping_for_model(deployment.model)
        self._map_error = error_mapper
        auth = bearer(deployment.api_key) if auth is None else auth
        self._headers = {"Content-Type": "application/json", **auth, **deployment.headers}
        self._urls = self.build_urls((deployment.api_base or DEFAULT_API_BASE).rstrip("/"))
        self._said_unstreamed = False  # logged once that this upstream answers stream requests whole

    def build_urls(self, base: str) -> dict[str, str]:
        """The full URL of each operation; subclasses change the path shape, not the calls."""
        return {op: f"{base}/{op}" for op in OPS}

    # -- capabilities -------------------------------------------------------------

    async def chat(self, body: JSON, call: CallOptions) -> JSON:
        payload = translate.shape_chat(body, self.upstream_model, self._shaping, stream=False)
        data = translate.checked(await self._request("POST", "chat/completions", payload, call), "choices",
                                 "chat completion")
        translate.reasoning_as_content(data)
        return translate.tool_calls_finish(data) if self._shaping.tool_calls_finish else data

    def stream_chat(self, body: JSON, call: CallOptions) -> AsyncIterator[JSON]:
        payload = translate.shape_chat(body, self.upstream_model, self._shaping, stream=True)
        return self._stream("chat/completions", payload, call)

    async def completions(self, body: JSON, call: CallOptions) -> JSON:
        payload = translate.shape_completion(body, self.upstream_model, self._shaping, stream=False)
        data = await self._request("POST", "completions", payload, call)
        return translate.checked(data, "choices", "completion")

    def stream_completions(self, body: JSON, call: CallOptions) -> AsyncIterator[JSON]:
        payload = translate.shape_completion(body, self.upstream_model, self._shaping, stream=True)
        return self._stream("completions", payload, call)

    async def embeddings(self, body: JSON, call: CallOptions) -> JSON:
        payload = translate.shape_embeddings(body, self.upstream_model, self._shaping)
        data = await self._request("POST", "embeddings", payload, call)
        return translate.embeddings_as_asked(translate.checked(data, "data", "embeddings answer"), body)

    async def list_models(self, call: CallOptions) -> JSON:
        data = await self._request("GET", "models", None, call)
        return translate.checked(data, "data", "model list")

    async def aclose(self) -> None:
        """Sessions belong to ``HttpClients`` (shared per origin); nothing of ours to close."""

    # -- transport ------------------------------------------------------------------

    def _headers_for(self, call: CallOptions) -> dict[str, str]:
        # Trace headers from the router may not override auth or content type.
        return {**call.headers, **self._headers} if call.headers else self._headers

    async def _request(self, method: str, op: str, payload: JSON | None, call: CallOptions) -> JSON:
        url = self._urls[op]
        data = None if payload is None else sent_body(orjson.dumps(payload), call)
        answered = False
        try:
            async with self._clients.session_for(url).request(
                method, url, data=data, headers=self._headers_for(call), timeout=_timeout(call.timeouts)
            ) as resp:
                answered = True
                if resp.status >= 400:
                    raise await self._error(resp, call)
                raw = await resp.read()
        except _TRANSPORT as exc:  # the upstream may bill it once it answered, or timed out working on it
            raise reached(transport_error(exc), took_call(exc, call, answered)) from exc
        return self._json_body(raw)

    def _json_body(self, raw: bytes) -> JSON:
        """A 200's body; one we cannot read is still an answer the upstream may bill (``reached``)."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise reached(errors.UpstreamError("upstream answered 200 with a body that is not JSON")) from None
        if not isinstance(data, dict):
            raise reached(errors.UpstreamError("upstream answered 200 with JSON that is not an object"))
        if "error" in data and "choices" not in data and "data" not in data:
            raise map_error_event(data)
        return data

    async def _error(self, resp: aiohttp.ClientResponse, call: CallOptions) -> errors.GatewayError:
        text, parsed = await read_error_body(resp, call)
        return self._map_error(resp.status, text, parsed, resp.headers)

    async def _open_stream(
        self, op: str, payload: JSON, call: CallOptions, deadline: float | None
    ) -> aiohttp.ClientResponse | JSON:
        """POST and wait for the headers, within the first-token deadline: the event stream, or the
        whole answer of an upstream that ignored ``stream: true``."""
        url = self._urls[op]
        session = self._clients.session_for(url)
        async with asyncio.timeout_at(deadline):
            resp = await session.post(
                url, data=sent_body(orjson.dumps(payload), call), headers=self._headers_for(call),
                timeout=_timeout(call.timeouts),
            )
        if resp.status >= 400:
            try:
                raise await self._error(resp, call)
            finally:
                resp.release()
        if resp.content_type == "application/json":  # an upstream that ignored stream=true
            try:
                raw = await resp.read()
            except _TRANSPORT as exc:  # cut after its 200: the upstream took the call (it may bill the prompt)
                raise reached(transport_error(exc)) from exc
            finally:
                resp.release()
            return self._whole_answer(raw)
        return resp

    def _whole_answer(self, raw: bytes) -> JSON:
        """The answer of an upstream that ignored ``stream: true``: a completion to stream on, or its error."""
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        if not isinstance(body, dict) or not _is_answer(body):
            if isinstance(body, dict) and error_fields(body) is not None:
                raise map_error_event(body)  # an error the upstream answered: it refused the call
            # a 200 answer all the same, but none we can read: it took (and billed) the call
            raise reached(errors.UpstreamError("upstream answered a streaming request with a JSON body "
                                               "that is neither an answer nor an error"))
        if not self._said_unstreamed:
            self._said_unstreamed = True
            log.info("deployment %s: the upstream answers stream requests with a whole JSON answer "
                     "(it ignores stream=true); streaming it on as chunks", self.deployment.name)
        return body

    async def _stream(self, op: str, payload: JSON, call: CallOptions) -> AsyncIterator[JSON]:
        """Yield chunks as they arrive; a missing ``[DONE]`` or an error event raises."""
        first_token = call.timeouts.first_token
        loop = asyncio.get_running_loop()
        deadline = None if first_token is None else loop.time() + first_token
        resp: aiohttp.ClientResponse | None = None
        done = pooled = False
        mover = translate.UsageMover(self._shaping.tool_calls_finish)
        try:
            opened = await self._open_stream(op, payload, call, deadline)
            if isinstance(opened, dict):  # the whole answer: the chunks a live stream would have sent
                if op == "completions" and opened.get("object") != "text_completion":
                    opened = {**opened, "object": "text_completion"}  # so it replays as text, not messages
                if op == "chat/completions":
                    translate.reasoning_as_content(opened)
                    if self._shaping.tool_calls_finish:
                        opened = translate.tool_calls_finish(opened)
                for chunk in replay_chunks(opened):
                    yield chunk
                return
            resp = opened
            wait = None if deadline is None else max(0.001, deadline - loop.time())
            async with contextlib.aclosing(cast(SseEvents, iter_sse(resp, wait))) as events:
                async for event in events:
                    if event.data == "[DONE]":
                        done = True
                        pooled = await _drained(resp)
                        break
                    chunk = parse_json_event(event.data)
                    if event.event == "error" or chunk.get("error"):
                        raise map_error_event(chunk)  # OpenRouter adds choices to these; still an error
                    out = mover.see(chunk)
                    if out is not None:
                        yield out
            if not done:  # after its 200: the upstream took the call
                raise reached(errors.UpstreamError("upstream ended the stream without its [DONE] marker"))
            last = mover.final()
            if last is not None:
                yield last
        except _TRANSPORT as exc:  # after its 200, or a timeout once the request was sent: the upstream took it
            raise reached(transport_error(exc), took_call(exc, call, resp is not None)) from exc
        finally:
            if resp is not None:
                # Clean end: the connection goes back to the pool. Anything else
                # (error, cancellation, consumer gone) closes it, so the upstream stops.
                if pooled:
                    resp.release()
                else:
                    resp.close()


def _is_answer(body: JSON) -> bool:
    """A whole completion: at least one choice, each an object."""
    choices = body.get("choices")
    return isinstance(choices, list) and bool(choices) and all(isinstance(c, dict) for c in choices)


async def _drained(resp: aiohttp.ClientResponse) -> bool:
    """Read the body's end after [DONE] (the chunked terminator often trails it by a
    packet) so the connection can be pooled; give up quickly on servers that linger."""
    content = resp.content
    try:
        async with asyncio.timeout(DRAIN_AFTER_DONE_S):
            while not content.at_eof():
                if not await content.readany():
                    break
    except _TRANSPORT:
        return False
    return content.at_eof()


def build(deployment: Deployment, clients: HttpClients) -> Provider:
    return OpenAIProvider(deployment, clients)
