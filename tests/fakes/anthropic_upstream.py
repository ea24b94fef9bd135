"""A fake Anthropic API on loopback: Anthropic's wire format, deterministic answers, scripted faults.

    fake = AnthropicUpstream()                          # api_key API_KEY, models MODELS
    server = start_aiohttp_app(fake.app())              # tests.support.servers
    fake.faults.push(anthropic_error(529, "overloaded_error", "Overloaded"), times=2)
    fake.faults.push(Fault.cut(after=4))                # stream: connection drops after 4 events
    fake.faults.push(Fault(no_done=True))               # stream: clean end of body, no message_stop
    fake.faults.push(Fault(stream_error=overloaded_event(), cut_after=3))  # 3 events, then `event: error`
    fake.traffic.last.body / .headers;  fake.traffic.disconnects

Faults and counters are the shared ones of ``tests.fakes.faults`` (one script API for
every provider's fake); this module adds Anthropic's framing and bodies. It checks
what the real API checks (``x-api-key``, ``anthropic-version``, body shape, roles,
tool_use/tool_result pairing, unknown model -> 404; see ``anthropic_wire``), answers
deterministically from the input, reports prompt caching for ``cache_control``
prefixes, and streams the exact event order: message_start, content_block_start,
ping, content_block_delta..., content_block_stop, ..., message_delta, message_stop.
"""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import orjson
from aiohttp import web

from tests.fakes.anthropic_wire import Plan, WireError, plan, validate
from tests.fakes.faults import HTML_BODY, Fault, FaultScript, Traffic, before_answer, send_sse

MODELS = ("claude-test-1", "claude-sonnet-4-5", "claude-haiku-4-5", "claude-3-5-haiku-20241022")
API_KEY = "sk-ant-test"


def error_body(err_type: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": err_type, "message": message}}


def anthropic_error(status: int, err_type: str, message: str, retry_after: float | None = None) -> Fault:
    """A fault answering with Anthropic's error shape (and Retry-After when given)."""
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return Fault(status=status, body=error_body(err_type, message), headers=headers)


def overloaded_event() -> dict[str, Any]:
    """Body of the ``error`` event Anthropic sends when it fails mid-stream."""
    return error_body("overloaded_error", "Overloaded")


class AnthropicUpstream:
    """One fake: the shared fault script and traffic counters, plus prompt-cache state."""

    def __init__(self, api_key: str = API_KEY, models: tuple[str, ...] = MODELS, context_limit: int = 200_000) -> None:
        self.api_key = api_key
        self.models = set(models)
        self.context_limit = context_limit
        self.faults = FaultScript()
        self.traffic = Traffic()
        self._cache: set[str] = set()
        self._ids = itertools.count(1)

    def reset(self) -> None:
        self.faults.clear()
        self.traffic.reset()
        self._cache.clear()

    def app(self) -> web.Application:
        app = web.Application(client_max_size=32 * 1024 * 1024)
        app.router.add_post("/v1/messages", self._messages)
        app.router.add_get("/v1/models", self._models)
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        return app

    # ------------------------------------------------------------ plumbing

    def _headers(self) -> dict[str, str]:
        return {"request-id": f"req_fake{next(self._ids):012d}"}

    def _error(self, status: int, err_type: str, message: str) -> web.Response:
        headers = self._headers()
        body = {**error_body(err_type, message), "request_id": headers["request-id"]}
        return web.json_response(body, status=status, headers=headers, dumps=_dumps)

    def _auth(self, request: web.Request) -> web.Response | None:
        if request.headers.get("x-api-key") != self.api_key:
            return self._error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return self._error(400, "invalid_request_error", "anthropic-version: header is required")
        return None

    # ------------------------------------------------------------ handlers

    async def _not_found(self, request: web.Request) -> web.Response:
        return self._error(404, "not_found_error", "Not Found")

    async def _models(self, request: web.Request) -> web.StreamResponse:
        self.traffic.record(request, None)
        early = await before_answer(request, self.faults.take(request.path), self.traffic, self._headers())
        if early is not None:
            return early
        denied = self._auth(request)
        if denied is not None:
            return denied
        try:  # pages as the real API does: ``limit`` 1-1000 (20 by default), ``after_id``
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 1000:
            return self._error(400, "invalid_request_error", "limit: Input should be between 1 and 1000")
        ids = sorted(self.models)
        after = request.query.get("after_id")
        if after is not None:
            ids = ids[ids.index(after) + 1:] if after in ids else []
        data = [
            {"type": "model", "id": m, "display_name": m, "created_at": "2025-01-01T00:00:00Z"}
            for m in ids[:limit]
        ]
        body = {"data": data, "has_more": len(ids) > limit, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}
        self.traffic.completed += 1
        return web.json_response(body, headers=self._headers(), dumps=_dumps)

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body: Any = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        self.traffic.record(request, body)
        fault = self.faults.take(request.path)
        early = await before_answer(request, fault, self.traffic, self._headers())
        if early is not None:
            return early
        denied = self._auth(request)
        if denied is not None:
            return denied
        if not isinstance(body, dict):
            return self._error(400, "invalid_request_error", "There was an error parsing the body as JSON")
        try:
            validate(body, self.models)
        except WireError as exc:
            return self._error(exc.status, exc.err_type, exc.message)
        answer = plan(body, self._cache)
        used = answer.usage
        total = used["input_tokens"] + used["cache_read_input_tokens"] + used["cache_creation_input_tokens"]
        if total > self.context_limit:
            message = f"prompt is too long: {total} tokens > {self.context_limit} maximum"
            return self._error(400, "invalid_request_error", message)
        message = self._message(body["model"], answer)
        if body.get("stream"):
            return await self._stream(request, message, fault)
        if fault is not None and fault.non_json:
            return web.Response(status=200, body=HTML_BODY, headers=self._headers(), content_type="text/html")
        if fault is not None and fault.no_usage:  # a compatible server that reports no usage at all
            message = {k: v for k, v in message.items() if k != "usage"}
        self.traffic.completed += 1
        return web.json_response(message, headers=self._headers(), dumps=_dumps)

    def _message(self, model: str, answer: Plan) -> dict[str, Any]:
        return {
            "id": f"msg_fake{next(self._ids):020d}",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": answer.blocks,
            "stop_reason": answer.stop_reason,
            "stop_sequence": answer.stop_sequence,
            "usage": answer.usage,
        }

    async def _stream(self, request: web.Request, message: dict[str, Any], fault: Fault | None) -> web.StreamResponse:
        events = stream_events(message)
        if fault is not None and fault.no_usage:
            events = [(name, _without_usage(data)) for name, data in events]
        if fault is not None and fault.start_usage_only:
            events = [(name, _without_usage(data) if name == "message_delta" else data) for name, data in events]
        frames = [_frame(name, data) for name, data in events]
        if fault is not None and fault.no_done:
            frames = frames[:-1]  # a clean end of the body, but no message_stop
        if fault is not None and fault.stream_error is not None:
            # Anthropic names its error events; the shared sender writes bare `data:` lines.
            frames = [*frames[: fault.cut_after or 0], _frame("error", fault.stream_error)]
            fault = dataclasses.replace(fault, stream_error=None, cut_after=None)
        headers = {**self._headers(), "cache-control": "no-cache"}
        return await send_sse(request, headers, frames, fault, self.traffic, end=None)


def _without_usage(data: dict[str, Any]) -> dict[str, Any]:
    if data.get("type") == "message_start":
        return {**data, "message": {k: v for k, v in data["message"].items() if k != "usage"}}
    return {k: v for k, v in data.items() if k != "usage"}


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj).decode()


