"""Shared fixtures: a gateway on the embedded defaults, and service availability checks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.gateway import RunningGateway, running_gateway
from tests.support.services import own_redis, postgres_schema, redis_isolated  # noqa: F401  (fixtures)


@pytest.fixture(scope="session")
def gateway() -> Iterator[RunningGateway]:
    """A gateway with no config: the mock models, no master key."""
    with running_gateway({}) as gw:
        yield gw
