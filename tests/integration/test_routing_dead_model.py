"""An upstream that says the model or deployment a deployment names does not exist (renamed, retired, never
deployed) does not end the request while a sibling deployment or a fallback model can serve it, and counts
against that deployment's breaker; any other upstream 404 (about the client's own input: a file, a
``previous_response_id``) reaches the client as it did, with no breaker failure and no other deployment called.
Seen through the official SDKs; upstreams are the fakes, answering in their provider's exact wire format."""

from __future__ import annotations

from typing import Any

import anthropic
import openai
import pytest

from tests.fakes import openai_faults as oai
from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import anthropic_error
from tests.fakes.faults import Fault, Traffic
from tests.integration.conftest import Upstreams
from tests.integration.routing_support import MASTER, MSGS, by_model, client, config, mock
from tests.support.gateway import RunningGateway, running_gateway

CHEAP = {"input_per_mtok": 0.1, "output_per_mtok": 0.1}  # with lowest_cost: the dead deployment is tried first
DEAR = {"input_per_mtok": 10.0, "output_per_mtok": 10.0}
FIRST = {"strategy": "lowest_cost"}
VLLM_GONE = Fault(status=404, body={"object": "error", "message": "The model `llama-3-70b` does not exist.",
                                    "type": "NotFoundError", "param": None, "code": 404})
OLLAMA_GONE = Fault(status=404, body={"error": {"message": 'model "llama3:70b" not found, try pulling it first',
                                                "type": "not_found_error", "param": None, "code": None}})


def dead(ups: Upstreams, kind: str, name: str = "m") -> tuple[dict[str, Any], Traffic]:
    """A deployment whose upstream answers model-not-found, in ``kind``'s own shape, and that upstream's traffic."""
    if kind == "openai":  # a model OpenAI does not have (retired, renamed): 404 model_not_found
        return {"name": name, "provider": "openai", "model": "gpt-retired", "api_base": ups.openai.base_url,
                "api_key": "sk-oai", "prices": CHEAP}, ups.openai.traffic
    if kind == "azure":  # a deployment the resource does not have: 404 DeploymentNotFound
        return {"name": name, "provider": "azure", "model": "gpt-4o-mini", "deployment": "deleted",
                "api_base": ups.azure.url, "api_key": "az-key", "api_version": "2024-10-21",
                "prices": CHEAP}, ups.azure.traffic
    if kind == "anthropic":  # 404 not_found_error "model: claude-retired"
        return {"name": name, "provider": "anthropic", "model": "claude-retired",
                "api_base": ups.anthropic_server.url, "api_key": ANTHROPIC_KEY, "prices": CHEAP}, ups.anthropic.traffic
    ups.compat.faults.always(VLLM_GONE if kind == "vllm" else OLLAMA_GONE)
    return {"name": name, "provider": "openai_compatible", "model": "llama-3-70b", "api_base": ups.compat.base_url,
            "prices": CHEAP}, ups.compat.traffic


def live(ups: Upstreams, kind: str, name: str = "m") -> dict[str, Any]:
    """A healthy deployment of ``kind`` on its fake (for faults scripted on it)."""
    if kind == "openai":
        return {"name": name, "provider": "openai", "model": "gpt-4o-mini", "api_base": ups.openai.base_url,
                "api_key": "sk-oai", "prices": CHEAP}
    return {"name": name, "provider": "anthropic", "model": "claude-test-1", "api_base": ups.anthropic_server.url,
            "api_key": ANTHROPIC_KEY, "prices": CHEAP}


def text_of(c: openai.OpenAI, stream: bool, model: str = "m") -> tuple[str, dict[str, str]]:
    """The answer's text and headers, whole or streamed."""
    if stream:
        raw = c.chat.completions.with_raw_response.create(model=model, messages=MSGS, stream=True)  # type: ignore[arg-type]
        chunks = list(raw.parse())
        return "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices), dict(raw.headers)
    whole = c.chat.completions.with_raw_response.create(model=model, messages=MSGS)  # type: ignore[arg-type]
    return whole.parse().choices[0].message.content or "", dict(whole.headers)


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("kind", ["openai", "azure", "anthropic", "vllm", "ollama"])
def test_a_sibling_deployment_serves_when_the_first_says_its_model_does_not_exist(
        ups: Upstreams, kind: str, stream: bool) -> None:
    gone, traffic = dead(ups, kind)
    with running_gateway(config([gone, mock("m", prices=DEAR)], routing={"m": FIRST})) as gw:
        text, headers = text_of(client(gw), stream)
    assert text and headers["x-aigw-provider"] == "mock"
    assert traffic.requests == 1  # tried first, once: its answer will not change, so it is not retried


@pytest.mark.parametrize("stream", [False, True])
def test_a_fallback_model_serves_when_every_deployment_says_its_model_does_not_exist(
        ups: Upstreams, stream: bool) -> None:
    gone, traffic = dead(ups, "openai")
    cfg = config([gone, mock("backup")], routing={"m": {"fallbacks": ["backup"], "num_retries": 2}})
    with running_gateway(cfg) as gw:
        text, headers = text_of(client(gw), stream)
    assert text and headers["x-aigw-served-model"] == "backup"
    assert traffic.requests == 1  # num_retries=2, yet the same deployment is not called again


