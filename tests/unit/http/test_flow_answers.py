"""What the HTTP layer sends for each kind of answer: live, a stored one sent as is, a replayed stream."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from aigw import errors
from aigw.app import build_app
from aigw.config.cache import CacheConfig
from aigw.config.load import load_config
from aigw.config.models import GatewayConfig
from aigw.http.flow import send_error, served_headers
from aigw.http.openai_api import OpenAIFormat, Validated
from aigw.http.server import GatewayApp
from aigw.pipeline.context import RequestContext
from aigw.pipeline.stages.cache_entry import encode

KEY = "sk-flow-test"


class Sent:
    """What the app sent: the start message's status and headers, then the body messages."""

    def __init__(self, messages: list[dict[str, Any]]) -> None:
        start = messages[0]
        self.status: int = start["status"]
        self.headers = {k.decode(): v.decode() for k, v in start["headers"]}
        self.names = [k.decode() for k, _ in start["headers"]]
        self.bodies = [m.get("body", b"") for m in messages[1:]]
        self.body = b"".join(self.bodies)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[GatewayApp]:
    config = load_config()
    config.server.master_key = KEY
    config.database_url = f"sqlite:///{tmp_path}/flow.db"
    config.observability.metrics.enabled = False
    config.observability.request_log.enabled = False
    config.observability.log_requests = False
    config.tenancy.enabled = False
    config.cache = CacheConfig(mode="exact")
    yield build_app(config)


async def call(app: GatewayApp, body: dict[str, Any], path: str = "/v1/chat/completions",
               headers: dict[str, str] | None = None, sent: list[dict[str, Any]] | None = None) -> Sent:
    raw = orjson.dumps(body)
    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "raw_path": path.encode(),
             "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {KEY}".encode()),
                         *((k.encode(), v.encode()) for k, v in (headers or {}).items())],
             "http_version": "1.1", "scheme": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
             "root_path": ""}
    inbox = [{"type": "http.request", "body": raw, "more_body": False}]
    sent = [] if sent is None else sent

    async def receive() -> dict[str, Any]:
        return inbox.pop() if inbox else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    await app.state["pipeline"].stage("cache").flush()
    return Sent(sent)


def chat(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "mock", "messages": [{"role": "user", "content": text}], **extra}


async def test_a_plain_hit_sends_the_first_answers_bytes(app: GatewayApp) -> None:
    miss = await call(app, chat("same bytes"))
    hit = await call(app, chat("same bytes"))
    assert (miss.headers["x-aigw-cache"], hit.headers["x-aigw-cache"]) == ("miss", "hit")
    assert hit.body == miss.body
    assert hit.headers["content-type"] == "application/json"
    assert int(hit.headers["content-length"]) == len(hit.body)
    assert hit.headers["x-aigw-handled-by"] == "cache"
    assert hit.headers["x-aigw-cache-match"] == "exact" and hit.headers["x-aigw-cache-age"] == "0"
    assert hit.headers["x-request-id"] != miss.headers["x-request-id"]
    assert len(hit.names) == len(set(hit.names))  # no header twice


