"""The Anthropic adapter: moves bytes to and from ``{api_base}/v1/messages``.

Translation is in ``translate``/``translate_stream``, error mapping in ``errors``;
this module only sends requests, reads answers and enforces time limits. A
stream that ends before ``message_stop`` is an error, never a clean end. An
upstream (or proxy) that ignores ``stream: true`` and answers a whole ``message``
has that message streamed on, as the events its live stream would have sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson

from aigw import errors
from aigw.config.models import Deployment
from aigw.providers.anthropic.errors import map_error
from aigw.providers.anthropic.legacy_functions import (
    chunk_as_function_call,
    functions_as_tools,
    response_as_function_call,
    uses_functions,
)
from aigw.providers.anthropic.translate import beta_header, merge_betas, to_anthropic_request
from aigw.providers.anthropic.translate_response import to_canonical_response
from aigw.providers.anthropic.translate_stream import StreamTranslator, message_events
from aigw.providers.base import CallOptions
from aigw.providers.http import (
    HttpClients,
    client_timeout,
    iter_sse,
    parse_json_event,
    reached,
    read_error_body,
    sent_body,
    took_call,
    transport_error,
)
from aigw.types import JSON

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_API_BASE = "https://api.anthropic.com"
log = logging.getLogger("aigw.providers")


def _base_url(api_base: str) -> str:
    """The SDK's base URL (no /v1); tolerate a trailing /v1 in config."""
    base = (api_base or DEFAULT_API_BASE).rstrip("/")
    return base[:-3] if base.endswith("/v1") else base


