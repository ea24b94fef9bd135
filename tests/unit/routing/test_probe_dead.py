"""A dead deployment (out of quota, its key refused, its model gone) is revived early by the health probe only
when the probe itself saw the failure gone: its model in the upstream's listing, its own key accepted by a
listing that needs it. Out of quota no listing can show: the cooldown runs to its end. The real adapters talk
to the fake upstreams on loopback, in each provider's wire format."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from typing import Any

import pytest

from aigw import errors
from aigw.config.models import CircuitBreakerConfig, Deployment
from aigw.providers.anthropic.client import AnthropicProvider
from aigw.providers.azure.client import AzureProvider
from aigw.providers.base import CallOptions, Provider, Timeouts
from aigw.providers.http import HttpClients
from aigw.providers.openai.client import OpenAIProvider
from aigw.providers.openai_compatible.client import OpenAICompatibleProvider
from aigw.routing.book import HealthBook
from aigw.routing.breaker import HALF_OPEN, OPEN
from aigw.routing.probe import Prober
from aigw.routing.retry import outcome_of
from aigw.supervise import Supervisor
from tests.fakes import openai_faults as oai
from tests.fakes import openai_wire
from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import MODELS as ANTHROPIC_MODELS
from tests.fakes.anthropic_upstream import AnthropicUpstream, anthropic_error
from tests.fakes.azure_upstream import FakeAzure
from tests.fakes.faults import Fault
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support.servers import RunningServer, start_aiohttp_app
from tests.unit.routing.fakes import Clock

CFG = CircuitBreakerConfig(failures=1, cooldown_s=30, window_s=30, probe_interval_s=1, probe_timeout_s=2)
CALL = CallOptions(Timeouts(connect=2, first_token=2, total=2))
HELLO = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}


@pytest.fixture(scope="module")
def openai_up() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI("sk-oai").start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def azure_up() -> Iterator[FakeAzure]:
    fake = FakeAzure("az-key").start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def compat_up() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(None).start()  # lists its models to anyone, as OpenRouter's public /models does
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def anthropic_up() -> Iterator[tuple[AnthropicUpstream, RunningServer]]:
    fake = AnthropicUpstream()
    server = start_aiohttp_app(fake.app(), name="fake-anthropic")
    yield fake, server
    server.stop()


@pytest.fixture(autouse=True)
def _clean(openai_up: FakeOpenAI, azure_up: FakeAzure, compat_up: FakeOpenAI,
           anthropic_up: tuple[AnthropicUpstream, RunningServer]) -> Iterator[None]:
    for fake in (openai_up, azure_up, compat_up, anthropic_up[0]):
        fake.reset()
    yield
    for fake in (openai_up, azure_up, compat_up, anthropic_up[0]):
        fake.reset()
    openai_up.api_key, azure_up.api_key = "sk-oai", "az-key"
    anthropic_up[0].models.intersection_update(ANTHROPIC_MODELS)


@pytest.fixture
async def clients() -> AsyncIterator[HttpClients]:
    c = HttpClients()
    yield c
    await c.aclose()


class Dead:
    """One deployment on its real adapter, killed by what its upstream answered to a chat call."""

    def __init__(self, provider: Provider, d: Deployment) -> None:
        d.id = "m#0"
        self.clock = Clock()
        self.book = HealthBook([d], CFG, self.clock, Supervisor())
        self.s = self.book.state("m#0")
        self.provider = provider
        self.prober = Prober(self.book, [(self.s, provider)], CFG)

    async def kill(self, kind: str) -> None:
        with pytest.raises(errors.GatewayError) as exc:
            await self.provider.chat(dict(HELLO), CALL)
        assert exc.value.kind == kind
        self.book.record(self.s, outcome_of(exc.value), trial=False)
        assert self.phase() == OPEN

    async def probe(self) -> str:
        await self.prober.probe_once()
        return self.phase()

    def phase(self) -> str:
        return self.s.breaker.phase(self.clock.monotonic())


def deployment(provider: str, **fields: Any) -> Deployment:
    return Deployment.model_validate({"name": "m", "provider": provider, **fields})


def openai_dead(up: FakeOpenAI, clients: HttpClients, model: str = "gpt-4o-mini", key: str = "sk-oai") -> Dead:
    d = deployment("openai", model=model, api_base=up.base_url, api_key=key)
    return Dead(OpenAIProvider(d, clients), d)


# -- model not found: alive again only when the listing has the model ------------------------------------------

async def test_openai_model_gone_stays_dead_while_models_does_not_list_it(
        openai_up: FakeOpenAI, clients: HttpClients, monkeypatch: pytest.MonkeyPatch) -> None:
    dead = openai_dead(openai_up, clients, model="gpt-retired")
    await dead.kill("upstream_model_not_found")
    assert await dead.probe() == OPEN  # GET /v1/models answered 200, without gpt-retired
    monkeypatch.setitem(openai_wire.MODELS, "gpt-retired", openai_wire.MODELS["gpt-4o-mini"])
    assert await dead.probe() == HALF_OPEN  # listed again: one real trial call decides


async def test_anthropic_model_gone_stays_dead_while_v1_models_does_not_list_it(
        anthropic_up: tuple[AnthropicUpstream, RunningServer], clients: HttpClients) -> None:
    fake, server = anthropic_up
    d = deployment("anthropic", model="claude-retired", api_base=server.url, api_key=ANTHROPIC_KEY)
    dead = Dead(AnthropicProvider(d, clients), d)
    await dead.kill("upstream_model_not_found")
    assert await dead.probe() == OPEN
    fake.models.add("claude-retired")
    assert await dead.probe() == HALF_OPEN


async def test_anthropic_model_back_is_seen_past_the_listings_first_page(
        anthropic_up: tuple[AnthropicUpstream, RunningServer], clients: HttpClients) -> None:
    """GET /v1/models answers 20 models unless asked for more (up to 1000): a model past them is still seen."""
    fake, server = anthropic_up
    d = deployment("anthropic", model="claude-retired", api_base=server.url, api_key=ANTHROPIC_KEY)
    dead = Dead(AnthropicProvider(d, clients), d)
    await dead.kill("upstream_model_not_found")
    fake.models.update(f"claude-a-{i:02}" for i in range(25))  # sorted before claude-retired
    fake.models.add("claude-retired")
    assert await dead.probe() == HALF_OPEN


async def test_azure_deployment_gone_is_not_revived_by_the_resources_model_list(
        azure_up: FakeAzure, clients: HttpClients) -> None:
    """Azure's GET /openai/models lists the base models the resource may deploy (gpt-4o-mini among them), not
    its deployments: it cannot show that the deleted deployment is back, so the cooldown runs to its end."""
    d = deployment("azure", model="gpt-4o-mini", deployment="deleted", api_base=azure_up.url, api_key="az-key")
    dead = Dead(AzureProvider(d, clients), d)
    await dead.kill("upstream_model_not_found")
    assert await dead.probe() == OPEN
    assert azure_up.traffic.last.path == "/openai/models"  # it was asked, and answered 200
    dead.clock.advance(CFG.cooldown_s)
    assert dead.phase() == HALF_OPEN


# -- auth: alive again only when the probe's own listing needed the key and was answered 200 ----------------

@pytest.mark.parametrize("provider", ["openai", "azure"])
async def test_a_refused_key_is_revived_once_the_same_key_lists_models(
        provider: str, openai_up: FakeOpenAI, azure_up: FakeAzure, clients: HttpClients) -> None:
    if provider == "openai":
        up: FakeOpenAI = openai_up
        d = deployment("openai", model="gpt-4o-mini", api_base=openai_up.base_url, api_key="sk-rotated")
        dead = Dead(OpenAIProvider(d, clients), d)
    else:
        up = azure_up
        d = deployment("azure", model="gpt-4o-mini", deployment="chat", api_base=azure_up.url, api_key="az-old")
        dead = Dead(AzureProvider(d, clients), d)
    await dead.kill("auth")
    assert await dead.probe() == OPEN  # the listing refused the key too (and counted as a failure)
    assert dead.s.last_error == "probe_failed"
    up.api_key = d.api_key  # the upstream takes the key again
    assert await dead.probe() == HALF_OPEN


async def test_a_public_listing_does_not_revive_a_refused_key(compat_up: FakeOpenAI, clients: HttpClients) -> None:
    """An OpenAI-compatible host may list its models to anyone (OpenRouter does): its 200 says nothing of the key."""
    d = deployment("openai_compatible", model="gpt-4o-mini", api_base=compat_up.base_url, api_key="sk-revoked")
    dead = Dead(OpenAICompatibleProvider(d, clients), d)
    compat_up.faults.always(replace(oai.bad_auth(), only="/chat/completions"))
    await dead.kill("auth")
    assert await dead.probe() == OPEN
    assert compat_up.traffic.last.path == "/v1/models"


async def test_an_anthropic_key_refused_for_messages_and_listing_stays_dead(
        anthropic_up: tuple[AnthropicUpstream, RunningServer], clients: HttpClients) -> None:
    _, server = anthropic_up
    d = deployment("anthropic", model="claude-test-1", api_base=server.url, api_key="sk-ant-revoked")
    dead = Dead(AnthropicProvider(d, clients), d)
    await dead.kill("auth")
    assert await dead.probe() == OPEN


# -- quota: no listing shows it ---------------------------------------------------------------------------

@pytest.mark.parametrize("fault", [oai.insufficient_quota(), oai.payment_required()])
async def test_out_of_quota_keeps_its_cooldown_to_the_end_though_models_answers(
        openai_up: FakeOpenAI, clients: HttpClients, fault: Fault) -> None:
    dead = openai_dead(openai_up, clients)
    openai_up.faults.always(replace(fault, only="/chat/completions"))
    await dead.kill("quota_exceeded")
    assert await dead.probe() == OPEN  # /v1/models answers an account out of quota: it proves nothing
    assert openai_up.traffic.last.path == "/v1/models"
    dead.clock.advance(CFG.cooldown_s - 0.1)
    assert await dead.probe() == OPEN
    dead.clock.advance(0.1)
    assert dead.phase() == HALF_OPEN  # the cooldown's own end: a trial call decides


async def test_anthropic_out_of_credit_keeps_its_cooldown(
        anthropic_up: tuple[AnthropicUpstream, RunningServer], clients: HttpClients) -> None:
    fake, server = anthropic_up
    fake.faults.always(replace(anthropic_error(
        400, "invalid_request_error", "Your credit balance is too low to access the Anthropic API."
        " Please go to Plans & Billing to upgrade or purchase credits."), only="/v1/messages"))
    d = deployment("anthropic", model="claude-test-1", api_base=server.url, api_key=ANTHROPIC_KEY)
    dead = Dead(AnthropicProvider(d, clients), d)
    await dead.kill("quota_exceeded")
    assert await dead.probe() == OPEN


# -- a listing that fails, or answers something other than 200, revives nothing ------------------------------

@pytest.mark.parametrize("fault", [oai.server_error(500), oai.server_error(503), Fault.stall_forever(),
                                   oai.error(404, "Invalid URL (GET /v1/models)")])
async def test_a_probe_that_fails_or_times_out_revives_nothing(
        openai_up: FakeOpenAI, clients: HttpClients, fault: Fault) -> None:
    dead = openai_dead(openai_up, clients, model="gpt-retired")
    await dead.kill("upstream_model_not_found")
    openai_up.faults.always(replace(fault, only="/v1/models"))
    dead.prober.cfg = CFG.model_copy(update={"probe_timeout_s": 0.2})
    assert await dead.probe() == OPEN


async def test_a_trial_that_succeeds_forgets_why_the_deployment_died(
        openai_up: FakeOpenAI, clients: HttpClients) -> None:
    """Once closed again, a later opening for timeouts is revived by a good listing as before."""
    dead = openai_dead(openai_up, clients)
    openai_up.faults.push(replace(oai.insufficient_quota(), only="/chat/completions"))
    await dead.kill("quota_exceeded")
    dead.clock.advance(CFG.cooldown_s)
    assert await dead.book.admit_trial(dead.s)
    dead.book.record(dead.s, outcome_of(errors.NotFound("unrelated 404 about the request")), trial=True)
    assert dead.s.breaker.phase(dead.clock.monotonic()) == "closed"
    dead.book.record(dead.s, outcome_of(errors.UpstreamTimeout("slow")), trial=False)
    assert await dead.probe() == HALF_OPEN
