"""A stream whose upstream is slow to send gets keep-alives in its own wire format, on both HTTP servers.

Proxies between client and gateway (nginx, AWS ALB: 60 s) cut a connection with nothing on it; here
``server.stream_keepalive_s`` is 0.2 s and the fake upstreams wait about 0.8 s, so the same thing is seen in
a second: keep-alives, then the stream as it would have been, read by the official SDKs as usual.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import orjson
import pytest
import requests
import uvicorn

from tests.fakes import openai_faults as oai_faults
from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import AnthropicUpstream, anthropic_error
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import RunningServer, start_aiohttp_app

MASTER = "sk-master-keepalive-77"
AUTH = {"Authorization": f"Bearer {MASTER}"}
EVERY = 0.2  # server.stream_keepalive_s in these tests
WAIT = 0.8  # the fakes' slow first chunk
OPENAI_KEEPALIVE = b": keep-alive"
ANTHROPIC_PING = b'event: ping\ndata: {"type": "ping"}'
MSGS = [{"role": "user", "content": "tell me about the sea"}]


@dataclasses.dataclass
class Fakes:
    oai: FakeOpenAI
    claude: AnthropicUpstream
    claude_server: RunningServer

    def reset(self) -> None:
        self.oai.reset()
        self.claude.reset()


@pytest.fixture(scope="module")
def fakes() -> Iterator[Fakes]:
    claude = AnthropicUpstream()
    up = Fakes(FakeOpenAI("sk-oai").start(), claude, start_aiohttp_app(claude.app(), "fake-anthropic"))
    yield up
    up.oai.stop()
    up.claude_server.stop()


def config(fakes: Fakes, http: str, keepalive_s: float, tmp: Any) -> dict[str, Any]:
    return {
        "server": {"master_key": MASTER, "http": http, "stream_keepalive_s": keepalive_s},
        "database_url": f"sqlite:///{tmp}/gw.db",
        "models": [
            {"name": "oai", "provider": "openai", "model": "gpt-4o-mini", "api_base": fakes.oai.base_url,
             "api_key": "sk-oai"},
            {"name": "claude", "provider": "anthropic", "model": "claude-test-1",
             "api_base": fakes.claude_server.url, "api_key": ANTHROPIC_KEY},
            {"name": "pauses", "provider": "mock", "mock": {"stream_chunk_ms": 300}},
        ],
        "routing": {"*": {"num_retries": 0}},  # a late failure is the client's, not retried away
        "circuit_breaker": {"enabled": False},
    }


@pytest.fixture(scope="module", params=["aigw", "uvicorn"])
def gw(request: pytest.FixtureRequest, fakes: Fakes, tmp_path_factory: pytest.TempPathFactory
       ) -> Iterator[RunningGateway]:
    with running_gateway(config(fakes, request.param, EVERY, tmp_path_factory.mktemp("ka"))) as running:
        yield running


@pytest.fixture
def up(fakes: Fakes) -> Iterator[Fakes]:
    fakes.reset()
    yield fakes
    fakes.reset()


@dataclasses.dataclass
class Read:
    status: int
    headers: dict[str, str]
    frames: list[bytes]  # SSE events, without their blank line
    first_at: float  # seconds from the request to its first body bytes


def stream(gw: RunningGateway, api: str, model: str, request_id: str = "", max_tokens: int = 100) -> Read:
    """POST a streaming request as raw HTTP; the events as they came."""
    body = {"model": model, "messages": MSGS, "max_tokens": max_tokens, "stream": True}
    if api == "openai":
        url = gw.v1 + "/chat/completions"
        headers = dict(AUTH)
    else:
        url = gw.url + "/v1/messages"
        headers = {**AUTH, "anthropic-version": "2023-06-01"}
    if request_id:
        headers["x-request-id"] = request_id
    started = time.monotonic()
    first_at = -1.0
    data = b""
    with requests.post(url, json=body, headers=headers, stream=True, timeout=10) as r:
        for piece in r.iter_content(chunk_size=None):  # ends with the body (timeout bounds every read)
            if first_at < 0:
                first_at = time.monotonic() - started
            data += piece
        frames = [f for f in data.split(b"\n\n") if f]
        return Read(r.status_code, dict(r.headers), frames, first_at)


def leading(frames: list[bytes], keepalive: bytes) -> int:
    return next((i for i, f in enumerate(frames) if f != keepalive), len(frames))


def slow(fault: Fault | None = None) -> Fault:
    return dataclasses.replace(fault or Fault(), delay_first_chunk=WAIT)


def test_an_openai_stream_slow_to_start_gets_sse_comments_then_the_whole_stream(gw: RunningGateway, up: Fakes
                                                                               ) -> None:
    up.oai.faults.push(slow())
    got = stream(gw, "openai", "oai")
    assert got.status == 200 and got.headers["content-type"].startswith("text/event-stream")
    assert got.headers["x-request-id"]
    n = leading(got.frames, OPENAI_KEEPALIVE)
    assert n >= 2 and got.first_at < WAIT - 0.2  # sent while the upstream was silent, not at its end
    rest = got.frames[n:]
    assert rest[-1] == b"data: [DONE]" and all(f.startswith(b"data: {") for f in rest[:-1])
    chunks = [orjson.loads(f[6:]) for f in rest[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])

    client = openai.OpenAI(base_url=gw.v1, api_key=MASTER, max_retries=0, timeout=10)
    quick = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="oai", messages=MSGS, stream=True) if c.choices)  # type: ignore[arg-type]
    up.oai.faults.push(slow())
    late = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model="oai", messages=MSGS, stream=True) if c.choices)  # type: ignore[arg-type]
    assert late == quick and late


def test_an_anthropic_stream_slow_to_start_gets_ping_events_then_the_whole_stream(gw: RunningGateway, up: Fakes
                                                                                 ) -> None:
    up.claude.faults.push(slow())
    got = stream(gw, "anthropic", "claude")
    assert got.status == 200 and got.headers["content-type"].startswith("text/event-stream")
    assert got.headers["request-id"] == got.headers["x-request-id"]  # Anthropic's SDK reads `request-id`
    n = leading(got.frames, ANTHROPIC_PING)
    assert n >= 2 and got.first_at < WAIT - 0.2
    names = [f.split(b"\n", 1)[0] for f in got.frames[n:]]
    assert names[0] == b"event: message_start" and names[-1] == b"event: message_stop"
    assert b"event: error" not in names

    client = anthropic.Anthropic(base_url=gw.url, api_key=MASTER, max_retries=0, timeout=10)
    with client.messages.stream(model="claude", max_tokens=100, messages=MSGS) as s:  # type: ignore[arg-type]
        quick = s.get_final_message()
    up.claude.faults.push(slow())
    with client.messages.stream(model="claude", max_tokens=100, messages=MSGS) as s:  # type: ignore[arg-type]
        late = s.get_final_message()
    assert late.content == quick.content and late.stop_reason == "end_turn"
    assert late.usage.output_tokens == quick.usage.output_tokens > 0


@pytest.mark.parametrize(("api", "keepalive"), [("openai", OPENAI_KEEPALIVE), ("anthropic", ANTHROPIC_PING)])
def test_long_pauses_between_chunks_are_filled_too(gw: RunningGateway, api: str, keepalive: bytes) -> None:
    got = stream(gw, api, "pauses", max_tokens=4)  # 0.3 s before each of 4 words
    assert got.status == 200
    first_data = leading(got.frames, keepalive)
    assert keepalive in got.frames[first_data:]
    end = b"data: [DONE]" if api == "openai" else b"event: message_stop"
    assert got.frames[-1].startswith(end)


def request_status(gw: RunningGateway, request_id: str) -> int:
    """The request log's status for one request (its record lands just after the stream's end)."""
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        r = requests.get(gw.url + "/admin/requests", params={"limit": 100}, headers=AUTH, timeout=5)
        found = [row for row in r.json()["data"] if row["request_id"] == request_id]
        if found:
            return int(found[0]["status"])
        time.sleep(0.02)
    raise AssertionError(f"{request_id} not in the request log")


def test_an_openai_upstream_failing_after_a_keepalive_ends_the_stream_with_an_error_event(
    gw: RunningGateway, up: Fakes
) -> None:
    late_500 = dataclasses.replace(oai_faults.server_error(500), delay_headers=WAIT)
    up.oai.faults.push(late_500)
    rid = f"ka-late-oai-{gw.server.__class__.__module__}"
    got = stream(gw, "openai", "oai", rid)
    assert got.status == 200  # the head went out with the first keep-alive
    n = leading(got.frames, OPENAI_KEEPALIVE)
    assert n >= 2 and len(got.frames) == n + 1  # then one event, the error, and no [DONE]
    error = orjson.loads(got.frames[n].removeprefix(b"data: "))["error"]
    assert error["type"] == "api_error" and error["message"].startswith("The server had an error")
    assert request_status(gw, rid) == 502  # the request log says it failed, not 200

    up.oai.faults.push(late_500)
    client = openai.OpenAI(base_url=gw.v1, api_key=MASTER, max_retries=0, timeout=10)
    with pytest.raises(openai.APIError, match="The server had an error"):
        for _ in client.chat.completions.create(model="oai", messages=MSGS, stream=True):  # type: ignore[arg-type]
            pass


def test_an_anthropic_upstream_failing_after_a_ping_ends_the_stream_with_an_error_event(
    gw: RunningGateway, up: Fakes
) -> None:
    overloaded = dataclasses.replace(anthropic_error(529, "overloaded_error", "Overloaded"), delay_headers=WAIT)
    up.claude.faults.push(overloaded)
    got = stream(gw, "anthropic", "claude")
    assert got.status == 200
    n = leading(got.frames, ANTHROPIC_PING)
    assert n >= 2 and len(got.frames) == n + 1
    event, data = got.frames[n].split(b"\n", 1)
    assert event == b"event: error"
    assert orjson.loads(data.removeprefix(b"data: "))["error"]["type"] == "overloaded_error"

    up.claude.faults.push(overloaded)
    client = anthropic.Anthropic(base_url=gw.url, api_key=MASTER, max_retries=0, timeout=10)
    with (pytest.raises(anthropic.APIStatusError) as exc,
          client.messages.stream(model="claude", max_tokens=100, messages=MSGS) as s):  # type: ignore[arg-type]
        s.get_final_message()
    assert exc.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_a_failure_before_the_first_keepalive_is_still_an_http_status(gw: RunningGateway, up: Fakes) -> None:
    up.oai.faults.push(oai_faults.server_error(500))
    got = stream(gw, "openai", "oai")
    assert got.status == 502 and got.headers["content-type"] == "application/json"


def test_a_client_gone_after_a_keepalive_stops_the_upstream_call_and_is_a_499(gw: RunningGateway, up: Fakes
                                                                              ) -> None:
    if isinstance(gw.server, uvicorn.Server):
        pytest.skip("uvicorn tells the app of a client gone only once its answer streams (as before keep-alives)")
    up.oai.faults.push(Fault.stall_forever())
    body = {"model": "oai", "messages": MSGS, "stream": True}
    with requests.post(gw.v1 + "/chat/completions", json=body, headers={**AUTH, "x-request-id": "ka-gone"},
                       stream=True, timeout=10) as r:
        assert next(r.iter_content(chunk_size=None)).startswith(OPENAI_KEEPALIVE)
    deadline = time.monotonic() + 3
    while up.oai.traffic.disconnects < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert up.oai.traffic.disconnects == 1  # the upstream call was dropped, not left to run for nobody
    assert request_status(gw, "ka-gone") == 499


@pytest.fixture(scope="module")
def gw_off(fakes: Fakes, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with running_gateway(config(fakes, "aigw", 0, tmp_path_factory.mktemp("ka-off"))) as running:
        yield running


def test_zero_turns_keepalives_off(gw_off: RunningGateway, up: Fakes) -> None:
    up.oai.faults.push(slow())
    got = stream(gw_off, "openai", "oai")
    assert got.status == 200 and got.first_at >= WAIT - 0.05  # silent until the upstream spoke
    assert OPENAI_KEEPALIVE not in got.frames and got.frames[-1] == b"data: [DONE]"
    up.oai.faults.push(dataclasses.replace(oai_faults.server_error(500), delay_headers=WAIT))
    assert stream(gw_off, "openai", "oai").status == 502  # a late failure is a status again
