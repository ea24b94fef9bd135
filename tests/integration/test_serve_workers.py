"""`aigw serve --workers N` on aigw's own server: workers share the socket, a dead one is replaced,
SIGTERM stops them all."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest
import requests

from aigw.cli.serve_workers import restart_pause
from aigw.http.http1_server import START_FAILED_EXIT
from tests.integration.worker_conns import worker_pids as workers_of
from tests.support.serve_process import start_serve, stop_serve, wait_live


def processes_with_config(config: Path) -> list[int]:
    """Live processes started with ``AIGW_CONFIG=config`` (a worker left behind would be one)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if f"AIGW_CONFIG={config.resolve()}".encode() in (entry / "environ").read_bytes().split(b"\0"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found


def ask(url: str) -> int:
    r = requests.post(url + "/v1/chat/completions", timeout=5, headers={"connection": "close"},
                      json={"model": "mock", "messages": [{"role": "user", "content": "hi"}]})
    return r.status_code


def wait_for(check: object, limit_s: float) -> None:
    deadline = time.monotonic() + limit_s
    while not check():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_a_killed_worker_is_replaced_and_sigterm_stops_every_worker(tmp_path: Path) -> None:
    proc, url = start_serve(tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(workers_of(proc.pid)) == 2, 20)
        wait_live(url, proc)
        first, second = workers_of(proc.pid)
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: len(workers_of(proc.pid)) == 2 and first not in workers_of(proc.pid), 20)
        assert second in workers_of(proc.pid)
        wait_for(lambda: all(ask(url) == 200 for _ in range(10)), 20)  # whichever worker takes a connection
        survivors = workers_of(proc.pid)
    finally:
        stop_serve(proc)
    assert proc.returncode in (0, -signal.SIGTERM)
    assert not [pid for pid in survivors if Path(f"/proc/{pid}").exists()]  # stopped and reaped
    err = proc.stderr.read() if proc.stderr else b""
    assert b"Traceback" not in err, err[max(0, err.find(b"Traceback") - 1500):].decode(errors="replace")



def test_workers_share_the_imports_and_tokenizer_loaded_once_before_them(tmp_path: Path) -> None:
    """Forked from a fork server that imported the gateway and loaded the tokenizer (the defaults count tokens):
    each worker shares those pages instead of building its own (~35 MB a worker here; spawned workers, which
    import everything themselves, share only the libraries' code, none of their heap)."""
    proc, url = start_serve(tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(workers_of(proc.pid)) == 2, 20)
        wait_live(url, proc)
        for pid in workers_of(proc.pid):
            rollup = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
                          if line.count(":") == 1)
            shared_heap_mb = int(rollup["Shared_Dirty"].split()[0]) // 1024
            assert shared_heap_mb >= 16, f"worker {pid} shares {shared_heap_mb} MB of heap with the others"
    finally:
        stop_serve(proc)


