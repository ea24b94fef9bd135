"""A fake api.openai.com/v1 on loopback, speaking OpenAI's exact wire format.

    fake = FakeOpenAI(api_key="sk-test-key").start()    # background thread, free port
    fake.base_url                                       # "http://127.0.0.1:PORT/v1"
    fake.faults.push(...)                               # see tests.fakes.faults / openai_faults
    fake.traffic.requests, fake.traffic.last.body       # what arrived
    fake.reset(); fake.stop()

Serves POST /v1/chat/completions, /v1/completions, /v1/embeddings, GET /v1/models and
/v1/models/{id}. Answers are deterministic (see ``openai_wire``); headers are OpenAI's
(``x-request-id``, ``openai-*``, ``x-ratelimit-*``); streams are ``data: {...}`` events
ending in ``data: [DONE]``, with a usage chunk (empty choices) when
``stream_options.include_usage`` is set. It rejects what the real API rejects: no or
wrong key (401), unknown model (404 model_not_found), missing model or messages,
``stream_options`` without ``stream``, ``max_tokens`` on reasoning models, json mode
without the word "json", prompts over the context window (``tiny-context`` has 40
tokens). With ``api_key=None`` any key, or none, is accepted (local servers); the
keyword options turn it into a stricter compatible server (rejected parameters or
roles, one leading system message, usage always on the finishing chunk, float embeddings only).
``FakeAzure`` (``azure_upstream``) reuses this class with Azure's paths and auth.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from aiohttp import web

from tests.fakes import openai_wire as wire
from tests.fakes.faults import HTML_BODY, FaultScript, Traffic, before_answer, send_sse
from tests.support.servers import RunningServer, start_aiohttp_app

JSON = dict[str, Any]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NO_KEY = ("You didn't provide an API key. You need to provide your API key in an Authorization header"
          " using Bearer auth (i.e. Authorization: Bearer YOUR_KEY). You can obtain an API key from"
          " https://platform.openai.com/account/api-keys.")


class CompatError(wire.WireError):
    """A 400 in vLLM's shape: ``{"object": "error", "message", "type", "param", "code": 400}``."""

    def __init__(self, message: str) -> None:
        super().__init__(400, message)
        self.body = {"object": "error", "message": message, "type": "BadRequestError", "param": None,
                     "code": 400}


