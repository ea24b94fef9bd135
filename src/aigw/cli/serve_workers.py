"""`aigw serve --workers N` on aigw's own HTTP server: N processes sharing one listening socket.

The parent binds the socket, starts the workers (spawned, so each builds its app
from the config ``export_for_workers`` left in the environment), starts again
any worker that dies, and on SIGINT/SIGTERM asks every worker to stop gracefully
(each finishes its requests in flight) and waits for them. The kernel spreads
new connections over the workers accepting on the shared socket.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import socket
import time
from multiprocessing.process import BaseProcess
from typing import Any

log = logging.getLogger("aigw")

KILL_AFTER_S = 5.0  # past a worker's own graceful shutdown, before it is killed
RESTART_PAUSE_S = 1.0  # between restarts of a worker that keeps dying


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


def _worker(sock: socket.socket, log_level: str, log_format: str, graceful_s: float) -> None:
    from aigw.app import create_app
    from aigw.config.load import load_config
    from aigw.http.http1_server import run
    from aigw.observability.logging import configure

    configure(log_level, log_format)
    config = load_config()
    run(create_app(), config.server.host, config.server.port, sock=sock, graceful_timeout_s=graceful_s)


def serve_workers(host: str, port: int, workers: int, log_level: str = "info", log_format: str = "text",
                  graceful_s: float = 30) -> None:
    sock = bind(host, port)
    context = multiprocessing.get_context("spawn")
    stopping: list[int] = []

    def on_signal(sig: int, _frame: Any) -> None:
        stopping.append(sig)

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def start(i: int) -> BaseProcess:
        proc = context.Process(target=_worker, args=(sock, log_level, log_format, graceful_s), name=f"aigw-worker-{i}")
        proc.start()
        return proc

    procs = [start(i) for i in range(workers)]
    try:
        while not stopping:
            time.sleep(0.2)
            for i, proc in enumerate(procs):
                if not proc.is_alive() and not stopping:
                    log.error("worker %d (pid %s) exited with %s; starting it again", i, proc.pid, proc.exitcode)
                    time.sleep(RESTART_PAUSE_S)
                    procs[i] = start(i)
    finally:
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                proc.terminate()  # SIGTERM: the worker drains and exits
        deadline = time.monotonic() + graceful_s + KILL_AFTER_S
        for proc in procs:
            proc.join(max(0.0, deadline - time.monotonic()))
            if proc.is_alive():
                log.warning("worker pid %s did not stop in %.0f s; killing it", proc.pid, graceful_s + KILL_AFTER_S)
                proc.kill()
                proc.join(5)
        sock.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