def test_the_breaker_opens_after_the_configured_model_not_found_failures(ups: Upstreams) -> None:
    gone, traffic = dead(ups, "anthropic")
    cfg = config([gone, mock("m", prices=DEAR)], routing={"m": FIRST},
                 circuit_breaker={"failures": 2, "cooldown_s": 60})
    with running_gateway(cfg) as gw:
        c = client(gw)
        for _ in range(5):
            assert text_of(c, False)[1]["x-aigw-provider"] == "mock"  # no client saw an error
        sick = by_model(gw, "m", "anthropic")
    assert (sick["breaker"], sick["last_error"]["kind"]) == ("open", "upstream_model_not_found")
    assert traffic.requests == 2  # skipped once open


@pytest.fixture
def all_dead(ups: Upstreams) -> Any:
    """``m`` on a dead OpenAI deployment, its fallback ``n`` on a dead Anthropic one."""
    first, _ = dead(ups, "openai")
    second, _ = dead(ups, "anthropic", name="n")
    with running_gateway(config([first, second], routing={"m": {"fallbacks": ["n"]}})) as gw:
        yield gw


@pytest.mark.parametrize("stream", [False, True])
def test_when_nothing_can_serve_an_openai_client_gets_a_502_upstream_model_not_found(
        all_dead: RunningGateway, ups: Upstreams, stream: bool) -> None:
    sdk = openai.OpenAI(base_url=all_dead.v1, api_key=MASTER, max_retries=2, timeout=10)  # the SDK's default
    with pytest.raises(openai.InternalServerError) as exc:
        sdk.chat.completions.create(model="m", messages=MSGS, stream=stream)  # type: ignore[call-overload]
    err = exc.value
    assert (err.status_code, err.code, err.type) == (502, "upstream_model_not_found", "api_error")
    assert err.response.headers["x-should-retry"] == "false"  # no retry mends it: the SDK does not make one
    assert (ups.openai.traffic.requests, ups.anthropic.traffic.requests) == (1, 1)


@pytest.mark.parametrize("stream", [False, True])
def test_when_nothing_can_serve_an_anthropic_client_gets_a_502_api_error(
        all_dead: RunningGateway, ups: Upstreams, stream: bool) -> None:
    sdk = anthropic.Anthropic(base_url=all_dead.url, api_key=MASTER, max_retries=2, timeout=10)
    with pytest.raises(anthropic.InternalServerError) as exc:
        sdk.messages.create(model="m", max_tokens=20, messages=MSGS, stream=stream)  # type: ignore[call-overload]
    body = exc.value.body
    assert exc.value.status_code == 502
    assert isinstance(body, dict) and body["type"] == "error" and body["error"]["type"] == "api_error"
    assert "model not found" in body["error"]["message"]
    assert (ups.openai.traffic.requests, ups.anthropic.traffic.requests) == (1, 1)


@pytest.mark.parametrize("fault", [oai.file_not_found(), oai.previous_response_not_found()])
def test_an_openai_404_about_the_clients_input_passes_through_untouched(ups: Upstreams, fault: Fault) -> None:
    ups.openai.faults.always(fault)
    cfg = config([live(ups, "openai"), mock("m", prices=DEAR)], routing={"m": FIRST},
                 circuit_breaker={"failures": 1, "cooldown_s": 60})
    with running_gateway(cfg) as gw:
        c = client(gw)
        for _ in range(2):
            with pytest.raises(openai.NotFoundError) as exc:
                c.chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
            assert exc.value.body == fault.body["error"]  # the upstream's own error, as it sent it
        assert by_model(gw, "m", "openai")["breaker"] == "closed"  # one failure would have opened it
    assert ups.openai.traffic.requests == 2  # and the mock sibling was never asked (it would have answered)


def test_an_anthropic_file_not_found_passes_through_untouched(ups: Upstreams) -> None:
    missing = "File not found: file_011CNha8iCJcU1wXNR6q4V8w"
    ups.anthropic.faults.always(anthropic_error(404, "not_found_error", missing))
    cfg = config([live(ups, "anthropic"), mock("m", prices=DEAR)], routing={"m": FIRST},
                 circuit_breaker={"failures": 1, "cooldown_s": 60})
    with running_gateway(cfg) as gw:
        sdk = anthropic.Anthropic(base_url=gw.url, api_key=MASTER, max_retries=0, timeout=10)
        for _ in range(2):
            with pytest.raises(anthropic.NotFoundError) as exc:
                sdk.messages.create(model="m", max_tokens=20, messages=MSGS)  # type: ignore[arg-type]
            body = exc.value.body
            assert isinstance(body, dict) and body["error"]["type"] == "not_found_error"
            assert missing in body["error"]["message"]
        assert by_model(gw, "m", "anthropic")["breaker"] == "closed"
    assert ups.anthropic.traffic.requests == 2
