"""`aigw serve --workers N` on aigw's own HTTP server: N processes sharing one listening socket.

The parent binds the socket, starts the workers (forked from a fork server that imported the gateway and
loaded the tokenizer once, ``worker_preload``; each builds its own app from the config ``export_for_workers``
left in the environment, and no state but those imports is shared), starts again
any worker that dies, and on SIGINT/SIGTERM asks every worker to stop gracefully
(each finishes its requests in flight) and waits for them. The kernel spreads
new connections over the workers accepting on the shared socket.

A worker that fails to start (its app cannot be built, or its start-up hooks fail:
a database it cannot open, say) exits with ``START_FAILED_EXIT``; starting it again would
fail the same way, so the parent stops the others and ``aigw serve`` exits with that
code, as a single process does. A worker that dies while serving is started again
after a pause that doubles while it keeps dying soon after a start (1 s up to 30 s).
A parent killed outright (SIGKILL) cannot stop its workers: each holds the reading end of a pipe only the
parent writes to (never), wakes when the kernel closes the parent's end, and stops gracefully.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from typing import Any

from aigw.http.http1_server import START_FAILED_EXIT, cannot_listen

log = logging.getLogger("aigw")

KILL_AFTER_S = 5.0  # past a worker's own graceful shutdown, before it is killed
RESTART_PAUSE_S = 1.0  # before a dead worker is started again; doubled while it keeps dying...
RESTART_PAUSE_MAX_S = 30.0
STABLE_S = 60.0  # ...within this long of its start; a worker that lived longer starts again after 1 s
LISTENERS_CLOSED_S = 0.3  # after SIGTERM, a worker stops accepting within its server's tick (0.1 s)


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:  # a port in use: a reason and exit code 3, not a traceback
        sock.close()
        raise cannot_listen(host, port, exc) from None
    sock.set_inheritable(True)
    return sock


def stop_listening(sock: socket.socket, procs: list[BaseProcess]) -> None:
    """Refuse new connections once the workers are stopping. Each closes its listener, but the socket stays
    listening while any process holds it (this one does, to start workers again): the kernel went on
    accepting connections nobody would take, which waited out the whole drain, then were reset. Shut down,
    a listening socket stops listening in every process at once; done after the workers closed theirs (a
    worker still accepting on a shut socket would spin)."""
    if any(proc.is_alive() for proc in procs):
        time.sleep(LISTENERS_CLOSED_S)
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RD)


def _stop_with_parent(lifeline: Connection) -> None:
    """A worker whose parent is gone (killed with SIGKILL, by the OOM killer) stops gracefully instead of serving
    on as an orphan: it would hold the port against the next `aigw serve`, without the counters the parent kept.
    Not its parent pid: a worker's parent is the fork server, which lives as long as any worker does."""
    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            lifeline.recv_bytes()  # nothing is ever sent: this returns when the parent's end closes
        log.warning("the aigw serve process is gone: this worker stops")
        os.kill(os.getpid(), signal.SIGTERM)  # the server's graceful stop: requests in flight finish

    threading.Thread(target=watch, name="aigw-parent-watch", daemon=True).start()


def _worker(sock: socket.socket, log_level: str, log_format: str, graceful_s: float,
            lifeline: Connection) -> None:
    """One worker's life. Forked from the fork server, it ends with ``os._exit`` (multiprocessing's way for a
    forked child), which skips the interpreter's exit: what that would run (the log writer's last lines, the
    spend ledger's spill of rows it still holds) is run here on every way out."""
    try:
        _serve(sock, log_level, log_format, graceful_s, lifeline)
    finally:
        atexit._run_exitfuncs()


def _serve(sock: socket.socket, log_level: str, log_format: str, graceful_s: float, lifeline: Connection) -> None:
    from aigw.app import create_app
    from aigw.config.load import load_config
    from aigw.http.http1_server import StartupFailed, run
    from aigw.observability.logging import configure

    configure(log_level, log_format)
    # inheritable to reach the workers; a worker's own children (the SQLite writer processes) must not hold it:
    # one outliving its worker kept the port from the next `aigw serve`
    sock.set_inheritable(False)
    _stop_with_parent(lifeline)
    try:
        config = load_config()
        app = create_app()
    except Exception:
        log.exception("worker could not build the app")
        sys.exit(START_FAILED_EXIT)
    try:
        run(app, config.server.host, config.server.port, sock=sock, graceful_timeout_s=graceful_s)
    except StartupFailed:
        sys.exit(START_FAILED_EXIT)  # the app's start-up hook logged why


class AppProblem(Exception):
    """The app cannot be built from the config the workers would read: ``config`` when a ConfigError said why
    (a guardrails rule's unknown key), else a setup the config allows and the app cannot build."""

    def __init__(self, message: str, config: bool) -> None:
        super().__init__(message)
        self.config = config


