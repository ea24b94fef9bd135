"""Typed configuration. Unknown keys are rejected with their field path.

Sections owned by later features (routing, cache, guardrails, limits, ...) are
added here as their own small models; everything has a default so that an empty
file (or none) starts an embedded gateway with the mock provider.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aigw.config.cache import CacheConfig
from aigw.config.guardrails import GuardrailsConfig
from aigw.config.observability import ObservabilityConfig
from aigw.config.tenancy import TenancyConfig
from aigw.config.urls import bind_host, http_url, redis_scheme

ProviderKind = Literal["openai", "azure", "anthropic", "openai_compatible", "mock"]
Mode = Literal["chat", "embeddings", "completions"]
# OpenAI's models that its /v1/completions serves (the rest are chat models: 404 "This is a chat model ...")
_LEGACY_COMPLETION_MODEL = re.compile(r"instruct|davinci|babbage", re.IGNORECASE)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


ServiceTier = Literal["flex", "priority"]  # OpenAI's and Gemini's priced processing tiers ("fast" is priority)


class TokenRates(Strict):
    """USD per million tokens of each kind; unset kinds follow the rules of ``aigw.accounting.pricing``."""

    input_per_mtok: float | None = Field(default=None, ge=0)
    output_per_mtok: float | None = Field(default=None, ge=0)
    cached_input_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_per_mtok: float | None = Field(default=None, ge=0)
    cache_write_1h_per_mtok: float | None = Field(default=None, ge=0)  # Anthropic 1-hour writes; default 2x input
    reasoning_per_mtok: float | None = Field(default=None, ge=0)


class LongContextPrices(TokenRates):
    """The whole request's rates when its prompt (fresh + cached + cache writes) is over the threshold."""

    above_input_tokens: int = Field(gt=0)


class TierPrices(TokenRates):
    """A service tier's rates: explicit, or ``scale`` times the standard ones (long context included)."""

    scale: float | None = Field(default=None, gt=0)
    long_context: LongContextPrices | None = None  # its own long-context rates; default: scaled like the tier

    @model_validator(mode="after")
    def _scale_or_rates(self) -> TierPrices:
        rated = any(getattr(self, k) is not None for k in TokenRates.model_fields)
        if self.scale is not None and (rated or self.long_context is not None):
            raise ValueError("give a tier either `scale` or its rates, not both")
        if self.scale is None and not rated:
            raise ValueError("a tier needs `scale` or at least one rate")
        return self


class Prices(TokenRates):
    """USD per million tokens (and per request); overrides the shipped table."""

    per_request: float | None = Field(default=None, ge=0)
    per_web_search: float | None = Field(default=None, ge=0)  # USD per server-side web search
    long_context: LongContextPrices | None = None
    tiers: dict[ServiceTier, TierPrices] | None = None


class MockOptions(Strict):
    """Knobs of the deterministic mock provider (demos, tests, chaos drills)."""

    latency_ms: float = Field(default=0, ge=0)
    stream_chunk_ms: float = Field(default=0, ge=0)
    fail_rate: float = Field(default=0, ge=0, le=1)
    fail_kind: Literal[
        "upstream_error", "unavailable", "rate_limited", "timeout", "context_length_exceeded", "content_policy"
    ] = "upstream_error"
    seed: int = 0


