"""Upstream failures reach the client as clear errors in its own wire format; the server keeps serving."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest
import requests

from tests.fakes import openai_faults as oai_faults
from tests.fakes.anthropic_upstream import anthropic_error
from tests.fakes.faults import Fault
from tests.integration.conftest import Upstreams
from tests.support.gateway import RunningGateway

MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture
def client(matrix_gateway: RunningGateway, ups: Upstreams) -> openai.OpenAI:
    return openai.OpenAI(base_url=matrix_gateway.v1, api_key="k", max_retries=0, timeout=10)


@pytest.fixture
def ant(matrix_gateway: RunningGateway, ups: Upstreams) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=matrix_gateway.url, api_key="k", max_retries=0, timeout=10)


def still_serving(client: openai.OpenAI) -> None:
    assert client.chat.completions.create(model="mock", messages=MSGS).choices[0].message.content  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fault", "error", "status"),
    [
        (oai_faults.bad_request("temperature"), openai.BadRequestError, 400),
        (oai_faults.context_length(), openai.BadRequestError, 400),
        (oai_faults.server_error(500), openai.InternalServerError, 502),
        (oai_faults.server_error(503), openai.InternalServerError, 503),
        (oai_faults.bad_auth(), openai.InternalServerError, 502),
    ],
)
def test_upstream_error_statuses_map_to_client_errors(
    client: openai.OpenAI, ups: Upstreams, fault: Fault, error: type[openai.APIStatusError], status: int
) -> None:
    ups.openai.faults.always(fault)
    with pytest.raises(error) as exc:
        client.chat.completions.create(model="oai", messages=MSGS)  # type: ignore[arg-type]
    assert exc.value.status_code == status
    ups.openai.faults.clear()
    still_serving(client)


def test_context_length_is_named(client: openai.OpenAI, ups: Upstreams) -> None:
    ups.openai.faults.always(oai_faults.context_length())
    with pytest.raises(openai.BadRequestError) as exc:
        client.chat.completions.create(model="oai", messages=MSGS)  # type: ignore[arg-type]
    assert exc.value.code == "context_length_exceeded"


def test_rate_limit_passes_retry_after(client: openai.OpenAI, ups: Upstreams) -> None:
    ups.openai.faults.always(oai_faults.rate_limited(retry_after=0.01))
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model="oai", messages=MSGS)  # type: ignore[arg-type]
    assert exc.value.response.headers.get("retry-after")


@pytest.mark.parametrize("model", ["oai", "az", "compat"])
def test_out_of_quota_reaches_each_client_in_its_wire_format(
    client: openai.OpenAI, ant: anthropic.Anthropic, ups: Upstreams, model: str
) -> None:
    fake = {"oai": ups.openai, "az": ups.azure, "compat": ups.compat}[model]
    fake.faults.always(oai_faults.insufficient_quota())
    with pytest.raises(openai.RateLimitError) as exc:
        client.chat.completions.create(model=model, messages=MSGS)  # type: ignore[arg-type]
    assert (exc.value.type, exc.value.code) == ("insufficient_quota", "insufficient_quota")
    with pytest.raises(anthropic.RateLimitError) as ant_exc:
        ant.messages.create(model=model, max_tokens=20, messages=MSGS)  # type: ignore[arg-type]
    assert ant_exc.value.status_code == 429 and "quota" in ant_exc.value.message
    for raw in (exc.value.response, ant_exc.value.response):
        assert raw.headers["x-should-retry"] == "false"  # the SDKs must not retry it either
    assert fake.traffic.requests == 2


@pytest.mark.parametrize(("model", "fault"), [
    ("oai", oai_faults.bad_auth()),
    ("oai", oai_faults.error(403, "You are not allowed to sample from this model", type_="permission_error")),
    ("claude", anthropic_error(401, "authentication_error", "invalid x-api-key")),
])
def test_an_upstream_refusing_the_gateways_key_is_a_server_side_error_in_each_wire_format(
    client: openai.OpenAI, ant: anthropic.Anthropic, ups: Upstreams, model: str, fault: Fault
) -> None:
    """The client's own key was fine: the 502 must not carry the type a client's bad key gets (an SDK user
    reading ``authentication_error`` would go and rotate a key that works)."""
    (ups.openai if model == "oai" else ups.anthropic).faults.always(fault)
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model=model, messages=MSGS)  # type: ignore[arg-type]
    assert (exc.value.status_code, exc.value.type, exc.value.code) == (502, "api_error", "upstream_auth")
    with pytest.raises(anthropic.InternalServerError) as ant_exc:
        ant.messages.create(model=model, max_tokens=20, messages=MSGS)  # type: ignore[arg-type]
    body = ant_exc.value.body
    assert ant_exc.value.status_code == 502
    assert isinstance(body, dict) and body["error"]["type"] == "api_error"


def test_non_json_upstream_body_is_a_502(client: openai.OpenAI, ups: Upstreams) -> None:
    ups.openai.faults.always(Fault.non_json_body())
    with pytest.raises(openai.InternalServerError) as exc:
        client.chat.completions.create(model="oai", messages=MSGS)  # type: ignore[arg-type]
    assert exc.value.status_code == 502
    ups.openai.faults.clear()
    still_serving(client)


def test_upstream_timeout_is_a_504_not_a_hang(client: openai.OpenAI, ups: Upstreams) -> None:
    ups.openai.faults.always(Fault.stall_forever())
    started = time.monotonic()
    with pytest.raises(openai.APIStatusError) as exc:
        client.chat.completions.create(model="oai", messages=MSGS, extra_headers={"x-aigw-timeout": "0.3"})  # type: ignore[arg-type]
    assert exc.value.status_code == 504 and time.monotonic() - started < 5
    ups.openai.faults.clear()
    still_serving(client)


def test_stream_cut_by_upstream_ends_with_an_error_event(client: openai.OpenAI, ups: Upstreams) -> None:
    ups.openai.faults.push(Fault(cut_after=3, chunk_delay=0.02))
    stream = client.chat.completions.create(model="oai", messages=MSGS, stream=True)  # type: ignore[arg-type]
    got = []
    with pytest.raises(openai.APIError):
        for chunk in stream:
            got.append(chunk)
    assert got  # some content arrived before the cut; then an error, never a clean end
    still_serving(client)


def test_stream_cut_reaches_anthropic_client_as_error_event(ant: anthropic.Anthropic, ups: Upstreams) -> None:
    ups.anthropic.faults.push(Fault(cut_after=4, chunk_delay=0.02))
    with pytest.raises(anthropic.APIError), ant.messages.stream(
        model="claude", max_tokens=64, messages=[{"role": "user", "content": "hello there friend"}]
    ) as stream:
        for _ in stream:
            pass


def test_anthropic_overloaded_reaches_anthropic_client(ant: anthropic.Anthropic, ups: Upstreams) -> None:
    ups.anthropic.faults.always(anthropic_error(529, "overloaded_error", "Overloaded"))
    with pytest.raises(anthropic.APIStatusError) as exc:
        ant.messages.create(model="claude", max_tokens=10, messages=[{"role": "user", "content": "x"}])
    assert exc.value.status_code in (503, 529)
    assert exc.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_raw_stream_has_error_event_and_no_done(matrix_gateway: RunningGateway, ups: Upstreams) -> None:
    ups.openai.faults.push(Fault(cut_after=3, chunk_delay=0.02))  # bytes reach the client before the cut
    r = requests.post(matrix_gateway.v1 + "/chat/completions", json={"model": "oai", "messages": MSGS, "stream": True},
                      timeout=10)
    assert r.status_code == 200
    assert '"error"' in r.text and "[DONE]" not in r.text


async def test_client_disconnect_mid_stream_cancels_the_upstream_call(
    matrix_gateway: RunningGateway, ups: Upstreams
) -> None:
    ups.openai.faults.push(Fault.slow(between=0.2))
    client = openai.AsyncOpenAI(base_url=matrix_gateway.v1, api_key="k", max_retries=0)
    stream = await client.chat.completions.create(model="oai", messages=MSGS, stream=True)  # type: ignore[arg-type]
    async for _ in stream:
        break
    await stream.close()
    assert await ups.openai.traffic.wait_for("disconnects", 1, within=3) == 1
    assert ups.openai.traffic.completed == 0


def test_stream_that_dies_before_its_first_byte_is_a_plain_error(client: openai.OpenAI, ups: Upstreams) -> None:
    ups.openai.faults.always(Fault.cut(after=0))
    with pytest.raises(openai.APIStatusError) as exc:
        list(client.chat.completions.create(model="oai", messages=MSGS, stream=True))  # type: ignore[arg-type]
    assert exc.value.status_code == 502


def test_an_upstream_error_quoting_the_deployments_key_does_not_hand_it_to_the_client(
    client: openai.OpenAI, ant: anthropic.Anthropic, ups: Upstreams
) -> None:
    """An upstream's message is passed on (it names the bad parameter), but never the credential the
    gateway sent it: the deployment's `api_key` ("az-key") is in no shape the upstream-error scrub knows."""
    quoting = oai_faults.error(400, "Invalid value for header api-key: az-key (expected 32 characters)")
    ups.azure.faults.always(quoting)
    try:
        with pytest.raises(openai.BadRequestError) as exc:
            client.chat.completions.create(model="az", messages=MSGS)  # type: ignore[arg-type]
        assert "az-key" not in exc.value.response.text
        assert "Invalid value for header api-key: [REDACTED]" in exc.value.response.text
        with pytest.raises(anthropic.BadRequestError) as aexc:
            ant.messages.create(model="az", max_tokens=5, messages=MSGS)  # type: ignore[arg-type]
        assert "az-key" not in aexc.value.response.text
        with pytest.raises(openai.BadRequestError) as sexc:  # a stream that fails before its first byte
            client.chat.completions.create(model="az", messages=MSGS, stream=True)  # type: ignore[call-overload]
        assert "az-key" not in sexc.value.response.text
        ups.azure.faults.clear()
        ups.azure.faults.push(oai_faults.stream_error(after=2, message="stream ended for api-key az-key"))
        with pytest.raises(openai.APIError) as mexc:  # one that fails after its first text: an SSE error event
            list(client.chat.completions.create(model="az", messages=MSGS, stream=True))  # type: ignore[call-overload]
        assert "az-key" not in str(mexc.value.body) and "az-key" not in mexc.value.message
    finally:
        ups.azure.faults.clear()