def _check_app(answer: Connection) -> None:
    """In a process of the fork server: build the app as a worker would (no socket, file or process: what
    `aigw config check` does) and send back what went wrong, or "" when nothing did."""
    from aigw.app import build_app
    from aigw.config.load import ConfigError, load_config

    try:
        build_app(load_config())
    except ConfigError as exc:
        answer.send((str(exc), True))
    except ValueError as exc:
        answer.send((str(exc), False))
    else:
        answer.send(("", False))


def _app_problem(context: Any, metrics_dir: str) -> None:
    """Raise ``AppProblem`` when the workers' app cannot be built: found once, before the port is bound and any
    worker starts (each would print its traceback, after "listening"). Whatever else goes wrong here is left to
    the workers, as before. Its live gauges (the build info its app set) leave the shared metrics with it."""
    reading, writing = context.Pipe(duplex=False)
    proc = context.Process(target=_check_app, args=(writing,), name="aigw-config-check")
    proc.start()
    writing.close()
    try:
        message, config = reading.recv() if reading.poll(60) else ("", False)
    except (EOFError, OSError):  # it died without a word
        message, config = "", False
    finally:
        reading.close()
        proc.join(5)
        forget_metrics_of(proc.pid, metrics_dir)
    if message:
        raise AppProblem(message, config)


def forget_metrics_of(pid: int | None, metrics_dir: str) -> None:
    """A dead worker's live gauges (requests in flight, breaker states, build info) leave the shared metrics:
    prometheus_client keeps them, and sums them into every scrape, until told the process is gone. Its
    counters and histograms stay: they are what it served."""
    if metrics_dir and pid is not None:
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(pid, metrics_dir)  # type: ignore[no-untyped-call]


def restart_pause(deaths_in_a_row: int) -> float:
    """Seconds before a worker that died ``deaths_in_a_row`` times soon after its start is started again."""
    return min(RESTART_PAUSE_MAX_S, RESTART_PAUSE_S * 2.0 ** max(0, deaths_in_a_row - 1))


def serve_workers(host: str, port: int, workers: int, log_level: str = "info", log_format: str = "text",
                  graceful_s: float = 30, drain_s: float = KILL_AFTER_S, metrics_dir: str = "",
                  on_listen: Callable[[int], None] | None = None) -> int:
    """Run the workers until a signal (then 0) or until one fails to start (then ``START_FAILED_EXIT``); raise
    ``AppProblem`` before binding when their app cannot be built, ``StartupFailed`` when the port cannot be bound.

    On the way out a worker gets ``graceful_s`` for its requests and ``drain_s`` for its shutdown hooks
    (the spend ledger's drain and spill) before it is killed. ``metrics_dir``: the workers' shared metrics
    (``PROMETHEUS_MULTIPROC_DIR``), where a dead worker's live gauges are dropped. ``on_listen``: called with the
    port bound."""
    context = multiprocessing.get_context("forkserver")  # one per process: it keeps the environment of its start
    context.set_forkserver_preload(["aigw.cli.worker_preload"])
    _app_problem(context, metrics_dir)
    sock = bind(host, port)
    if on_listen is not None:  # said once the port is bound, never before; the port bound (0 asks for any)
        on_listen(sock.getsockname()[1])
    lifeline, held = context.Pipe(duplex=False)  # the workers read; ``held`` is open while this process serves
    stopping: list[int] = []

    def on_signal(sig: int, _frame: Any) -> None:
        stopping.append(sig)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start(i: int) -> BaseProcess:
        proc = context.Process(target=_worker, args=(sock, log_level, log_format, graceful_s, lifeline),
                               name=f"aigw-worker-{i}")
        proc.start()
        return proc

    procs = [start(i) for i in range(workers)]
    started = [time.monotonic()] * workers
    deaths = [0] * workers  # in a row, each soon after its start
    restart_at: list[float | None] = [None] * workers
    code = 0
    try:
        while not stopping and not code:
            time.sleep(0.2)
            now = time.monotonic()
            for i, proc in enumerate(procs):
                if stopping or code:
                    break
                due = restart_at[i]
                if due is not None:
                    if now >= due:
                        restart_at[i], started[i] = None, now
                        procs[i] = start(i)
                    continue
                if proc.is_alive():
                    continue
                forget_metrics_of(proc.pid, metrics_dir)
                if proc.exitcode == START_FAILED_EXIT:
                    log.error("worker %d (pid %s) could not start its app (see its log above); stopping",
                              i, proc.pid)
                    code = START_FAILED_EXIT
                    break
                deaths[i] = deaths[i] + 1 if now - started[i] < STABLE_S else 1
                pause = restart_pause(deaths[i])
                log.error("worker %d (pid %s) exited with %s; starting it again in %.0f s", i, proc.pid,
                          proc.exitcode, pause)
                restart_at[i] = now + pause
    finally:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM: the worker drains and exits
        stop_listening(sock, procs)
        allowed = graceful_s + max(drain_s, KILL_AFTER_S)
        deadline = time.monotonic() + allowed
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("worker pid %s did not stop in %.0f s; killing it", proc.pid, allowed)
                proc.kill()
                proc.join(5)
        sock.close()
        held.close()  # the workers are gone already
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return code
