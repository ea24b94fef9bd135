"""Optional active health probe: a free call (the model list), never a paid completion.

Off unless ``circuit_breaker.probe_interval_s`` is set. Every interval each
deployment whose adapter can list models is asked once; a failure counts like a
failed call, and a success ends an open breaker's cooldown early (it goes
half-open, so a real trial call decides whether it closes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from aigw import errors
from aigw.config.models import CircuitBreakerConfig
from aigw.providers.base import CallOptions, Provider, SupportsModelList, Timeouts
from aigw.routing.book import HealthBook
from aigw.routing.retry import outcome_of
from aigw.routing.state import DeploymentState

log = logging.getLogger("aigw.routing")


class Prober:
    def __init__(
        self, book: HealthBook, targets: Sequence[tuple[DeploymentState, Provider]], cfg: CircuitBreakerConfig
    ) -> None:
        self.book = book
        self.cfg = cfg
        self.targets = [(s, p) for s, p in targets if isinstance(p, SupportsModelList)]
        self._stop = asyncio.Event()

    async def probe_once(self) -> None:
        t = self.cfg.probe_timeout_s
        call = CallOptions(timeouts=Timeouts(connect=t, first_token=t, total=t))
        await asyncio.gather(*(self._probe(s, p, call) for s, p in self.targets))

    async def _probe(self, s: DeploymentState, p: Provider, call: CallOptions) -> None:
        assert isinstance(p, SupportsModelList)
        try:
            async with asyncio.timeout(self.cfg.probe_timeout_s):
                await p.list_models(call)
        except TimeoutError:
            self.book.probe_result(s, ok=False)
        except errors.GatewayError as err:
            self.book.probe_result(s, ok=not outcome_of(err).failure)
        except Exception as exc:  # a probe must never take the loop down
            log.debug("probe of %s failed: %r", s.id, exc)
            self.book.probe_result(s, ok=False)
        else:
            self.book.probe_result(s, ok=True)

    async def run(self) -> None:
        interval = self.cfg.probe_interval_s
        if interval is None or not self.targets:
            return
        while not self._stop.is_set():
            await self.probe_once()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)

    def stop(self) -> None:
        self._stop.set()
