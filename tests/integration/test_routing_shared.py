"""Two gateways sharing real Redis agree on breaker state; with Redis gone, requests keep flowing."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
import requests

from tests.fakes import openai_faults as oai
from tests.integration.routing_support import (
    MASTER,
    MSGS,
    TcpProxy,
    TimedOpenAI,
    by_model,
    client,
    config,
    mock,
    upstream,
)
from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture
def fake() -> Iterator[TimedOpenAI]:
    f = TimedOpenAI().start()
    yield f
    f.stop()


def eventually(check: Callable[[], bool], within: float = 3.0) -> bool:
    end = time.monotonic() + within
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.02)
    return check()


def breaker(gw: RunningGateway) -> str:
    return str(by_model(gw, "m", "openai")["breaker"])


def test_two_gateways_open_and_close_the_same_breaker(fake: TimedOpenAI, redis_isolated: tuple[str, str]) -> None:
    url, prefix = redis_isolated
    cfg = config([upstream(fake, "m"), mock("m")], redis_url=url, redis_prefix=prefix,
                 circuit_breaker={"failures": 4, "cooldown_s": 1.0, "sync_interval_s": 0.05})
    fake.faults.always(oai.server_error(500))
    with running_gateway(cfg) as one, running_gateway(cfg) as two:
        c1, c2 = client(one), client(two)
        while fake.traffic.requests < 2:  # two failures through each gateway: 4 in the shared window
            c1.chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
        while fake.traffic.requests < 4:
            c2.chat.completions.create(model="m", messages=MSGS)  # type: ignore[arg-type]
        assert eventually(lambda: breaker(one) == breaker(two) == "open")
        assert fake.traffic.requests == 4  # neither gateway saw 4 failures on its own
        for c in (c1, c2) * 10:
            assert c.chat.completions.create(model="m", messages=MSGS).choices[0].message.content  # type: ignore[arg-type]
        assert fake.traffic.requests == 4  # both skip it
        fake.faults.clear()
        assert eventually(lambda: breaker(one) == breaker(two) == "half_open", within=3)
        raw = c2.chat.completions.with_raw_response.create(model="m", messages=MSGS)  # type: ignore[arg-type]
        assert raw.headers["x-aigw-provider"] == "openai"  # the trial, through gateway two
        assert eventually(lambda: breaker(one) == breaker(two) == "closed")  # gateway one closes too
        assert by_model(one, "m", "openai")["shared"] is True


def test_gateways_share_in_flight_counts(fake: TimedOpenAI, redis_isolated: tuple[str, str]) -> None:
    url, prefix = redis_isolated
    cfg = config([mock("m", latency_ms=800)], redis_url=url, redis_prefix=prefix,
                 circuit_breaker={"sync_interval_s": 0.05})
    with running_gateway(cfg) as one, running_gateway(cfg) as two:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(3) as pool:
            futures = [pool.submit(client(one).chat.completions.create, model="m", messages=MSGS) for _ in range(3)]
            assert eventually(lambda: by_model(two, "m", "mock")["inflight"] == 3, within=0.7)
            assert by_model(two, "m", "mock")["inflight_here"] == 0
            for f in futures:
                f.result()


@pytest.mark.parametrize("stream", [False, True])
def test_two_gateways_enforce_each_deployments_own_cap_exactly(redis_isolated: tuple[str, str], tmp_path: Path,
                                                               stream: bool) -> None:
    """A model with two deployments, rpm 3 each: 6 calls in the minute between both gateways, not 6 per gateway."""
    url, prefix = redis_isolated
    cfg = config([mock("m", rpm=3), mock("m", rpm=3)], redis_url=url, redis_prefix=prefix,
                 database_url=f"sqlite:///{tmp_path / 'gw.db'}")
    served: list[str] = []
    refused: list[openai.RateLimitError] = []
    with running_gateway(cfg) as one, running_gateway(cfg) as two:
        for i in range(10):
            c = client((one, two)[i % 2])
            try:
                raw = c.chat.completions.with_raw_response.create(model="m", messages=MSGS,  # type: ignore[arg-type]
                                                                  stream=stream)
            except openai.RateLimitError as exc:
                refused.append(exc)
                continue
            raw.parse()
            served.append(raw.headers["x-aigw-deployment"])
    assert sorted(Counter(served).values()) == [3, 3]
    assert len(refused) == 4
    for exc in refused:
        assert 1 <= int(exc.response.headers["retry-after"]) <= 60
        assert "rate limit" in exc.message


def test_when_redis_goes_away_requests_keep_flowing_on_local_state(
    fake: TimedOpenAI, redis_isolated: tuple[str, str], caplog: pytest.LogCaptureFixture
) -> None:
    _, prefix = redis_isolated
    proxy = TcpProxy(6379)
    cfg = config([upstream(fake, "m"), mock("m")], redis_url=f"redis://127.0.0.1:{proxy.port}/0",
                 redis_prefix=prefix, circuit_breaker={"failures": 2, "sync_interval_s": 0.05})
    try:
        with caplog.at_level("WARNING", logger="aigw.routing"), running_gateway(cfg) as gw:
            c = client(gw)
            assert c.chat.completions.create(model="m", messages=MSGS).choices[0].message.content  # type: ignore[arg-type]
            assert eventually(lambda: shared_state(gw)["last_sync_s_ago"] is not None)
            assert shared_state(gw)["up"] is True
            proxy.cut()
            fake.faults.always(oai.server_error(500))
            fake.traffic.reset()
            started = time.monotonic()
            for _ in range(20):
                assert c.chat.completions.create(model="m", messages=MSGS).choices[0].message.content  # type: ignore[arg-type]
            assert time.monotonic() - started < 5  # short Redis timeouts: no request waits on it for long
            assert fake.traffic.requests == 2  # the local breaker still isolates the sick deployment
            assert breaker(gw) == "open"
            assert eventually(lambda: shared_state(gw)["up"] is False)
            time.sleep(0.3)  # several failed syncs
        assert sum("Redis unavailable" in r.getMessage() for r in caplog.records) == 1
    finally:
        proxy.stop()


def shared_state(gw: RunningGateway) -> dict[str, object]:
    r = requests.get(gw.url + "/admin/deployments", headers={"Authorization": f"Bearer {MASTER}"}, timeout=5)
    return dict(r.json()["shared_state"])