class AnthropicProvider:
    """One Anthropic deployment; shares the pooled session of its origin."""

    kind = "anthropic"
    listing_needs_key = True  # GET /v1/models is refused (401) without a valid x-api-key
    listing_names_models = True  # its ids are the models /v1/messages takes (an alias is not listed)

    def __init__(self, deployment: Deployment, clients: HttpClients) -> None:
        self.upstream_model = deployment.model
        self._name = deployment.name
        self._said_unstreamed = False  # logged once that this upstream answers stream requests whole
        base = _base_url(deployment.api_base)
        self._messages_url = f"{base}/v1/messages"
        self._models_url = f"{base}/v1/models?limit=1000"  # one page of all (20 by default; 1000 at most)
        self._clients = clients
        self._headers = {
            "x-api-key": deployment.api_key,
            "anthropic-version": ANTHROPIC_VERSION,
            "content-type": "application/json",
            # one spelling of anthropic-beta, so the client's flags merge into the operator's
            **{("anthropic-beta" if k.lower() == "anthropic-beta" else k): v for k, v in deployment.headers.items()},
        }

    def _request_headers(self, body: JSON, call: CallOptions, accept: str) -> dict[str, str]:
        headers = {**self._headers, **call.headers, "accept": accept}
        beta = beta_header(body)
        if beta:  # the client's betas add to the operator's, they do not replace them
            headers["anthropic-beta"] = merge_betas(headers.get("anthropic-beta"), beta)
        return headers

    async def _raise_for(self, response: aiohttp.ClientResponse, call: CallOptions) -> None:
        text, parsed = await read_error_body(response, call)
        raise map_error(response.status, text, parsed, response.headers)

    async def chat(self, body: JSON, call: CallOptions) -> JSON:
        legacy = uses_functions(body)  # the legacy functions API: sent as tools, answered as function_call
        if legacy:
            body = functions_as_tools(body)
        payload = sent_body(orjson.dumps(to_anthropic_request(body, self.upstream_model)), call)
        headers = self._request_headers(body, call, "application/json")
        session = self._clients.session_for(self._messages_url)
        answered = False
        try:
            async with session.post(
                self._messages_url, data=payload, headers=headers, timeout=client_timeout(call.timeouts)
            ) as response:
                answered = True
                if response.status >= 400:
                    await self._raise_for(response, call)
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:  # answered, or timed out once sent: it may bill it
            raise reached(transport_error(exc), took_call(exc, call, answered)) from exc
        try:  # a 200 we cannot read is an answer all the same: the upstream may bill it (``reached``)
            parsed = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise reached(errors.UpstreamError("anthropic returned a body that is not JSON")) from None
        if not isinstance(parsed, dict) or parsed.get("type") != "message":
            raise reached(errors.UpstreamError("anthropic returned JSON that is not a message"))
        resp = to_canonical_response(parsed, int(time.time()))
        return response_as_function_call(resp) if legacy else resp

    async def stream_chat(self, body: JSON, call: CallOptions) -> AsyncIterator[JSON]:
        legacy = uses_functions(body)
        if legacy:
            body = functions_as_tools(body)
        payload = sent_body(orjson.dumps(to_anthropic_request(body, self.upstream_model, stream=True)), call)
        headers = self._request_headers(body, call, "text/event-stream")
        session = self._clients.session_for(self._messages_url)
        first_token = call.timeouts.first_token
        loop = asyncio.get_running_loop()
        started = loop.time()
        translator = StreamTranslator(self.upstream_model, int(time.time()))
        response: aiohttp.ClientResponse | None = None
        sent_any = False
        try:
            async with asyncio.timeout(first_token):
                response = await session.post(
                    self._messages_url, data=payload, headers=headers, timeout=client_timeout(call.timeouts)
                )
            if response.status >= 400:
                await self._raise_for(response, call)
            whole = await self._check_event_stream(response)
            if whole is not None:  # the events its live stream would have sent, through the same translator
                for name, data in message_events(whole):
                    for chunk in translator.feed(name, data):
                        yield chunk_as_function_call(chunk) if legacy else chunk
                return
            remaining = None if first_token is None else max(0.001, first_token - (loop.time() - started))
            async for event in iter_sse(response, remaining):
                data = parse_json_event(event.data)
                for chunk in translator.feed(event.event or str(data.get("type", "")), data):
                    sent_any = True
                    yield chunk_as_function_call(chunk) if legacy else chunk
                if translator.done:
                    return
        except TimeoutError as exc:  # once the request was sent, the upstream had taken the call
            what = "stream did not finish" if sent_any else "sent no first token"
            raise reached(errors.UpstreamTimeout(f"anthropic {what} in time"), call.billable) from exc
        except aiohttp.ClientError as exc:  # after its 200 the upstream had it (a hang-up before: ``took_call``)
            raise reached(transport_error(exc), took_call(exc, call, response is not None)) from exc
        finally:
            if response is not None:
                # Not read to the end (error, cancel, client gone): drop the connection so
                # the upstream stops generating instead of returning it to the pool.
                if translator.done:
                    response.release()
                else:
                    response.close()
        raise reached(errors.UpstreamError("anthropic stream ended before message_stop"))

    async def _check_event_stream(self, response: aiohttp.ClientResponse) -> JSON | None:
        """None for an event stream; the whole ``message`` of an upstream that ignored ``stream: true``."""
        ctype = response.headers.get("content-type", "")
        if ctype.startswith("text/event-stream"):
            return None
        raw = await response.read()  # whole: an answer may be longer than an error body is read
        text = raw.decode("utf-8", errors="replace")
        try:
            parsed: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            parsed = None
        if isinstance(parsed, dict) and parsed.get("type") == "error":
            raise map_error(response.status, text, parsed, response.headers)
        if isinstance(parsed, dict) and parsed.get("type") == "message" and isinstance(parsed.get("content"), list):
            if not self._said_unstreamed:
                self._said_unstreamed = True
                log.info("deployment %s: the upstream answers stream requests with a whole JSON message "
                         "(it ignores stream=true); streaming it on as events", self._name)
            return parsed
        what = f"anthropic answered a stream request with {ctype or 'no content type'}"
        raise reached(errors.UpstreamError(what))  # a 200 answer (an error status was raised before): it took the call

    async def list_models(self, call: CallOptions) -> JSON:
        """GET /v1/models: free, so health probes can use it; asked for its largest page, so that a probe
        looking for the deployment's model sees every model the account has, not the newest 20."""
        headers = self._request_headers({}, call, "application/json")
        headers.pop("content-type", None)
        session = self._clients.session_for(self._models_url)
        try:
            async with session.get(
                self._models_url, headers=headers, timeout=client_timeout(call.timeouts)
            ) as response:
                if response.status >= 400:
                    await self._raise_for(response, call)
                raw = await response.read()
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise transport_error(exc) from exc
        try:
            parsed: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise errors.UpstreamError("anthropic returned a body that is not JSON") from None
        if not isinstance(parsed, dict):
            raise errors.UpstreamError("anthropic returned JSON that is not an object")
        return parsed

    async def aclose(self) -> None:
        """Sessions belong to HttpClients, which closes them at shutdown."""


def build(deployment: Deployment, clients: HttpClients) -> AnthropicProvider:
    return AnthropicProvider(deployment, clients)
