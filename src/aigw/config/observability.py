"""The ``observability:`` config section: metrics, logs, request log, traces.

Kept in its own module so the shared ``models.py`` only gains one field. Every
setting has a default: metrics and the per-request log line on, tracing off,
bodies never logged.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricsConfig(_Strict):
    enabled: bool = True
    # A `tenant` label multiplies every series by the number of tenants: off unless asked.
    tenant_label: bool = False
    require_key: bool = False  # GET /metrics asks for the master key (a tenant admin key: 403)
    # Set from PROMETHEUS_MULTIPROC_DIR by config loading when `aigw serve --workers N` (N > 1).
    multiprocess_dir: str = ""


class TracingConfig(_Strict):
    enabled: bool = False
    exporter: Literal["otlp", "console", "none"] = "otlp"
    endpoint: str = "http://127.0.0.1:4318/v1/traces"  # OTLP over HTTP (protobuf)
    headers: dict[str, str] = Field(default_factory=dict)  # e.g. an auth header for a hosted collector
    service_name: str = "aigw"
    sample_ratio: float = Field(default=1.0, ge=0, le=1)  # of new traces; an incoming sampled flag wins
    # A span per stage hook: the most detail, and the most cost (the OpenTelemetry SDK spends tens of
    # microseconds on each span). Off: request and upstream-attempt spans only.
    stage_spans: bool = True


class RequestLogConfig(_Strict):
    enabled: bool = True
    retention_days: int = Field(default=30, ge=1, le=3650)
    flush_interval_s: float = Field(default=1.0, gt=0, le=60)
    batch_size: int = Field(default=500, ge=1, le=10_000)
    max_buffer: int = Field(default=50_000, ge=100)  # records kept in memory while the database is away
    # SQLite only: "process" writes batches from a child process at idle priority (the GIL the event
    # loop needs is never held for them; see aigw/sqlite_process.py); "thread" on the database thread.
    writer: Literal["process", "thread"] = "process"


class ObservabilityConfig(_Strict):
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    tracing: TracingConfig = Field(default_factory=TracingConfig)
    request_log: RequestLogConfig = Field(default_factory=RequestLogConfig)
    log_requests: bool = True  # one structured line per request on the `aigw.request` logger
    # Prompts and completions are never logged unless this is on; then they are PII-redacted
    # (aigw.guardrails.pii) and cut to body_max_bytes, in the log line and the request log.
    log_bodies: bool = False
    body_max_bytes: int = Field(default=4096, ge=64, le=1_048_576)