def _frame(name: str, data: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _block_events(index: int, block: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    btype = block["type"]
    if btype == "text":
        start: dict[str, Any] = {"type": "text", "text": ""}
        deltas = [{"type": "text_delta", "text": p} for p in _words(block["text"])]
    elif btype == "thinking":
        start = {"type": "thinking", "thinking": "", "signature": ""}
        deltas = [{"type": "thinking_delta", "thinking": p} for p in _words(block["thinking"])]
        deltas.append({"type": "signature_delta", "signature": block["signature"]})
    else:
        start = {**block, "input": {}}
        # as the real API streams a call without input: one empty fragment, never "{}"
        arguments = orjson.dumps(block["input"]).decode() if block["input"] else ""
        deltas = [{"type": "input_json_delta", "partial_json": p} for p in ["", *_pieces(arguments, 8)]]
    events = [("content_block_start", {"type": "content_block_start", "index": index, "content_block": start})]
    events += [("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d}) for d in deltas]
    events.append(("content_block_stop", {"type": "content_block_stop", "index": index}))
    return events


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [parts[0], *(" " + p for p in parts[1:])]


def stream_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The exact SSE sequence the real API sends for ``message``."""
    usage = message["usage"]
    start = {
        **message,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": {**{k: v for k, v in usage.items() if k != "server_tool_use"}, "output_tokens": 1},
    }
    events: list[tuple[str, dict[str, Any]]] = [("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(message["content"]):
        block_events = _block_events(index, block)
        events.append(block_events[0])
        if index == 0:
            events.append(("ping", {"type": "ping"}))
        events += block_events[1:]
    if not message["content"]:
        events.append(("ping", {"type": "ping"}))
    delta = {"stop_reason": message["stop_reason"], "stop_sequence": message["stop_sequence"]}
    final_usage = {"output_tokens": usage["output_tokens"]}
    if "server_tool_use" in usage:  # what the server's own tools did, known at the end
        final_usage["server_tool_use"] = usage["server_tool_use"]
    events.append(("message_delta", {"type": "message_delta", "delta": delta, "usage": final_usage}))
    events.append(("message_stop", {"type": "message_stop"}))
    return events
