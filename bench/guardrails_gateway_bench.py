#!/usr/bin/env python3
"""What PII redaction + injection checks add per request, measured through the gateway.

  .venv/bin/python bench/guardrails_gateway_bench.py [--requests 2000] [--rounds 3] [--md]

Two ``aigw serve`` processes (one worker each, pinned to CPU 1) in front of the
shared fake upstream (../shared/bench/upstream.py, 0 ms, pinned to CPU 0 with
this client), identical but for the ``guardrails:`` block:
  off  no guardrails block (no guardrail stage is built)
  on   pii: {mode: redact} (restore on) + injection: {mode: block, threshold: 0.8}
One bounded aiohttp loop sends the same ~2 KB prompt (prose with an email, a phone
number and an order number, so redaction has work to do) one request at a time,
alternating between the two gateways, so drift on the box hits both alike. Each
round reports p50/p90 wall latency per variant and their difference, plus the
gateway's CPU time per request (from /proc, steadier on a busy box). Started
processes are stopped by PID.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SHARED = Path(os.environ.get("SHARED_BENCH", REPO.parent / "shared" / "bench"))
PY = str(REPO / ".venv" / "bin" / "python")
KEY = "sk-bench-guardrails-1234"
GUARDRAILS: dict[str, Any] = {"pii": {"mode": "redact"}, "injection": {"mode": "block", "threshold": 0.8}}
PARAGRAPH = ("Our quarterly review covered the migration of the billing service, the new onboarding flow and "
             "the support backlog. The team agreed to move the weekly sync to Thursdays and to publish the "
             "notes in the shared folder. ")
CONTACT = "Questions go to dana.kim@example.org or +44 20 7946 0958; order #48213-7 is the pilot. "


def prompt() -> str:
    text = CONTACT
    while len(text) < 2048:
        text += PARAGRAPH
    return text[:2048]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def start(cmd: list[str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=out, cwd=cwd)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def wait_up(url: str, proc: subprocess.Popen[bytes]) -> None:
    end = time.monotonic() + 20
    async with aiohttp.ClientSession() as s:
        while time.monotonic() < end:
            if proc.poll() is not None:
                raise RuntimeError(f"{url}: process exited early")
            try:
                async with s.get(url, timeout=aiohttp.ClientTimeout(total=0.5)):
                    return
            except (aiohttp.ClientError, TimeoutError):
                await asyncio.sleep(0.05)
    raise RuntimeError(f"{url} did not come up")


def gateway(tmp: Path, name: str, upstream: str, guardrails: dict[str, Any] | None) -> tuple[str, Any]:
    port = free_port()
    cfg: dict[str, Any] = {
        "server": {"host": "127.0.0.1", "port": port, "master_key": KEY, "workers": 1},
        "database_url": f"sqlite:///{tmp}/{name}.db",
        "models": [{"name": "bench-model", "provider": "openai_compatible", "model": "bench-model",
                    "api_base": upstream + "/v1", "api_key": "sk-fake-upstream"}],
        "observability": {"log_requests": False},
    }
    if guardrails is not None:
        cfg["guardrails"] = guardrails
    path = tmp / f"{name}.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    proc = start(["taskset", "-c", "1", PY, "-m", "aigw", "serve", "--config", str(path)], tmp / f"{name}.log", tmp)
    return f"http://127.0.0.1:{port}", proc


async def one(session: aiohttp.ClientSession, url: str, body: bytes, stream: bool) -> float:
    t0 = time.perf_counter()
    async with session.post(url + "/v1/chat/completions", data=body,
                            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"}) as r:
        if r.status != 200:
            raise RuntimeError(f"{url}: {r.status} {await r.text()}")
        if stream:
            async for _ in r.content.iter_any():
                pass
        else:
            await r.read()
    return (time.perf_counter() - t0) * 1000


async def round_(urls: dict[str, str], pids: dict[str, int], n: int, stream: bool) -> dict[str, Any]:
    body = json.dumps({"model": "bench-model", "stream": stream,
                       "messages": [{"role": "user", "content": prompt()}]}).encode()
    times: dict[str, list[float]] = {k: [] for k in urls}
    conn = aiohttp.TCPConnector(limit=4)
    async with aiohttp.ClientSession(connector=conn) as session:
        for _ in range(200):  # warm-up: connections, caches, the PII detector's first compile
            for url in urls.values():
                await one(session, url, body, stream)
        cpu0 = {k: cpu_s(p) for k, p in pids.items()}
        for i in range(n):
            order = list(urls.items()) if i % 2 == 0 else list(urls.items())[::-1]
            for name, url in order:
                times[name].append(await one(session, url, body, stream))
        cpu = {k: (cpu_s(p) - cpu0[k]) / n * 1e6 for k, p in pids.items()}
    out: dict[str, Any] = {}
    for name, ts in times.items():
        qs = statistics.quantiles(ts, n=10)
        out[name] = {"p50_ms": statistics.median(ts), "p90_ms": qs[8], "cpu_us": cpu[name]}
    out["delta_p50_ms"] = out["on"]["p50_ms"] - out["off"]["p50_ms"]
    out["delta_cpu_us"] = out["on"]["cpu_us"] - out["off"]["cpu_us"]
    return out


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    tmp = Path(tempfile.mkdtemp(prefix="aigw-guardrails-bench-"))
    up_port = free_port()
    upstream = start(["taskset", "-c", "0", PY, str(SHARED / "upstream.py"), "--port", str(up_port)],
                     tmp / "upstream.log", tmp)
    up = f"http://127.0.0.1:{up_port}"
    procs: list[subprocess.Popen[bytes]] = [upstream]
    results = []
    try:
        await wait_up(up + "/health", upstream)
        urls, pids = {}, {}
        for name, g in (("off", None), ("on", GUARDRAILS)):
            url, proc = gateway(tmp, name, up, g)
            procs.append(proc)
            await wait_up(url + "/health/live", proc)
            urls[name], pids[name] = url, proc.pid
        for r in range(args.rounds):
            for stream in (False, True):
                got = await round_(urls, pids, args.requests, stream)
                got.update(round=r + 1, mode="stream" if stream else "plain")
                print(json.dumps(got), file=sys.stderr, flush=True)
                results.append(got)
    finally:
        for p in reversed(procs):
            stop(p)
    return results


def report(results: list[dict[str, Any]], md: bool) -> None:
    if not md:
        print(json.dumps(results, indent=1))
        return
    print("| round | mode | off p50 ms | on p50 ms | added p50 ms | off CPU µs/req | on CPU µs/req | added CPU µs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['round']} | {r['mode']} | {r['off']['p50_ms']:.3f} | {r['on']['p50_ms']:.3f} | "
              f"{r['delta_p50_ms']:+.3f} | {r['off']['cpu_us']:.0f} | {r['on']['cpu_us']:.0f} | "
              f"{r['delta_cpu_us']:+.0f} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--requests", type=int, default=2000, help="measured requests per variant per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--md", action="store_true")
    args = ap.parse_args()
    report(asyncio.run(main_async(args)), args.md)


if __name__ == "__main__":
    main()
