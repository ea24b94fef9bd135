"""Connections to each worker of a running `aigw serve --workers N`: the kernel spreads connections over the
workers, so each connection's worker is found from /proc (the worker holding the accepted socket whose peer
is the connection's port). Linux only, loopback IPv4."""

from __future__ import annotations

import http.client
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, chat_body
from tests.support.serve_process import start_serve, stop_serve, wait_live


def _live_children(pid: int) -> list[int]:
    """Live, non-zombie children of ``pid`` (Linux /proc)."""
    try:
        listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return []
    alive = []
    for child in map(int, listed):
        try:
            state = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.append(child)
    return alive


def worker_pids(pid: int) -> list[int]:
    """The live workers of the `aigw serve --workers N` process ``pid``: the children of its fork server."""
    servers = []
    for child in _live_children(pid):
        try:
            if b"multiprocessing.forkserver" in Path(f"/proc/{child}/cmdline").read_bytes():
                servers.append(child)
        except OSError:
            continue
    return [worker for server in servers for worker in _live_children(server)]


def _server_inode(server_port: int, client_port: int) -> str | None:
    """The inode of the accepted socket whose peer is ``client_port`` (/proc/net/tcp, loopback IPv4)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, remote = fields[1], fields[2]
        if int(local.split(":")[1], 16) == server_port and int(remote.split(":")[1], 16) == client_port:
            return fields[9]
    return None


def _holder(pids: list[int], inode: str) -> int | None:
    target = f"socket:[{inode}]"
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") == target:
                    return pid
            except OSError:
                continue
    return None


def call(conn: http.client.HTTPConnection, key: str, model: str = "mock") -> tuple[int, Any]:
    conn.request("POST", "/v1/chat/completions", json.dumps(chat_body("hi", max_tokens=5, model=model)),
                 {"authorization": f"Bearer {key}", "content-type": "application/json"})
    resp = conn.getresponse()
    return resp.status, json.loads(resp.read())


class Workers:
    """One kept-alive connection to each worker of a running `aigw serve --workers N`."""

    def __init__(self, url: str, pid: int, count: int) -> None:
        self.url = url
        self.count = count
        self.stderr = ""  # the server's, once it has stopped (``serving_workers``)
        host, port = url.removeprefix("http://").split(":")
        self.host, self.port = host, int(port)
        self.pid = pid
        self.conns: dict[int, http.client.HTTPConnection] = {}

    def admin(self) -> AdminClient:
        return AdminClient(self.url, MASTER)

    def connect_all(self, key: str) -> None:
        """Connections until every worker holds one, each having answered ``key`` once (so it is cached)."""
        deadline = time.monotonic() + 20
        while len(self.conns) < self.count:
            assert time.monotonic() < deadline, f"connections reached {list(self.conns)} only"
            pids = worker_pids(self.pid)
            conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
            assert call(conn, key)[0] == 200
            inode = _server_inode(self.port, conn.sock.getsockname()[1])
            worker = _holder(pids, inode) if inode is not None else None
            if worker is None or worker in self.conns:
                conn.close()
                continue
            self.conns[worker] = conn

    def call_each(self, key: str) -> dict[int, int]:
        return {pid: call(conn, key)[0] for pid, conn in self.conns.items()}

    def seconds_to_401(self, key: str, since: float) -> dict[int, float]:
        """Each worker's first 401 for ``key``, in seconds after ``since`` (polled on its own connection)."""
        took: dict[int, float] = {}
        deadline = since + 5
        while len(took) < len(self.conns) and time.monotonic() < deadline:
            for pid, conn in self.conns.items():
                if pid not in took:
                    status, body = call(conn, key)
                    if status == 401:
                        assert body["error"]["code"] == "invalid_api_key", body
                        took[pid] = time.monotonic() - since
                    else:
                        assert status == 200, body
        assert len(took) == len(self.conns), f"still accepted after 5 s by {set(self.conns) - set(took)}"
        return took

    def close(self) -> None:
        for conn in self.conns.values():
            conn.close()


@contextmanager
def serving_workers(tmp_path: Path, config: dict[str, Any], count: int) -> Iterator[Workers]:
    """``aigw serve --workers count`` on ``config`` (written to tmp_path/aigw.yaml), stopped after the block;
    its stderr (in ``pool.stderr`` then) must hold no traceback."""
    path = tmp_path / "aigw.yaml"
    path.write_text(yaml.safe_dump(config))
    proc, url = start_serve(tmp_path, "--config", str(path), "--workers", str(count), "--log-level", "warning")
    pool = Workers(url, proc.pid, count)
    try:
        wait_live(url, proc)
        yield pool
    finally:
        pool.close()
        stop_serve(proc)
        pool.stderr = (proc.stderr.read() if proc.stderr else b"").decode(errors="replace")
    assert "Traceback" not in pool.stderr, pool.stderr
