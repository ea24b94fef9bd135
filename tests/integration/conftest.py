"""A gateway in front of every provider's fake upstream (and the mock), for end-to-end tests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.fakes.anthropic_upstream import API_KEY as ANTHROPIC_KEY
from tests.fakes.anthropic_upstream import AnthropicUpstream
from tests.fakes.azure_upstream import FakeAzure
from tests.fakes.openai_upstream import FakeOpenAI
from tests.support.gateway import RunningGateway, running_gateway
from tests.support.servers import RunningServer, start_aiohttp_app


@dataclass
class Upstreams:
    openai: FakeOpenAI
    azure: FakeAzure
    compat: FakeOpenAI
    anthropic: AnthropicUpstream
    anthropic_server: RunningServer

    def reset(self) -> None:
        for fake in (self.openai, self.azure, self.compat, self.anthropic):
            fake.reset()

    def stop(self) -> None:
        self.openai.stop()
        self.azure.stop()
        self.compat.stop()
        self.anthropic_server.stop()


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Upstreams]:
    anthropic = AnthropicUpstream()
    ups = Upstreams(FakeOpenAI("sk-oai").start(), FakeAzure("az-key").start(), FakeOpenAI(None).start(),
                    anthropic, start_aiohttp_app(anthropic.app(), "fake-anthropic"))
    yield ups
    ups.stop()


def matrix_config(ups: Upstreams, **deployment_extra: object) -> dict[str, object]:
    """One public model per provider kind, each pointing at its fake upstream."""
    models = [
        {"name": "oai", "provider": "openai", "model": "gpt-4o-mini", "api_base": ups.openai.base_url,
         "api_key": "sk-oai"},
        {"name": "az", "provider": "azure", "model": "gpt-4o-mini", "deployment": "chat",
         "api_base": ups.azure.url, "api_key": "az-key", "api_version": "2024-10-21"},
        {"name": "compat", "provider": "openai_compatible", "model": "gpt-4o-mini",
         "api_base": ups.compat.base_url},
        {"name": "claude", "provider": "anthropic", "model": "claude-test-1", "api_base": ups.anthropic_server.url,
         "api_key": ANTHROPIC_KEY},
        {"name": "mock", "provider": "mock"},
    ]
    for m in models:
        m.update(deployment_extra)
    # One attempt per request and no breaker: these tests map single upstream failures to client
    # errors (retries, fallbacks and breakers are tested in test_routing_*.py).
    return {"models": models, "routing": {"*": {"num_retries": 0}}, "circuit_breaker": {"enabled": False}}


@pytest.fixture(scope="session")
def matrix_gateway(upstreams: Upstreams) -> Iterator[RunningGateway]:
    with running_gateway(matrix_config(upstreams)) as gw:
        yield gw


@pytest.fixture
def ups(upstreams: Upstreams) -> Iterator[Upstreams]:
    upstreams.reset()
    yield upstreams
    upstreams.reset()
