"""Fixtures for the OpenAI-family adapter tests: fake upstreams once per session, reset per test.

``family`` stamps one scenario suite onto every OpenAI-family provider (openai, azure,
openai_compatible): the same test runs against each, through its own fake upstream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from aigw.providers.http import HttpClients
from tests.fakes.azure_upstream import FakeAzure
from tests.fakes.openai_upstream import FakeOpenAI
from tests.providers.openai_family import AZURE_KEY, COMPAT_KEY, OPENAI_KEY, Family


def _serve(fake: FakeOpenAI) -> Iterator[FakeOpenAI]:
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()


@pytest.fixture(scope="session")
def openai_server() -> Iterator[FakeOpenAI]:
    yield from _serve(FakeOpenAI(OPENAI_KEY))


@pytest.fixture(scope="session")
def azure_server() -> Iterator[FakeOpenAI]:
    yield from _serve(FakeAzure(AZURE_KEY))


@pytest.fixture(scope="session")
def compat_server() -> Iterator[FakeOpenAI]:
    yield from _serve(FakeOpenAI(COMPAT_KEY))


@pytest.fixture
def fake_openai(openai_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    openai_server.reset()
    yield openai_server
    openai_server.reset()


@pytest.fixture
def fake_azure(azure_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    azure_server.reset()
    yield azure_server
    azure_server.reset()


@pytest.fixture
def fake_compat(compat_server: FakeOpenAI) -> Iterator[FakeOpenAI]:
    compat_server.reset()
    yield compat_server
    compat_server.reset()


@pytest.fixture
async def clients() -> AsyncIterator[HttpClients]:
    c = HttpClients()
    yield c
    await c.aclose()


@pytest.fixture(params=["openai", "azure", "openai_compatible"])
def family(
    request: pytest.FixtureRequest,
    fake_openai: FakeOpenAI,
    fake_azure: FakeOpenAI,
    fake_compat: FakeOpenAI,
    clients: HttpClients,
) -> Family:
    fake = {"openai": fake_openai, "azure": fake_azure, "openai_compatible": fake_compat}[request.param]
    return Family(request.param, fake, clients)
