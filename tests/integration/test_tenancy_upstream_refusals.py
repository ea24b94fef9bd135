"""A request an upstream refused as bad input did reach it: it counts against the key's rpm."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from aigw.cli.admin_client import AdminClient
from tests.fakes import openai_faults as oai_faults
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.tenancy_support import MASTER, openai_gateway_config, setup_key
from tests.support.gateway import RunningGateway, running_gateway

MSGS = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def oai() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI("sk-oai").start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory, oai: FakeOpenAI) -> Iterator[RunningGateway]:
    with running_gateway(openai_gateway_config(tmp_path_factory.mktemp("refusals") / "gw.db", oai.base_url)) as running:
        yield running


@pytest.mark.parametrize("fault", [oai_faults.bad_request("temperature"), oai_faults.file_not_found()])
def test_an_upstreams_400_or_404_takes_a_request_from_rpm(gw: RunningGateway, oai: FakeOpenAI,
                                                          fault: object) -> None:
    key = setup_key(AdminClient(gw.url, MASTER), "t-upstream-400", rpm=2)["key"]
    client = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0, timeout=10)
    oai.faults.always(fault)  # type: ignore[arg-type]
    try:
        before = oai.traffic.requests
        for _ in range(2):
            with pytest.raises((openai.BadRequestError, openai.NotFoundError)):
                client.chat.completions.create(model="oai", messages=MSGS)  # type: ignore[arg-type]
        assert oai.traffic.requests - before == 2  # both reached the upstream
        with pytest.raises(openai.RateLimitError):  # so the key's rpm of 2 is spent
            client.chat.completions.create(model="oai", messages=MSGS)  # type: ignore[arg-type]
        assert oai.traffic.requests - before == 2
    finally:
        oai.faults.clear()