class FakeOpenAI:
    """OpenAI's API on a loopback port; `faults` scripts failures, `traffic` records requests."""

    name = "fake-openai"

    def __init__(
        self,
        api_key: str | None = "sk-test-key",
        *,
        reject_params: frozenset[str] = frozenset(),
        reject_roles: frozenset[str] = frozenset(),
        single_system: bool = False,
        usage_in_final_chunk: bool = False,
        floats_only: bool = False,
    ) -> None:
        """The keyword options make it a stricter OpenAI-compatible server (see ``check_strict``)."""
        self.api_key = api_key
        self.reject_params = reject_params
        self.reject_roles = reject_roles
        self.single_system = single_system
        self.usage_in_final_chunk = usage_in_final_chunk
        self.floats_only = floats_only  # like servers that ignore ``encoding_format: base64``
        self.faults = FaultScript()
        self.traffic = Traffic()
        self.server: RunningServer | None = None
        self.app = web.Application(client_max_size=64 * 1024 * 1024)
        self.add_routes(self.app)

    # -- lifecycle ------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        self.server = start_aiohttp_app(self.app, self.name)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def reset(self) -> None:
        self.faults.clear()
        self.traffic.reset()

    @property
    def url(self) -> str:
        assert self.server is not None, "start() the fake first"
        return self.server.url

    @property
    def base_url(self) -> str:
        """What the OpenAI SDK (and aigw's ``api_base``) takes."""
        return self.url + "/v1"

    # -- provider specifics (overridden by FakeAzure) ---------------------------------

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/chat/completions", self.handler("chat"))
        app.router.add_post("/v1/completions", self.handler("completions"))
        app.router.add_post("/v1/embeddings", self.handler("embeddings"))
        app.router.add_get("/v1/models", self.handler("models"))
        app.router.add_get("/v1/models/{model}", self.handler("model"))

    def response_headers(self) -> dict[str, str]:
        return {
            "x-request-id": "req_" + secrets.token_hex(16),
            "openai-organization": "user-fake",
            "openai-project": "proj_fake",
            "openai-processing-ms": "7",
            "openai-version": "2020-10-01",
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-limit-tokens": "30000000",
            "x-ratelimit-remaining-requests": "9999",
            "x-ratelimit-remaining-tokens": "29999950",
            "x-ratelimit-reset-requests": "6ms",
            "x-ratelimit-reset-tokens": "0s",
        }

    def check_auth(self, request: web.Request) -> None:
        if self.api_key is None:
            return
        auth = request.headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise wire.WireError(401, NO_KEY)
        key = auth[7:].strip()
        if key != self.api_key:
            shown = key[:3] + "*" * max(0, len(key) - 7) + key[-4:]
            raise wire.WireError(401, f"Incorrect API key provided: {shown}. You can find your API key at"
                                 " https://platform.openai.com/account/api-keys.", code="invalid_api_key")

    def check_params(self, body: JSON) -> None:
        """``reject_params`` on every operation (chat, completions, embeddings), in vLLM's error shape."""
        for name in sorted(self.reject_params.intersection(body)):
            raise CompatError(f"Unrecognized request argument supplied: {name}")

    def check_strict(self, body: JSON) -> None:
        """What stricter compatible servers reject, answered in vLLM's error shape."""
        self.check_params(body)
        roles = [m.get("role") for m in body.get("messages") or [] if isinstance(m, dict)]
        for role in sorted(self.reject_roles.intersection(roles)):
            raise CompatError(f"Unexpected message role '{role}'.")
        if self.single_system and (roles.count("system") > 1 or "system" in roles[1:]):
            raise CompatError("System message must be at the beginning and there may be only one.")

    def resolve(self, request: web.Request, body: Any) -> Any:
        """The request body the answer is computed from (Azure fills the model from the path)."""
        return body

    def decorate(self, op: str, result: Any, stream: bool) -> Any:
        """Last touch on an answer (Azure adds its content-filter annotations)."""
        return result

    # -- request handling -----------------------------------------------------------

    def handler(self, op: str) -> Handler:
        async def handle(request: web.Request) -> web.StreamResponse:
            return await self.serve(op, request)

        return handle

    async def serve(self, op: str, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body, parsed_ok = _parse(raw)
        self.traffic.record(request, body)
        headers = self.response_headers()
        fault = self.faults.take(request.path)
        early = await before_answer(request, fault, self.traffic, headers)
        if early is not None:
            return early
        try:
            self.check_auth(request)
            if request.method == "POST" and not parsed_ok:
                raise wire.WireError(400, "We could not parse the JSON body of your request. (HINT: This"
                                     " likely means you aren't using your HTTP library correctly.)")
            stream, result = self.answer(op, request, self.resolve(request, body))
        except wire.WireError as exc:
            self.traffic.completed += 1
            return web.json_response(exc.body, status=exc.status, headers=headers, dumps=_dumps)
        result = self.decorate(op, result, stream)
        if fault is not None and fault.served_tier is not None:
            for part in result if stream else [result]:
                part["service_tier"] = fault.served_tier
        if stream:
            if fault is not None and fault.no_usage:  # a server that ignores stream_options.include_usage
                result = [{k: v for k, v in c.items() if k != "usage"} for c in result if c.get("choices")]
            return await send_sse(request, headers, wire.frame(result), fault, self.traffic)
        if fault is not None and fault.no_usage:  # a compatible server that reports none in a whole answer either
            result = {k: v for k, v in result.items() if k != "usage"}
        self.traffic.completed += 1
        if fault is not None and fault.non_json:
            return web.Response(body=HTML_BODY, content_type="text/html", headers=headers)
        return web.Response(body=orjson.dumps(result), content_type="application/json", headers=headers)

    def answer(self, op: str, request: web.Request, body: Any) -> tuple[bool, Any]:
        """(is a stream, answer object or list of chunks) for a request that passed auth."""
        if op == "models":
            return False, wire.model_list()
        if op == "model":
            model = request.match_info["model"]
            if model not in wire.MODELS:
                raise wire.WireError(404, f"The model '{model}' does not exist", param="model",
                                     code="model_not_found")
            return False, next(m for m in wire.model_list()["data"] if m["id"] == model)
        if not isinstance(body, dict):
            raise wire.WireError(400, "Invalid request body: expected a JSON object.")
        stream = bool(body.get("stream"))
        if op == "chat":
            self.check_strict(body)
            model = wire.validate_chat(body)
            if not stream:
                return False, wire.chat_completion(body, model)
            if not self.usage_in_final_chunk:
                return True, wire.chat_chunks(body, model)
            # like servers that always report usage on the finishing chunk, asked or not
            chunks = wire.chat_chunks({**body, "stream_options": {"include_usage": True}}, model)
            last = chunks.pop()
            chunks[-1] = {**chunks[-1], "usage": last["usage"]}
            return True, chunks
        self.check_params(body)
        if op == "completions":
            model = wire.validate_completion(body)
            return stream, wire.completion_chunks(body, model) if stream else wire.completion(body, model)
        return False, wire.embeddings({**body, "encoding_format": "float"} if self.floats_only else body)


def _parse(raw: bytes) -> tuple[Any, bool]:
    if not raw:
        return None, False
    try:
        return orjson.loads(raw), True
    except orjson.JSONDecodeError:
        return None, False


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()
