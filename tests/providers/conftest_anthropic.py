"""Fixtures for the Anthropic adapter tests (imported by them; tests/providers/conftest.py is OpenAI's).

One fake Anthropic upstream per test module, reset before each test; a fresh
provider (and pooled HttpClients) per test, on that test's event loop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from aigw.config.models import Deployment
from aigw.providers.anthropic.client import AnthropicProvider, build
from aigw.providers.http import HttpClients
from tests.fakes.anthropic_upstream import API_KEY, AnthropicUpstream
from tests.support.servers import RunningServer, start_aiohttp_app


@pytest.fixture(scope="module")
def anthropic_server() -> Iterator[tuple[AnthropicUpstream, RunningServer]]:
    fake = AnthropicUpstream()
    server = start_aiohttp_app(fake.app(), name="fake-anthropic")
    try:
        yield fake, server
    finally:
        server.stop()


@pytest.fixture
def anthropic_fake(anthropic_server: tuple[AnthropicUpstream, RunningServer]) -> Iterator[AnthropicUpstream]:
    fake, _ = anthropic_server
    fake.reset()
    yield fake
    fake.reset()


def anthropic_deployment(url: str, **overrides: object) -> Deployment:
    fields: dict[str, object] = {
        "name": "claude",
        "provider": "anthropic",
        "model": "claude-test-1",
        "api_base": url,
        "api_key": API_KEY,
    }
    fields.update(overrides)
    return Deployment(**fields)  # type: ignore[arg-type]


@pytest.fixture
async def anthropic_provider(
    anthropic_server: tuple[AnthropicUpstream, RunningServer], anthropic_fake: AnthropicUpstream
) -> AsyncIterator[AnthropicProvider]:
    clients = HttpClients()
    try:
        yield build(anthropic_deployment(anthropic_server[1].url), clients)
    finally:
        await clients.aclose()