async def test_a_stream_hit_is_one_write_of_well_formed_events(app: GatewayApp) -> None:
    live = await call(app, chat("stream once", stream=True))
    hit = await call(app, chat("stream once", stream=True))
    assert hit.headers["x-aigw-cache"] == "hit"
    assert hit.headers["content-type"].startswith("text/event-stream")
    assert hit.headers["cache-control"] == "no-cache"
    assert len(hit.bodies) == 1 and int(hit.headers["content-length"]) == len(hit.body)
    events = [e for e in hit.body.decode().split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    chunks = [orjson.loads(e[6:]) for e in events[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    live_chunks = [orjson.loads(e[6:]) for e in live.body.decode().split("\n\n") if e and e != "data: [DONE]"]
    assert text == "".join(c["choices"][0]["delta"].get("content") or "" for c in live_chunks if c["choices"])
    assert not any(c.get("usage") for c in chunks)  # not asked for: hidden, as on the live stream
    with_usage = await call(app, chat("stream once", stream=True, stream_options={"include_usage": True}))
    assert b'"usage"' in with_usage.body


async def test_an_anthropic_client_gets_a_stored_answer_rendered_for_it(app: GatewayApp) -> None:
    body = {"model": "mock", "max_tokens": 50, "messages": [{"role": "user", "content": "both apis"}]}
    await call(app, body, "/v1/messages")
    hit = await call(app, body, "/v1/messages")
    assert hit.headers["x-aigw-cache"] == "hit"
    message = orjson.loads(hit.body)
    assert message["type"] == "message" and message["content"][0]["type"] == "text"


async def test_a_private_part_never_reaches_an_openai_client_from_a_replay(app: GatewayApp) -> None:
    stage = app.state["pipeline"].stage("cache")
    await call(app, chat("private part"))
    store = stage.stores["memory"]
    key = next(iter(store._items))
    value = await store.get(key)
    _, _, raw = value.partition(b"\n")
    body = {**orjson.loads(raw), "_anthropic": {"stop_sequence": None}}
    await store.set(key, encode(body, 0, "mock", "mock#0"), 60)
    plain = await call(app, chat("private part"))
    stream = await call(app, chat("private part", stream=True))
    assert plain.headers["x-aigw-cache"] == stream.headers["x-aigw-cache"] == "hit"
    assert b"_anthropic" not in plain.body and b"_anthropic" not in stream.body


def test_a_stage_header_wins_over_a_served_one_and_appears_once() -> None:
    ctx = RequestContext(request_id="req_1", api="openai", endpoint="chat", body={}, model="m")
    ctx.handled_by = "cache"
    ctx.response_headers.update({"x-aigw-handled-by": "rules", "x-aigw-cache": "hit"})
    headers = served_headers(ctx)
    assert headers.count((b"x-aigw-handled-by", b"rules")) == 1
    assert [k for k, _ in headers].count(b"x-aigw-handled-by") == 1
    assert (b"x-request-id", b"req_1") in headers and (b"x-aigw-cache", b"hit") in headers


def test_stage_headers_pair_up_in_order_and_a_line_break_is_kept_for_the_head_check_to_refuse() -> None:
    ctx = RequestContext(request_id="req_1", api="openai", endpoint="chat", body={}, model="m")
    ctx.response_headers.update({f"x-ratelimit-{i}": str(i) for i in range(8)})
    assert served_headers(ctx)[1:] == [(b"x-ratelimit-%d" % i, b"%d" % i) for i in range(8)]
    ctx.response_headers.update({"x-bad": "a\nset-cookie: x=1", "x-after": "z"})
    headers = served_headers(ctx)
    assert (b"x-bad", b"a\nset-cookie: x=1") in headers and (b"x-after", b"z") in headers


def test_the_same_body_bytes_are_checked_once_and_a_bad_body_every_time() -> None:
    checked: list[object] = []

    def check(body: dict[str, Any]) -> None:
        checked.append(body)
        if body.get("bad"):
            raise ValueError("bad body")

    validated = Validated(check, limit=2)
    validated({"a": 1}, b'{"a":1}')
    validated({"a": 1}, b'{"a":1}')
    assert len(checked) == 1
    for _ in range(2):
        with pytest.raises(ValueError):
            validated({"bad": True}, b'{"bad":true}')
    assert len(checked) == 3
    validated({"b": 1}, b'{"b":1}')
    validated({"c": 1}, b'{"c":1}')  # over the limit: the memo starts again
    validated({"a": 1}, b'{"a":1}')
    assert len(checked) == 6


async def test_an_invalid_request_is_refused_even_right_after_a_valid_one(app: GatewayApp) -> None:
    ok = await call(app, chat("valid"))
    bad = await call(app, {"model": "mock", "messages": "not a list"})
    assert ok.status == 200 and bad.status == 400


async def test_retry_after_is_rounded_up_so_a_client_that_waits_that_long_finds_room() -> None:
    messages: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        messages.append(message)

    await send_error(send, OpenAIFormat(), errors.RateLimited("wait", retry_after=59.2), "req-1")
    assert Sent(messages).headers["retry-after"] == "60"


async def test_a_request_cut_short_by_shutdown_gets_a_503_and_is_recorded_as_one(tmp_path: Path) -> None:
    config = GatewayConfig.model_validate({
        "server": {"master_key": KEY}, "database_url": f"sqlite:///{tmp_path}/shutdown.db",
        "models": [{"name": "slow", "provider": "mock", "latency_ms": 5000}],
        "observability": {"metrics": {"enabled": False}, "request_log": {"enabled": False}}})
    app = build_app(config)
    finished: list[RequestContext] = []
    pipeline = app.state["pipeline"]
    finish = pipeline.finish

    async def kept(ctx: RequestContext) -> None:
        finished.append(ctx)
        await finish(ctx)

    pipeline.finish = kept
    sent: list[dict[str, Any]] = []
    task = asyncio.get_running_loop().create_task(call(app, {**chat("slow one"), "model": "slow"}, sent=sent))
    await asyncio.sleep(0.1)
    task.cancel()  # what the server does to requests still running when its graceful shutdown ends
    with pytest.raises(asyncio.CancelledError):
        await task
    error = finished[0].error
    assert error is not None and (error.status, error.code) == (503, "gateway_shutdown")  # the ledger's row
    answer = Sent(sent)
    assert answer.status == 503 and orjson.loads(answer.body)["error"]["code"] == "gateway_shutdown"


@pytest.mark.parametrize(("path", "body", "event"), [
    ("/v1/chat/completions", {"max_tokens": 50}, b'data: {"error":'),
    ("/v1/messages", {"max_tokens": 50}, b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error"'),
])
async def test_a_stream_cut_short_by_shutdown_ends_with_an_error_event_not_a_cut(
    tmp_path: Path, path: str, body: dict[str, Any], event: bytes
) -> None:
    config = GatewayConfig.model_validate({
        "server": {"master_key": KEY}, "database_url": f"sqlite:///{tmp_path}/shutdown.db",
        "models": [{"name": "slow", "provider": "mock", "mock": {"stream_chunk_ms": 200}}],
        "observability": {"metrics": {"enabled": False}, "request_log": {"enabled": False}}})
    app = build_app(config)
    raw = orjson.dumps({**chat(" ".join(["word"] * 40)), "model": "slow", "stream": True, **body})
    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "raw_path": path.encode(),
             "headers": [(b"content-type", b"application/json"), (b"authorization", f"Bearer {KEY}".encode())],
             "http_version": "1.1", "scheme": "http", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
             "root_path": ""}
    inbox = [{"type": "http.request", "body": raw, "more_body": False}]
    stays = asyncio.Event()  # the client stays: no disconnect comes
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if inbox:
            return inbox.pop()
        await stays.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and sent:  # as a server refuses it
            raise RuntimeError("http.response.start sent twice")
        sent.append(message)

    task = asyncio.get_running_loop().create_task(app(scope, receive, send))
    for _ in range(100):  # until the stream is under way
        if len(sent) >= 2:
            break
        await asyncio.sleep(0.02)
    task.cancel()  # what the server does to requests still running when its graceful shutdown ends
    with pytest.raises(asyncio.CancelledError):
        await asyncio.wait_for(task, 5)
    answer = Sent(sent)
    assert answer.status == 200 and answer.headers["content-type"].startswith("text/event-stream")
    last = sent[-1]
    assert last["type"] == "http.response.body" and last.get("more_body", False) is False  # the stream's proper end
    assert last["body"].startswith(event) and b"The gateway shut down" in last["body"]