def test_workers_stop_when_their_parent_is_killed_and_free_the_port(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGKILL (the OOM killer, say) leaves the parent no time to stop its workers: each sees it gone and stops
    gracefully, so the port is free for the next `aigw serve` instead of held by orphans."""
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the killed parent's temporary directories stay in the test's
    proc, url = start_serve(tmp_path, "--workers", "2")
    orphans: list[int] = []
    try:
        wait_for(lambda: len(workers_of(proc.pid)) == 2, 20)
        wait_live(url, proc)
        orphans = workers_of(proc.pid)
        proc.kill()
        proc.wait(10)
        wait_for(lambda: not [pid for pid in orphans if alive(pid)], 15)
        again, _ = start_serve(tmp_path, "--workers", "2", "--port", url.rsplit(":", 1)[1])  # the last --port wins
        try:
            wait_live(url, again)  # the same port binds again
        finally:
            stop_serve(again)
    finally:
        for pid in orphans:  # only if the test failed: none is left otherwise
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_an_app_that_cannot_start_ends_serve_with_exit_code_3_in_both_modes(tmp_path: Path) -> None:
    # the config loads, but the app's start-up cannot open its database (a directory that does not exist)
    config = tmp_path / "aigw.yaml"
    config.write_text(f"database_url: sqlite:///{tmp_path}/missing/dir/aigw.db\n")
    for extra in ([], ["--workers", "2"]):
        proc, _ = start_serve(tmp_path, "--config", str(config), *extra)
        try:
            proc.wait(timeout=30)  # not started again and again: a start-up failure would repeat
        finally:
            stop_serve(proc)
        stderr = proc.stderr.read().decode() if proc.stderr else ""
        assert proc.returncode == START_FAILED_EXIT, stderr
        assert "unable to open database file" in stderr
        if extra:
            assert "could not start its app" in stderr and "starting it again" not in stderr
            assert not processes_with_config(config)  # every worker stopped and reaped
        else:
            assert "aigw: the app failed to start" in stderr


def test_a_worker_that_keeps_dying_waits_longer_each_time() -> None:
    assert [restart_pause(n) for n in (1, 2, 3, 4, 5, 6, 7)] == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]


@pytest.mark.parametrize(("yaml", "line"), [
    # a Redis cache without a redis_url: found at load (as `aigw config check` finds it)
    ("cache: {mode: exact, backend: redis}\n",
     "cache.backend: redis needs redis_url or cache.redis_url (or AIGW_REDIS_URL / AIGW_CACHE_REDIS_URL); "
     "without either use backend: memory"),
    # found while building the app; before: a Python traceback, exit code 1
    ("guardrails:\n  rules: [{match: {regex: x}, respond: y, colour: red}]\n",
     "guardrails.rules[0].colour: unknown key 'colour'"),
], ids=["cache-store-at-load", "rule-while-building"])
def test_a_config_mistake_ends_serve_with_one_line_naming_the_file(tmp_path: Path, yaml: str, line: str) -> None:
    config = tmp_path / "aigw.yaml"
    config.write_text(yaml)
    proc, _ = start_serve(tmp_path, "--config", str(config))
    try:
        proc.wait(timeout=30)
    finally:
        stop_serve(proc)
    stderr = proc.stderr.read().decode() if proc.stderr else ""
    assert proc.returncode == 2, stderr
    assert stderr.strip() == f"{config}: {line}"


def live_gauges(url: str) -> tuple[float, int]:
    """Requests in flight (summed over the workers) and the number of aigw_build_info series (one per worker)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = requests.get(url + "/metrics", timeout=5, headers={"connection": "close"}).text
    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    return (sum(s.value for s in samples if s.name == "aigw_requests_in_flight"),
            sum(1 for s in samples if s.name == "aigw_build_info"))


def answers(url: str) -> bool:
    try:
        return requests.get(url + "/health/live", timeout=2, headers={"connection": "close"}).status_code == 200
    except requests.RequestException:
        return False


def test_a_killed_workers_live_gauges_leave_the_metrics(tmp_path: Path) -> None:
    """Workers SIGKILLed with requests in flight: once replaced, /metrics counts no request in flight and one
    build_info series per live worker (the dead ones' gauges were summed into every scrape for ever)."""
    config = tmp_path / "aigw.yaml"
    config.write_text(f"database_url: sqlite:///{tmp_path}/aigw.db\n"
                      "models:\n  - {name: slow, provider: mock, latency_ms: 5000}\n")
    proc, url = start_serve(tmp_path, "--config", str(config), "--workers", "2", "--log-level", "warning")

    def slow() -> None:
        with contextlib.suppress(requests.RequestException):  # its worker is killed under it
            requests.post(url + "/v1/chat/completions", timeout=10, headers={"connection": "close"},
                          json={"model": "slow", "messages": [{"role": "user", "content": "hi"}]})

    try:
        wait_for(lambda: len(workers_of(proc.pid)) == 2, 20)
        wait_live(url, proc)
        callers = [threading.Thread(target=slow) for _ in range(6)]
        for t in callers:
            t.start()
        wait_for(lambda: live_gauges(url)[0] == 6, 10)
        dead = workers_of(proc.pid)
        for pid in dead:
            os.kill(pid, signal.SIGKILL)
        for t in callers:
            t.join(15)
        wait_for(lambda: len(workers_of(proc.pid)) == 2 and not set(dead) & set(workers_of(proc.pid)), 20)
        wait_for(lambda: all(answers(url) for _ in range(6)), 30)
        # the second new worker's build_info is written when its app has started, which six answers (all
        # perhaps from the first) do not prove: wait for it, bounded; the dead ones' series must be gone by then
        wait_for(lambda: live_gauges(url) == (0, 2), 20)
        assert live_gauges(url) == (0, 2)  # whichever worker answers the scrape
    finally:
        stop_serve(proc)


def test_sigterm_with_workers_refuses_new_connections_while_requests_in_flight_finish(tmp_path: Path) -> None:
    """As a single process does: once asked to stop, new connections are refused at once (a load balancer
    tries another replica), not accepted by the kernel on the shared socket and left waiting for the drain."""
    config = tmp_path / "aigw.yaml"
    config.write_text("models:\n  - name: slow\n    provider: mock\n    mock:\n      latency_ms: 2500\n")
    proc, url = start_serve(tmp_path, "--workers", "2", "--config", str(config))
    answers: list[int] = []
    try:
        wait_for(lambda: len(workers_of(proc.pid)) == 2, 20)
        wait_live(url, proc)
        asking = threading.Thread(target=lambda: answers.append(requests.post(
            url + "/v1/chat/completions", timeout=20,
            json={"model": "slow", "messages": [{"role": "user", "content": "hi"}]}).status_code))
        asking.start()
        time.sleep(0.5)  # the request is in flight
        proc.send_signal(signal.SIGTERM)
        time.sleep(1.0)
        host, port = url.removeprefix("http://").split(":")
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=2).close()
        asking.join(20)
        assert answers == [200]
    finally:
        stop_serve(proc)
    assert proc.returncode in (0, -signal.SIGTERM)


