"""Shared fixtures: a gateway on the embedded defaults, and service availability checks."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from tests.support.gateway import RunningGateway, running_gateway
from tests.support.services import own_redis, postgres_schema, redis_isolated  # noqa: F401  (fixtures)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """Collect the last test's garbage, then freeze what survived, before each test.

    Why: the suite's survivors pile up (near 400,000 objects by its end), and a full collection that falls
    inside a test stalled it for up to 0.3 s, longer than the short deadlines the timeout tests use: such a
    test failed now and then, on no fault of the code. Frozen objects are never scanned again, so each
    collection here sees one test's objects (a millisecond or so) and none lands inside a test's timing."""
    gc.collect()
    gc.freeze()


@pytest.fixture(scope="session")
def gateway() -> Iterator[RunningGateway]:
    """A gateway with no config: the mock models, no master key."""
    with running_gateway({}) as gw:
        yield gw
