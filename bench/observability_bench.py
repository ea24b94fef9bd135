#!/usr/bin/env python3
"""Observability overhead: the same gateway with metrics + JSON logs + request log on, and all off.

  .venv/bin/python bench/observability_bench.py [--duration 10] [--rounds 3] [--conc 16] [--md]

On loopback: the shared fake upstream (../shared/bench/upstream.py, 0 ms) pinned
to CPU 0 with wrk; ``aigw serve`` (one worker) pinned to CPU 1, its log lines
going to a file. Variants (same config otherwise):
  off      metrics, request log line, request log store and tracing all off
  on       metrics + one JSON log line per request + request log (SQLite); tracing off
  traced   `on` plus OpenTelemetry spans (exporter "none": spans built, not sent)
Rounds alternate the variants (off, on, traced, off, on, ...) so drift on the box
hits all of them alike; the median req/s per variant is reported, for a plain and a
streamed chat completion. Started processes are stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("SHARED_BENCH", REPO.parent / "shared" / "bench"))
PY = str(REPO / ".venv" / "bin" / "python")
KEY = "sk-bench-obs-1234"
VARIANTS = {
    "off": {"metrics": {"enabled": False}, "log_requests": False, "request_log": {"enabled": False}},
    "metrics": {"log_requests": False, "request_log": {"enabled": False}},
    "metrics_log": {"request_log": {"enabled": False}},
    "on": {},
    "traced": {"tracing": {"enabled": True, "exporter": "none"}},
}
LUA = """wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
wrk.body = '{"model":"bench-model","stream":%s,"messages":[{"role":"user","content":"hello there"}]}'
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], limit: float = 20) -> None:
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited early")
        try:
            requests.get(url, timeout=0.5)
            return
        except requests.ConnectionError:
            time.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def config(tmp: Path, variant: str, port: int, upstream: str) -> Path:
    cfg = {
        "server": {"host": "127.0.0.1", "port": port, "master_key": KEY, "workers": 1},
        "database_url": f"sqlite:///{tmp}/{variant}.db",
        "models": [{"name": "bench-model", "provider": "openai_compatible", "model": "bench-model",
                    "api_base": upstream + "/v1", "api_key": "sk-fake-upstream"}],
        "observability": VARIANTS[variant],
    }
    path = tmp / f"{variant}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, script: Path, duration: int, conc: int, pid: int) -> tuple[float, float]:
    """(req/s, gateway CPU µs per request): the second holds up on a busy box, the first does not."""
    before = cpu_s(pid)
    out = subprocess.run(["taskset", "-c", "0", "wrk", "-t", "1", "-c", str(conc), "-d", f"{duration}s", "-s",
                          str(script), url + "/v1/chat/completions"], capture_output=True, text=True, check=True)
    used = cpu_s(pid) - before
    if "Non-2xx" in out.stdout:
        raise RuntimeError(out.stdout)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out.stdout).group(1))  # type: ignore[union-attr]
    n = int(re.search(r"(\d+) requests in", out.stdout).group(1))  # type: ignore[union-attr]
    return rps, used / n * 1e6


def run_variant(tmp: Path, variant: str, upstream: str, scripts: dict[str, Path], args: argparse.Namespace
                ) -> dict[str, float]:
    port = free_port()
    log = open(tmp / f"{variant}.log", "ab")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(["taskset", "-c", "1", PY, "-m", "aigw", "serve", "--config",
                             str(config(tmp, variant, port, upstream)), "--log-format", "json"],
                            stdout=log, stderr=log, cwd=tmp)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_up(url + "/health/live", proc)
        out = {}
        for mode, script in scripts.items():
            wrk(url, script, 2, args.conc, proc.pid)  # warm-up
            rps, cpu_us = wrk(url, script, args.duration, args.conc, proc.pid)
            out[mode], out[mode + "_cpu_us"] = rps, cpu_us
        return out
    finally:
        stop(proc)
        log.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--conc", type=int, default=16)
    ap.add_argument("--variants", default="off,on,traced")
    ap.add_argument("--md", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="aigw-obs-bench-"))
    scripts = {}
    for mode, stream in (("plain", "false"), ("stream", "true")):
        scripts[mode] = tmp / f"{mode}.lua"
        scripts[mode].write_text(LUA % (KEY, stream))
    up_port = free_port()
    upstream = subprocess.Popen(["taskset", "-c", "0", PY, str(SHARED / "upstream.py"), "--port", str(up_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    up = f"http://127.0.0.1:{up_port}"
    results: dict[str, dict[str, list[float]]] = {}
    try:
        wait_up(up + "/health", upstream)
        for _ in range(args.rounds):
            for variant in args.variants.split(","):
                got = run_variant(tmp, variant, up, scripts, args)
                for mode, rps in got.items():
                    results.setdefault(variant, {}).setdefault(mode, []).append(rps)
                print(variant, got, file=sys.stderr, flush=True)
    finally:
        stop(upstream)
    report(results, args)


def report(results: dict[str, dict[str, list[float]]], args: argparse.Namespace) -> None:
    base = {mode: statistics.median(v) for mode, v in results["off"].items()}
    rows = []
    for variant, modes in results.items():
        for mode, values in modes.items():
            med = statistics.median(values)
            rows.append((variant, mode, med, (med / base[mode] - 1) * 100, values))
    if args.md:
        print(f"| variant | measure | median of {args.rounds} | vs off | runs |")
        print("| --- | --- | --- | --- | --- |")
        for v, m, med, d, vals in rows:
            what = f"{m[:-7]}: gateway CPU µs / request" if m.endswith("_cpu_us") else f"{m}: req/s"
            print(f"| {v} | {what} | {med:.0f} | {d:+.1f} % | {', '.join(f'{x:.0f}' for x in vals)} |")
    else:
        print(json.dumps([{"variant": v, "mode": m, "rps": med, "vs_off_pct": d, "runs": vals}
                          for v, m, med, d, vals in rows], indent=1))


if __name__ == "__main__":
    main()
