"""Every Prometheus metric of the gateway, defined once, with small methods to move them.

One ``Metrics`` object per gateway (built in ``app.py``, handed to stages through
``deps.services["metrics"]``), each with its own registry, so tests can run several
gateways in one process. The per-request path is ``record(sample)``: labelled
children are resolved once per label tuple and cached, so a finished request
costs a dozen counter/histogram calls and no label lookups.

Label values that come from clients (model names) are checked against the
configured models first: an unknown model is counted as ``other``, so a client
cannot grow the number of series.

Multi-worker: when ``multiprocess_dir`` is set (``aigw serve --workers N``
exports ``PROMETHEUS_MULTIPROC_DIR`` before the workers start), prometheus_client
writes values to files there and ``render`` merges every worker's files.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from prometheus_client import CONTENT_TYPE_LATEST as CONTENT_TYPE
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter
from prometheus_client import Gauge as PromGauge
from prometheus_client import Histogram as PromHistogram

from aigw.observability.metrics_native import FastCounter, FastGauge, FastHistogram

# 1 ms .. 60 s: whole requests, upstream calls, time to first token.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
# 50 µs .. 1 s: what the gateway itself adds.
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BREAKER_STATES = {"closed": 0, "half_open": 1, "open": 2}
TOKEN_KINDS = ("input", "output", "cached_input", "cache_write", "reasoning")
OTHER = "other"
NONE = "none"

# Where a caller was refused (401, 403), for aigw_auth_failures_total: the gateway's own names, never a path.
RouteGroup = Literal["inference", "admin", "models", "count_tokens", "metrics"]
AUTH_STATUSES = (401, 403)
# ...and why, by status (the Anthropic API answers `throttled` with 529, its overloaded status: counted as sent)
AUTH_REASONS = {401: ("missing", "malformed", "unknown", "refused"), 403: ("not_allowed",), 503: ("throttled",)}
_REASONS = frozenset(r for reasons in AUTH_REASONS.values() for r in reasons)

__all__ = ["AUTH_REASONS", "AUTH_STATUSES", "CONTENT_TYPE", "Metrics", "RouteGroup", "Sample"]


@dataclass(slots=True)
class Sample:
    """One finished request, as the observe stage saw it."""

    api: str
    model: str  # the public model asked for
    provider: str  # "none" when nothing upstream answered; "cache" / "rules" when a stage did
    deployment: str
    status: int
    duration_s: float
    tenant: str = ""
    upstream_s: float = 0.0
    first_token_s: float | None = None
    tokens: dict[str, int] = field(default_factory=dict)  # TOKEN_KINDS -> count
    cost_usd: float = 0.0
    retries: int = 0
    fallback_model: str = ""  # the public model that served, when it is not the one asked for
    rejected: str = ""  # error kind when the gateway itself refused (limits, budget, guardrails)


class _Children:
    """The labelled children of one (api, model, provider, deployment, status, tenant) tuple."""

    __slots__ = ("cost", "duration", "key", "overhead", "requests", "retries", "tokens", "ttft")

    def __init__(self, m: Metrics, key: tuple[str, ...]) -> None:
        api, model, provider, deployment, status, tenant = key
        t = (tenant,) if m.tenant_label else ()
        outcome = "ok" if status.startswith("2") else "error"
        self.requests = m.requests_total.labels(api, model, provider, deployment, status, *t)
        self.duration = m.request_duration.labels(api, model, provider, deployment, outcome, *t)
        self.overhead = m.overhead.labels(api, model, provider, deployment)
        self.ttft = m.ttft.labels(model, provider, deployment, *t)
        self.key = (model, provider, deployment, *t)
        self.tokens: dict[str, Any] = {}  # filled on first use: no all-zero series for kinds never seen
        self.cost = m.cost_total.labels(model, provider, deployment, *t)
        self.retries = m.retries_total.labels(model, deployment)


class Metrics:
    def __init__(
        self,
        models: Iterable[str] = (),
        tenant_label: bool = False,
        multiprocess_dir: str = "",
        version: str = "",
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.tenant_label = tenant_label
        self.multiprocess_dir = multiprocess_dir
        self._models = frozenset(models)
        self._children: dict[tuple[str, ...], _Children] = {}
        self._inflight: dict[str, Any] = {}
        self._guardrails: dict[tuple[str, str, str], Any] = {}
        self._attempts: dict[tuple[str, str], tuple[Any, Any]] = {}  # (deployment, outcome) -> count, duration
        self._refreshers: list[Callable[[], None]] = []
        self._breakers: dict[str, int] = {}  # deployment -> the breaker state last set
        self._unclosed = 0  # how many of those are not closed
        self._define(version)

    def _define(self, version: str) -> None:
        r, t = self.registry, ("tenant",) if self.tenant_label else ()
        # The per-request families: lock-free in one process, prometheus_client's shared files with workers.
        fast = not self.multiprocess_dir
        Counter: Any = FastCounter if fast else PromCounter
        Gauge: Any = FastGauge if fast else PromGauge
        Histogram: Any = FastHistogram if fast else PromHistogram
        self.requests_total = Counter("aigw_requests", "Finished requests by inbound API, model, provider, "
                                      "deployment and HTTP status.",
                                      ["api", "model", "provider", "deployment", "status", *t], registry=r)
        self.request_duration = Histogram("aigw_request_duration_seconds", "Whole request, first byte in to last "
                                          "byte out (streams included).",
                                          ["api", "model", "provider", "deployment", "outcome", *t],
                                          buckets=LATENCY_BUCKETS, registry=r)
        self.in_flight = Gauge("aigw_requests_in_flight", "Requests inside the pipeline now.", ["model"],
                               registry=r, **self._mp("livesum"))
        self.ttft = Histogram("aigw_time_to_first_token_seconds", "Streams: request start to the first upstream "
                              "chunk.", ["model", "provider", "deployment", *t], buckets=LATENCY_BUCKETS, registry=r)
        self.upstream_attempts = Counter("aigw_upstream_attempts", "Upstream calls, each under the deployment "
                                         "that made it, by outcome (ok, the error kind, cancelled).",
                                         ["model", "provider", "deployment", "outcome"], registry=r)
        self.upstream_duration = Histogram("aigw_upstream_duration_seconds", "Upstream calls' duration, each under "
                                           "the deployment that made it; outcome ok, error or cancelled.",
                                           ["model", "provider", "deployment", "outcome"],
                                           buckets=LATENCY_BUCKETS, registry=r)
        self.overhead = Histogram("aigw_gateway_overhead_seconds", "Request duration minus upstream time: what the "
                                  "gateway adds.", ["api", "model", "provider", "deployment"],
                                  buckets=OVERHEAD_BUCKETS, registry=r)
        self.tokens_total = Counter("aigw_tokens", "Tokens by kind (cached_input and cache_write are part of "
                                    "input, reasoning part of output).",
                                    ["model", "provider", "deployment", "kind", *t], registry=r)
        self.cost_total = Counter("aigw_cost_usd", "Spend in US dollars at the configured prices.",
                                  ["model", "provider", "deployment", *t], registry=r)
        Counter, Gauge = PromCounter, PromGauge
        self.cache_total = Counter("aigw_cache_lookups", "Response cache lookups by result (hit, miss, "
                                   "semantic_hit, error).", ["model", "result"], registry=r)
        self.rejections_total = Counter("aigw_rejections", "Requests the gateway refused itself, by reason "
                                        "(rate_limited, budget_exceeded, guardrail_blocked, ...).",
                                        ["model", "reason"], registry=r)
        self.guardrails_total = Counter("aigw_guardrail_verdicts", "Guardrail verdicts by stage (validate, pii, "
                                        "injection, rules, output) and action (pass, flag, redact, block, "
                                        "respond, route).", ["model", "stage", "action"], registry=r)
        self.retries_total = Counter("aigw_retries", "Upstream retries.", ["model", "deployment"], registry=r)
        self.fallbacks_total = Counter("aigw_fallbacks", "Requests served by a fallback model.",
                                       ["model", "fallback_model"], registry=r)
        self.breaker_state = Gauge("aigw_circuit_breaker_state", "Circuit breaker per deployment: 0 closed, "
                                   "1 half-open, 2 open.", ["deployment"], multiprocess_mode="livemax", registry=r)
        self.store_errors_total = Counter("aigw_store_errors", "Failed calls to a store (database, Redis, "
                                          "request log).", ["store", "operation"], registry=r)
        self.store_full_total = Counter(
            "aigw_store_full", "Store calls Redis refused for want of memory (maxmemory reached under "
            "maxmemory-policy noeviction), or skipped for it, by store: limits, budget, cache_redis. Also in "
            "aigw_store_errors_total.", ["store"], registry=r)
        self.owed_settles_total = Counter(
            "aigw_gate_owed_settles", "Settles (the limits and budget step after a call) skipped in a Redis outage "
            "and kept to send when it answers, by outcome: owed (kept), replayed (sent and run), dropped (the "
            "oldest, from a full queue), failed (sent, no answer: may have run, not sent again).", ["outcome"],
            registry=r)
        self.auth_failures_total = Counter(
            "aigw_auth_failures", "Callers refused for their key, by route group (inference, admin, models, "
            "count_tokens, metrics), status and reason: 401 no key (missing), one not shaped as a key (malformed), "
            "unknown, or known and unusable (refused); 403 a key not allowed there (not_allowed); 503 or 529 "
            "unknown keys past their read budget (throttled).", ["route_group", "status", "reason"], registry=r)
        self._auth_failures = {(g, s, why): self.auth_failures_total.labels(g, str(s), why)  # at 0 from the start:
                               for g in get_args(RouteGroup) for s, reasons in AUTH_REASONS.items()  # alerts see
                               for why in reasons  # the first failure
                               if not (g == "inference" and s == 403)}  # a known caller: aigw_rejections_total
        self.events_total = Counter("aigw_events", "Notable events by name (alerts, breaker trips, drops).",
                                    ["event"], registry=r)
        info = Gauge("aigw_build_info", "Gateway version (value is always 1).", ["version"],
                     multiprocess_mode="liveall", registry=r)
        info.labels(version or "unknown").set(1)

    def _mp(self, mode: str) -> dict[str, str]:
        return {"multiprocess_mode": mode} if self.multiprocess_dir else {}

    # -- label hygiene -------------------------------------------------------------
    def model_label(self, model: str) -> str:
        """A model name safe to use as a label: configured, else ``other`` (``none``: no model was named)."""
        return model if model in self._models else (OTHER if model else NONE)

    # -- the per-request path --------------------------------------------------------
    def started(self, model: str) -> None:
        self._gauge(model).inc()

    def finished(self, model: str) -> None:
        self._gauge(model).dec()

    def _gauge(self, model: str) -> Any:
        label = self.model_label(model)  # kept by label, not by the name a client sent: bounded
        child = self._inflight.get(label)
        if child is None:
            child = self._inflight[label] = self.in_flight.labels(label)
        return child

    def record(self, s: Sample) -> None:
        """Count one finished request (one call per request, from the observe stage)."""
        # by label, not by the model name a client sent (each new name would keep an entry for good)
        key = (s.api, self.model_label(s.model), s.provider, s.deployment, str(s.status),
               s.tenant if self.tenant_label else "")
        ch = self._children.get(key)
        if ch is None:
            ch = self._children[key] = _Children(self, key)
        ch.requests.inc()
        ch.duration.observe(s.duration_s)
        if s.upstream_s > 0:  # the upstream calls themselves are counted as each ends (``attempt``)
            ch.overhead.observe(max(0.0, s.duration_s - s.upstream_s))
        if s.first_token_s is not None:
            ch.ttft.observe(s.first_token_s)
        for kind, n in s.tokens.items():
            if n > 0:
                if (counter := ch.tokens.get(kind)) is None:
                    m, p, d, *t = ch.key
                    counter = ch.tokens[kind] = self.tokens_total.labels(m, p, d, kind, *t)
                counter.inc(n)
        if s.cost_usd > 0:
            ch.cost.inc(s.cost_usd)
        if s.retries:
            ch.retries.inc(s.retries)
        if s.fallback_model:
            self.fallbacks_total.labels(self.model_label(s.model), self.model_label(s.fallback_model)).inc()
        if s.rejected:
            self.rejections_total.labels(self.model_label(s.model), s.rejected).inc()

    def refused(self, api: str, status: int, duration_s: float, reason: str = "") -> None:
        """A request refused before any caller or model was known (no key, a key refused, no such route), so
        that an attack or a misconfigured client shows: every label is the gateway's own, none the client's.
        A refused caller (``reason`` set: see ``auth_failed``) counts in aigw_auth_failures_total too."""
        self.record(Sample(api=api, model="", provider=NONE, deployment=NONE, status=status, duration_s=duration_s,
                           rejected="auth" if status == 401 else ""))
        if reason:
            self.auth_failed("inference", status, reason)

    def auth_failed(self, group: RouteGroup, status: int, reason: str) -> None:
        """A caller refused (``reason``: one of ``AUTH_REASONS``) with ``status``, on a route outside the
        pipeline (admin API, model list, count_tokens, /metrics) or by ``refused``, so that someone guessing
        the master key or an admin key, or flooding the gateway with made-up keys, shows."""
        child = self._auth_failures.get((group, status, reason))
        if child is None:
            if reason not in _REASONS:  # only the gateway's own label values
                return
            child = self._auth_failures[group, status, reason] = self.auth_failures_total.labels(
                group, str(status), reason)
        child.inc()

    def attempt(self, model: str, provider: str, deployment: str, outcome: str, seconds: float) -> None:
        """The router: one upstream call ended (``routing.attempts.AttemptHook``). A retried request's failed
        call counts against the deployment that failed, the answer against the one that answered. Labels come
        from config (deployments) and the error tree (outcomes): bounded."""
        children = self._attempts.get((deployment, outcome))
        if children is None:
            result = outcome if outcome in ("ok", "cancelled") else "error"
            children = self._attempts[(deployment, outcome)] = (
                self.upstream_attempts.labels(model, provider, deployment, outcome),
                self.upstream_duration.labels(model, provider, deployment, result))
        children[0].inc()
        children[1].observe(seconds)
        if self.multiprocess_dir and (outcome != "ok" or self._unclosed):
            # Workers: a scrape refreshes the breakers of the worker it reaches only (a scraper keeps its
            # connection: always the same one), so each worker copies its own as its calls move them: after
            # a failure, and while one is not closed (a success may close it).
            for refresh in self._refreshers:
                refresh()

    # -- events other stages and stores report ----------------------------------------
    def cache_lookup(self, model: str, result: str) -> None:
        """The cache stage: result is hit, miss, semantic_hit or error."""
        self.cache_total.labels(self.model_label(model), result).inc()

    def guardrail(self, model: str, stage: str, action: str) -> None:
        """A guardrail stage's verdict on one request (kinds and values never become labels)."""
        key = (self.model_label(model), stage, action)
        child = self._guardrails.get(key)
        if child is None:
            child = self._guardrails[key] = self.guardrails_total.labels(*key)
        child.inc()

    def set_breaker(self, deployment: str, state: str) -> None:
        """The router: a deployment's breaker changed state (closed, half_open, open)."""
        value = BREAKER_STATES.get(state, 0)
        before = self._breakers.get(deployment)
        if value == before:
            return
        self._breakers[deployment] = value
        self._unclosed += (value != 0) - (before is not None and before != 0)
        self.breaker_state.labels(deployment).set(value)

    def store_error(self, store: str, operation: str) -> None:
        self.store_errors_total.labels(store, operation).inc()

    def store_full(self, store: str) -> None:
        self.store_full_total.labels(store).inc()

    def owed_settles(self, outcome: str, n: int = 1) -> None:
        self.owed_settles_total.labels(outcome).inc(n)

    def event(self, name: str) -> None:
        self.events_total.labels(name).inc()

    # -- exposition -------------------------------------------------------------------
    def on_scrape(self, refresh: Callable[[], None]) -> None:
        """Run ``refresh`` before each scrape (to copy state such as breakers into gauges)."""
        self._refreshers.append(refresh)

    def render(self) -> bytes:
        for refresh in self._refreshers:
            refresh()
        if not self.multiprocess_dir:
            return generate_latest(self.registry)
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged, path=self.multiprocess_dir)  # type: ignore[no-untyped-call]
        return generate_latest(merged)