class Deployment(Strict):
    """One `models:` entry: a public model name served by one upstream deployment."""

    name: str = Field(min_length=1)
    provider: ProviderKind
    model: str = ""  # upstream model id; defaults to name
    api_base: str = ""
    api_key: str = ""
    api_version: str = ""  # azure
    deployment: str = ""  # azure deployment name; defaults to model
    headers: dict[str, str] = Field(default_factory=dict)  # extra upstream headers
    quirks: dict[str, Any] = Field(default_factory=dict)  # openai_compatible switches
    weight: float = Field(default=1.0, gt=0)
    rpm: int | None = Field(default=None, gt=0)
    tpm: int | None = Field(default=None, gt=0)
    timeout_s: float | None = Field(default=None, gt=0)
    connect_timeout_s: float | None = Field(default=None, gt=0)
    first_token_timeout_s: float | None = Field(default=None, gt=0)
    # streams: the longest wait for the next chunk once content flows (a stalled upstream ends the stream
    # with a timeout instead of holding the client until the whole timeout); None: no such limit
    chunk_timeout_s: float | None = Field(default=None, gt=0)
    prices: Prices | None = None
    # the most output tokens the upstream generates for one answer (its model's published cap): what a
    # budget reserves for a request that sets no max_tokens (else tenancy.default_max_tokens)
    max_output_tokens: int | None = Field(default=None, gt=0)
    mock: MockOptions = Field(default_factory=MockOptions)
    # mock shortcuts as flat keys, as the README documents them
    latency_ms: float | None = Field(default=None, ge=0)
    fail_rate: float | None = Field(default=None, ge=0, le=1)
    # what the deployment serves natively; a legacy completion goes to a chat-only one by translation. Default:
    # both, but chat only for OpenAI's and Azure's chat models (their /completions takes only the legacy
    # completion models: gpt-3.5-turbo-instruct, davinci-002, babbage-002)
    modes: list[Mode] = Field(default_factory=lambda: list[Mode](["chat", "completions"]))
    id: str = ""  # stable deployment id; defaults to name/provider/model/index

    @field_validator("api_base")
    @classmethod
    def _api_base(cls, v: str) -> str:
        return http_url(v)  # else every call failed at the client: a 502 'NonHttpUrlClientError'

    @model_validator(mode="after")
    def _fill_defaults(self) -> Deployment:
        if not self.model:
            self.model = self.name
        if self.latency_ms is not None:
            self.mock.latency_ms = self.latency_ms
        if self.fail_rate is not None:
            self.mock.fail_rate = self.fail_rate
        if ("modes" not in self.model_fields_set and self.provider in ("openai", "azure")
                and not _LEGACY_COMPLETION_MODEL.search(self.model)):
            self.modes = ["chat"]  # OpenAI answers /completions for a chat model with a 404 "This is a chat model"
        return self


class ServerConfig(Strict):
    host: str = "127.0.0.1"
    port: int = Field(default=4000, ge=0, le=65535)
    master_key: str = ""
    workers: int = Field(default=1, ge=1, le=64)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    insecure: bool = False  # allow a non-loopback bind without a master key
    debug_errors: bool = False  # include raw upstream error bodies in errors
    request_timeout_s: float = Field(default=600, gt=0)
    # A stream with nothing to send for this long gets its wire format's keep-alive (an SSE comment; Anthropic's
    # ping event), so proxies' idle timeouts (nginx, AWS ALB: 60 s) do not cut a slow first token; 0: never.
    stream_keepalive_s: float = Field(default=15, ge=0)
    # `aigw serve` freezes start-up objects and sets this young-generation GC threshold
    # (see gc_tuning.py; measured in docs/benchmarks.md); 0 keeps Python's default of 700.
    gc_young_threshold: int = Field(default=20_000, ge=0)
    # The HTTP server: aigw's own (http/http1_server.py; ~50 µs less CPU per request) or uvicorn
    # (the fallback for anything ours does not speak).
    http: Literal["aigw", "uvicorn"] = "aigw"
    # Set by `aigw serve --workers N` for its workers (not for config files): the file through which
    # they announce cache purges to each other when there is no redis_url (stores/purge_log.py).
    purge_log: str = ""
    # Likewise: the Unix socket of the rate-limit and budget counters the parent keeps for every worker when
    # there is no redis_url (stores/counter_host.py), and of the response cache's shared memory entries.
    counter_socket: str = ""

    @field_validator("master_key")
    @classmethod
    def _strip(cls, v: str) -> str:
        return v.strip()

    @field_validator("host")
    @classmethod
    def _host(cls, v: str) -> str:
        return bind_host(v)


RoutingStrategy = Literal["weighted", "least_inflight", "lowest_latency", "lowest_cost", "most_quota"]