def _listening_inodes(port: int) -> set[str]:
    """Socket inodes listening on ``port`` (/proc/net/tcp and tcp6: state 0A)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for line in f.readlines()[1:]:
                fields = line.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    found.add(fields[9])
    return found


def _socket_inodes(pid: int) -> set[str]:
    out = set()
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = os.readlink(fd)
                if target.startswith("socket:["):
                    out.add(target[8:-1])
    return out


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        with contextlib.suppress(OSError):
            kids = [int(k) for k in Path(f"/proc/{todo[0]}/task/{todo[0]}/children").read_text().split()]
            out += kids
            todo += kids
        todo.pop(0)
    return out


def test_a_workers_sqlite_writers_do_not_hold_the_listening_socket(tmp_path: Path) -> None:
    """The socket is handed to the workers inheritable; a worker's own children (the SQLite writer processes of the
    ledger and request log) must not get it: one alive after its worker held the port against the next serve."""
    proc, url = start_serve(tmp_path, "--workers", "2")
    try:
        wait_for(lambda: len(workers_of(proc.pid)) == 2, 20)
        wait_live(url, proc)
        for _ in range(6):
            assert ask(url) == 200
        listening = _listening_inodes(int(url.rsplit(":", 1)[1]))
        assert listening
        workers = workers_of(proc.pid)
        assert all(_socket_inodes(w) & listening for w in workers)  # the workers do hold it

        def writers() -> list[int]:  # started with the first batch the request log writes
            found = []
            for p in (p for w in workers for p in _descendants(w)):
                with contextlib.suppress(OSError):
                    if b"aigw.sqlite_child" in Path(f"/proc/{p}/cmdline").read_bytes():
                        found.append(p)
            return found

        wait_for(lambda: writers(), 10)
        assert not [p for p in writers() if _socket_inodes(p) & listening]
    finally:
        stop_serve(proc)
