"""The optional active probe: free model-list calls feed the breaker, never a completion."""

from __future__ import annotations

import asyncio

from aigw import errors
from aigw.config.models import CircuitBreakerConfig
from aigw.routing.book import HealthBook
from aigw.routing.breaker import CLOSED, HALF_OPEN, OPEN
from aigw.routing.probe import Prober
from aigw.supervise import Supervisor
from tests.unit.routing.fakes import Clock, Scripted, Step, deployment


def setup(**cfg: object) -> tuple[Prober, HealthBook, Scripted, Clock]:
    clock = Clock()
    config = CircuitBreakerConfig.model_validate({"failures": 2, "cooldown_s": 30, "probe_interval_s": 1, **cfg})
    book = HealthBook([deployment("m", 0)], config, clock, Supervisor())
    provider = Scripted("m-0")
    return Prober(book, [(book.state("m#0"), provider)], config), book, provider, clock


async def test_failed_probes_open_the_breaker() -> None:
    prober, book, provider, clock = setup()
    provider.always = Step(error=errors.Unavailable("down"))
    await prober.probe_once()
    assert book.state("m#0").breaker.phase(clock.monotonic()) == CLOSED
    await prober.probe_once()
    assert book.state("m#0").breaker.phase(clock.monotonic()) == OPEN
    assert book.state("m#0").last_error == "probe_failed"


async def test_a_good_probe_ends_an_open_cooldown_early_but_does_not_close() -> None:
    prober, book, _, clock = setup()
    s = book.state("m#0")
    s.breaker.trip(clock.monotonic())
    await prober.probe_once()
    assert s.breaker.phase(clock.monotonic()) == HALF_OPEN  # a real trial call decides


async def test_a_probe_that_hangs_is_cut_by_its_timeout() -> None:
    prober, book, provider, clock = setup(probe_timeout_s=0.05, failures=1)
    provider.always = Step(stall=True)
    await prober.probe_once()
    assert book.state("m#0").breaker.phase(clock.monotonic()) == OPEN


def test_providers_without_a_model_list_are_not_probed() -> None:
    class NoList:
        kind, upstream_model = "x", "x"

    clock = Clock()
    cfg = CircuitBreakerConfig(probe_interval_s=1)
    book = HealthBook([deployment("m", 0)], cfg, clock, Supervisor())
    assert Prober(book, [(book.state("m#0"), NoList())], cfg).targets == []  # type: ignore[list-item]


async def test_probes_are_bounded_one_in_flight_per_deployment() -> None:
    """A listing slower than the interval does not pile probes up: a round ends (by its timeout at worst)
    before the next begins."""

    class Slow:
        kind, upstream_model = "slow", "m-0"

        def __init__(self) -> None:
            self.calls = self.inflight = self.most = 0

        async def list_models(self, call: object) -> dict[str, object]:
            self.calls += 1
            self.inflight += 1
            self.most = max(self.most, self.inflight)
            try:
                await asyncio.sleep(3600)
            finally:
                self.inflight -= 1
            return {}

    clock = Clock()
    cfg = CircuitBreakerConfig(probe_interval_s=0.01, probe_timeout_s=0.05)
    book = HealthBook([deployment("m", 0)], cfg, clock, Supervisor())
    slow = Slow()
    prober = Prober(book, [(book.state("m#0"), slow)], cfg)  # type: ignore[list-item]
    task = asyncio.ensure_future(prober.run())
    await asyncio.sleep(0.3)
    prober.stop()
    await asyncio.wait_for(task, 1)
    assert slow.calls >= 3 and slow.most == 1 and slow.inflight == 0