class ModelRouting(Strict):
    """How one public model is served: strategy, retry budget, whole-request timeout, fallback chains.

    Keyed by model name under ``routing:``; the key ``"*"`` gives defaults for every model.
    """

    strategy: RoutingStrategy = "weighted"
    num_retries: int = Field(default=2, ge=0, le=10)  # retries per model in the chain, per request
    timeout_s: float | None = Field(default=None, gt=0)  # whole request, all attempts and waits
    first_token_timeout_s: float | None = Field(default=None, gt=0)  # streams, per attempt
    chunk_timeout_s: float | None = Field(default=None, gt=0)  # streams, per attempt: between chunks
    fallbacks: list[str] = Field(default_factory=list)
    context_window_fallbacks: list[str] = Field(default_factory=list)
    content_policy_fallbacks: list[str] = Field(default_factory=list)
    retry_other_deployments: bool = True  # a retry goes to a deployment not yet tried, when there is one
    backoff_s: float = Field(default=0.1, ge=0)  # base of the exponential backoff (full jitter)
    backoff_max_s: float = Field(default=4.0, ge=0)
    max_retry_after_s: float = Field(default=30.0, ge=0)  # a longer upstream Retry-After is not waited out
    latency_buffer: float = Field(default=0.1, ge=0)  # lowest_latency: share load within 10% of the fastest
    cache: CacheConfig | None = None  # response cache for this model, over the global `cache:` block
    guardrails: GuardrailsConfig | None = None  # this model's guardrails, over the global block


class CircuitBreakerConfig(Strict):
    """One breaker per deployment; with ``redis_url`` set the state is shared by every replica."""

    enabled: bool = True
    failures: int = Field(default=5, ge=1)  # open after this many failures within window_s ...
    window_s: float = Field(default=30.0, gt=0)
    error_ratio: float | None = Field(default=None, gt=0, le=1)  # ... or this share of failed calls
    min_calls: int = Field(default=10, ge=1)  # ... out of at least this many
    cooldown_s: float = Field(default=30.0, gt=0)  # open -> half-open
    half_open_calls: int = Field(default=1, ge=1)  # trial calls let through while half-open
    sync_interval_s: float = Field(default=0.5, gt=0)  # how often replicas exchange state through Redis
    probe_interval_s: float | None = Field(default=None, gt=0)  # active probe (free model list); off by default
    probe_timeout_s: float = Field(default=5.0, gt=0)


DATABASE_SCHEMES = ("sqlite:", "postgresql:", "postgres:")  # what stores.database.open_database opens


class GatewayConfig(Strict):
    server: ServerConfig = Field(default_factory=ServerConfig)
    database_url: str = "sqlite:///aigw.db"
    redis_url: str = ""
    models: list[Deployment] = Field(default_factory=list)
    redis_prefix: str = "aigw:"  # every Redis key starts with this (one prefix per deployment / test run)
    pipeline: list[str] | None = None  # stage order; None = the registry's default order
    routing: dict[str, ModelRouting] = Field(default_factory=dict)  # per model name; "*" = defaults
    circuit_breaker: CircuitBreakerConfig = Field(default_factory=CircuitBreakerConfig)
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    tenancy: TenancyConfig = Field(default_factory=TenancyConfig)
    cache: CacheConfig | None = None  # response cache (docs/cache.md); None = no cache stage
    guardrails: GuardrailsConfig | None = None  # docs/guardrails.md; None = no guardrail stages

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, v: str) -> str:
        if not v.startswith(DATABASE_SCHEMES):  # the value is not echoed: it may hold a password
            raise ValueError("must start with sqlite: (a file, e.g. sqlite:///aigw.db) or postgresql:// "
                             "(e.g. postgresql://user@host:5432/db)")
        return v

    @field_validator("pipeline")
    @classmethod
    def _stages_once(cls, v: list[str] | None) -> list[str] | None:
        """A stage listed twice ran twice: each request counted twice against a key's rpm, say. (Names are checked
        against the stage registry when the app is built: config does not import the pipeline.)"""
        for i, name in enumerate(v or []):
            if v is not None and (first := v.index(name)) != i:
                raise ValueError(f"{name!r} is listed twice (pipeline[{first}] and pipeline[{i}]); a stage runs once")
        return v

    @field_validator("redis_url")
    @classmethod
    def _redis_scheme(cls, v: str) -> str:
        return redis_scheme(v)  # config/urls.py: shared with cache.redis_url

    def model_names(self) -> list[str]:
        seen: dict[str, None] = {}
        for d in self.models:
            seen.setdefault(d.name, None)
        return list(seen)
