"""Builds the observability parts from config, for ``app.py`` to hand around.

``Observability`` holds what exists (each part may be ``None`` when switched
off), puts them in the stage services, and starts and stops the request log's
writer with the app. The request log store follows ``database_url``: SQLite
for ``sqlite:///path`` (in ``path``'s sibling ``<stem>.requests.db``), PostgreSQL
for ``postgres(ql)://``, memory otherwise.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from aigw.config.models import GatewayConfig
from aigw.observability.logging import protect_secrets
from aigw.observability.metrics import Metrics
from aigw.observability.request_log import MemoryRequestLog, RequestLogStore, RequestLogWriter
from aigw.observability.tracing import Tracing
from aigw.supervise import Supervisor
from aigw.types import Clock

log = logging.getLogger("aigw")
_SECRET_HEADER_WORDS = ("key", "token", "secret", "auth", "password")

try:  # the package version, for aigw_build_info
    from importlib.metadata import version as _version

    VERSION = _version("aigw")
except Exception:  # pragma: no cover - running from a source tree without metadata
    VERSION = "dev"


class RequestLogNotOpened(ConnectionError):
    """The request log's database could not be opened at start: records stay in memory."""


@dataclass
class Observability:
    metrics: Metrics | None
    tracing: Tracing | None
    store: RequestLogStore | None
    writer: RequestLogWriter | None
    unopened: str = ""  # the configured store that could not be opened at start (the memory one stands in)

    def services(self) -> dict[str, Any]:
        return {"metrics": self.metrics, "tracing": self.tracing, "request_log": self.writer}

    async def start(self, supervisor: Supervisor) -> None:
        if self.store is None or self.writer is None:
            return
        try:
            await self.store.open()
        except Exception as exc:  # the gateway serves without a request log rather than not at all
            log.error("request log store %s could not be opened (%s): records stay in memory",
                      self.store.name, type(exc).__name__)
            if self.metrics is not None:
                self.metrics.store_error("request_log", "open")
            self.unopened = self.store.name
            self.store = self.writer.store = MemoryRequestLog()
        supervisor.spawn(self.writer.run(), name="request-log-writer")

    async def ping(self) -> None:
        """For /health/ready: the request log's database answers. The memory store that stands in for one
        that could not be opened always answers, so that case is down, not ok: its records reach no database."""
        if self.unopened:
            raise RequestLogNotOpened(f"request log store {self.unopened} was not opened at start")
        if self.writer is not None:
            await self.writer.store.ping()

    async def stop(self) -> None:
        if self.writer is not None:
            await self.writer.close()
        if self.metrics is not None and self.metrics.multiprocess_dir:
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(os.getpid(), self.metrics.multiprocess_dir)  # type: ignore[no-untyped-call]
        if self.tracing is not None:
            self.tracing.shutdown()


def secrets_of(config: GatewayConfig) -> list[str]:
    """Every secret in config that must never reach a log line."""
    out = [config.server.master_key]
    for d in config.models:
        out.append(d.api_key)
        out += [v for k, v in d.headers.items() if any(w in k.lower() for w in _SECRET_HEADER_WORDS)]
    out += [v for k, v in config.observability.tracing.headers.items()]
    # passwords in the URLs of the stores and endpoints (a driver's error message may quote its URL)
    urls = (config.database_url, config.redis_url, config.cache.redis_url if config.cache is not None else "",
            config.observability.tracing.endpoint, config.tenancy.alert_webhook)
    out += [p for u in urls if u for p in _password(u)]
    return [s for s in out if s]


def _password(url: str) -> tuple[str, str]:
    """A URL's password as written and decoded: an error quoting the URL shows the first (``p%40ss``),
    one quoting the driver's parsed settings the second (``p@ss``)."""
    try:
        parts = urlsplit(url)
        raw = parts.password or ""
    except ValueError:  # not a URL config accepted as one: nothing to take out
        return "", ""
    if unquote(raw).lower() in _DEFAULT_PASSWORDS or raw == parts.username:
        # a local default (postgres:postgres): no secret, and as one it would blank every "postgres"
        # in the logs and errors, the URL scheme included
        return "", ""
    return raw, unquote(raw)


_DEFAULT_PASSWORDS = frozenset({"postgres", "password", "redis", "root", "admin", "guest"})


def sqlite_request_log_path(database_url: str) -> str:
    """The SQLite request log file of ``database_url`` ("" if it has none). A file of its own beside the
    database: SQLite has one writer at a time, and the request log's batches must never make the spend
    ledger's writes wait (or fail with "database is locked")."""
    if not database_url.startswith("sqlite:///"):
        return ""
    db = Path(database_url.removeprefix("sqlite:///") or "aigw.db")
    return str(db.with_name(f"{db.stem}.requests{db.suffix or '.db'}"))


def request_log_store(database_url: str, writer: str = "process") -> RequestLogStore:
    from aigw.observability.request_log_sql import PostgresRequestLog, SqliteRequestLog

    if path := sqlite_request_log_path(database_url):
        return SqliteRequestLog(path, background_writer=writer == "process")
    if database_url.startswith(("postgres://", "postgresql://")):
        return PostgresRequestLog(database_url)
    return MemoryRequestLog()


def build_observability(config: GatewayConfig, clock: Clock, store: RequestLogStore | None = None) -> Observability:
    obs = config.observability
    protect_secrets(secrets_of(config))
    metrics = None
    if obs.metrics.enabled:
        metrics = Metrics(config.model_names(), tenant_label=obs.metrics.tenant_label,
                          multiprocess_dir=obs.metrics.multiprocess_dir, version=VERSION)
    tracing = Tracing(obs.tracing) if obs.tracing.enabled else None
    writer = None
    if obs.request_log.enabled:
        store = store or request_log_store(config.database_url, obs.request_log.writer)
        rl = obs.request_log
        writer = RequestLogWriter(
            store, flush_interval_s=rl.flush_interval_s, batch_size=rl.batch_size, max_buffer=rl.max_buffer,
            retention_days=rl.retention_days, now=clock.now,
            on_error=(lambda op: metrics.store_error("request_log", op)) if metrics is not None else None,
        )
    else:
        store = None
    return Observability(metrics, tracing, store, writer)
