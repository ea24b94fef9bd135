"""`aigw serve`: start the gateway (embedded defaults with no config at all)."""

from __future__ import annotations

import ipaddress
import os
import shutil
import sys
import tempfile
from typing import TYPE_CHECKING, Any

import click

from aigw.config.load import (
    ConfigError,
    env,
    export_counter_socket,
    export_for_workers,
    export_metrics_dir,
    export_purge_log,
    load_config,
)
from aigw.config.urls import bind_host
from aigw.observability.logging import configure

if TYPE_CHECKING:
    from aigw.config.models import GatewayConfig
    from aigw.stores.counter_host import CounterHost

GRACEFUL_S = 30  # requests in flight get this long to finish on SIGTERM
DRAIN_MARGIN_S = 10.0  # past the ledger's shutdown_timeout_s: its writer task's stop, the spill, the rest


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def open_to_all(config: GatewayConfig) -> str:
    """Why ``serve`` refuses to start (and ``config check`` says so): a public bind without a master key, which
    lets anyone in; "" when it does not."""
    server = config.server
    if server.master_key or is_loopback(server.host) or server.insecure:
        return ""
    return (f"refusing to listen on {server.host} without a master key: set server.master_key (or AIGW_MASTER_KEY), "
            "bind to 127.0.0.1, or pass --insecure (server.insecure: true)")


def _host(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """--host checked as server.host is, so that its error names the option, not the config file."""
    try:
        return bind_host(value) if value is not None else None
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command()
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="YAML config file.")
@click.option("--host", default=None, callback=_host, help="Bind address (default 127.0.0.1).")
# the bounds of ServerConfig's port and workers, checked here so that the error names the option, not the file
@click.option("--port", type=click.IntRange(0, 65535), default=None, help="Port (default 4000; 0: any free one).")
@click.option("--workers", type=click.IntRange(1, 64), default=None, help="Worker processes (default 1).")
@click.option("--insecure", is_flag=True, help="Allow a non-loopback bind without a master key.")
@click.option("--log-level", default="info", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--log-format", default="text", type=click.Choice(["text", "json"]))
def serve(config_path: str | None, host: str | None, port: int | None, workers: int | None,
          insecure: bool, log_level: str, log_format: str) -> None:
    """Start the gateway."""
    configure(log_level, log_format)
    config_path = config_path or env("AIGW_CONFIG") or None  # as load_config reads it: errors name that file
    try:
        config = load_config(config_path, host=host, port=port, workers=workers, insecure=insecure or None)
    except ConfigError as exc:
        click.echo(str(exc), err=True)
        sys.exit(2)
    server = config.server
    if refusal := open_to_all(config):
        click.echo(refusal, err=True)
        sys.exit(2)
    def listening(port: int) -> None:  # the port bound (--port 0 asks for any free one), the host as a URL has it
        shown = f"[{server.host}]" if ":" in server.host else server.host
        click.echo(f"aigw listening on http://{shown}:{port}  models: {', '.join(config.model_names())}", err=True)

    if server.workers > 1:
        # the workers read their config again from the environment: `--workers N` must reach them too, or
        # each believes it runs alone (no per-worker warning for limits and budgets without redis_url)
        export_for_workers(config_path, host=host, port=port, workers=server.workers, insecure=insecure or None)
        metrics_dir = tempfile.mkdtemp(prefix="aigw-metrics-")  # one scrape sums every worker
        export_metrics_dir(metrics_dir)
        export_purge_log(os.path.join(metrics_dir, "cache-purges.log"))  # removed with the directory
        counters = _host_counters(config)
        try:
            if server.http == "aigw":
                from aigw.cli.serve_workers import AppProblem, serve_workers
                from aigw.http.http1_server import START_FAILED_EXIT, StartupFailed

                # after its requests, a worker drains the spend ledger (up to shutdown_timeout_s, then spills):
                # it is killed only past both, or the rows it holds are lost
                drain_s = config.tenancy.ledger.shutdown_timeout_s + DRAIN_MARGIN_S
                try:
                    code = serve_workers(server.host, server.port, server.workers, log_level, log_format,
                                         GRACEFUL_S, drain_s, metrics_dir,
                                         on_listen=listening)
                except StartupFailed as exc:  # the port could not be bound
                    click.echo(f"aigw: {exc}", err=True)
                    code = START_FAILED_EXIT
                except AppProblem as exc:  # as one process says it (below), once, not by every worker
                    click.echo(f"{config_path or '(defaults)'}: {exc}" if exc.config else f"aigw: cannot start: {exc}",
                               err=True)
                    code = 2 if exc.config else START_FAILED_EXIT
                if code:
                    sys.exit(code)
            else:
                listening(server.port)
                run_uvicorn("aigw.app:create_app", server.host, server.port, server.workers)
        finally:
            if counters is not None:
                counters.stop()
            shutil.rmtree(metrics_dir, ignore_errors=True)
    else:
        from aigw.app import build_app, for_serving
        from aigw.http.http1_server import START_FAILED_EXIT

        try:
            app = for_serving(build_app(config), config)
        except ConfigError as exc:  # a mistake only building shows (e.g. a guardrails rule): a config error
            click.echo(f"{config_path or '(defaults)'}: {exc}", err=True)
            sys.exit(2)
        except ValueError as exc:  # a setup the config file allows but the app cannot build (e.g. a cache backend)
            click.echo(f"aigw: cannot start: {exc}", err=True)
            sys.exit(START_FAILED_EXIT)
        if server.http == "aigw":
            from aigw.http.http1_server import StartupFailed, run

            try:  # "listening" once the port is bound: a port in use is refused with a reason, not announced
                run(app, server.host, server.port, graceful_timeout_s=GRACEFUL_S,
                    on_listen=listening)
            except StartupFailed as exc:
                click.echo(f"aigw: {exc}", err=True)  # the start-up hook's own log line says why
                sys.exit(START_FAILED_EXIT)
        else:
            listening(server.port)
            run_uvicorn(app, server.host, server.port, 1)


def _host_counters(config: GatewayConfig) -> CounterHost | None:
    """Workers without Redis share one set of rate-limit and budget counters, kept here in the parent (else
    each worker would apply every limit and budget on its own), and one memory store of cached answers (else
    each worker would ask upstream for what another one has); None when Redis keeps all that, or there is none."""
    from aigw.cache_setup import cache_bounds, cache_configured

    counters = config.tenancy.enabled and not config.redis_url
    cache = cache_configured(config)  # the memory store is there even with Redis: a key may choose it
    if not counters and not cache:
        return None
    from aigw.stores.counter_host import CounterHost

    bounds = cache_bounds(config)
    host = CounterHost(config.server.request_timeout_s + 60,  # slots and leases outlive a lost call, as in memory
                       (bounds.max_entries, bounds.max_bytes, bounds.semantic.max_per_context) if cache else None)
    export_counter_socket(host.start())
    return host


def run_uvicorn(app: Any, host: str, port: int, workers: int) -> None:
    """``server.http: uvicorn``: the fallback server, set up as close to ours as it allows."""
    import uvicorn

    # No "server: uvicorn" header: it tells a scanner what runs here, and costs every response a header.
    # No proxy-headers middleware: the gateway reads neither the client address nor the scheme, and the
    # middleware parsed X-Forwarded-* on every request (~1.3 µs of a ~50 µs cache hit).
    uvicorn.run(app, host=host, port=port, loop="uvloop", http="httptools", lifespan="on", access_log=False,
                log_config=None, timeout_graceful_shutdown=GRACEFUL_S, server_header=False, proxy_headers=False,
                factory=isinstance(app, str), workers=workers if workers > 1 else None)
