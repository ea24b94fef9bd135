"""Optional active health probe: a free call (the model list), never a paid completion.

Off unless ``circuit_breaker.probe_interval_s`` is set. Every interval each
deployment whose adapter can list models is asked once (one probe in flight per
deployment: a round ends when its slowest probe does, within ``probe_timeout_s``);
a failure counts like a failed call. A success ends an open breaker's cooldown
early (it goes half-open, so a real trial call decides whether it closes) only
when it shows gone what may have opened it. A listing shows little of a dead
deployment (``retry.DEPLOYMENT_DEAD``), so per kind:

    upstream_model_not_found   its upstream model is in the listing (adapters whose listing names the models
                               chat takes: not Azure's, which lists base models, not deployments)
    auth                       the listing answered 200 to the deployment's own key (adapters whose listing
                               needs the key: not OpenAI-compatible hosts, some list to anyone)
    quota_exceeded             never: an account out of quota still lists its models; the cooldown runs out

Timeouts, 5xx and other failures show nothing dead: any success ends their cooldown.
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
from aigw.types import JSON

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
                listing = await p.list_models(call)
        except TimeoutError:
            self.book.probe_result(s, ok=False)
        except errors.GatewayError as err:  # an answer that is no failure (a 404, a 429) shows nothing dead gone
            self.book.probe_result(s, ok=not outcome_of(err).failure, kind=err.kind)
        except Exception as exc:  # a probe must never take the loop down
            log.debug("probe of %s failed: %r", s.id, exc)
            self.book.probe_result(s, ok=False)
        else:
            self.book.probe_result(s, ok=True, shows=shown(p, listing))

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


def shown(p: Provider, listing: JSON) -> frozenset[str]:
    """The dead kinds a listing answered 200 shows gone, by what the adapter says of its listing
    (``providers.base.SupportsModelList``). Out of quota is never among them."""
    kinds = []
    if getattr(p, "listing_needs_key", False):
        kinds.append("auth")
    if getattr(p, "listing_names_models", False) and p.upstream_model in listed(listing):
        kinds.append("upstream_model_not_found")
    return frozenset(kinds)


def listed(listing: JSON) -> set[str]:
    """The model ids of a listing: OpenAI's ``{"object": "list", "data": [{"id"}]}`` and Anthropic's
    ``{"data": [{"type": "model", "id"}], "has_more"}`` alike."""
    data = listing.get("data")
    if not isinstance(data, list):
        return set()
    return {m["id"] for m in data if isinstance(m, dict) and isinstance(m.get("id"), str)}
