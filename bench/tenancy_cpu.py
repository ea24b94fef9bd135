"""CPU per request of two running gateways, measured alternately with wrk (robust on a busy box).

    python bench/tenancy_cpu.py --target bare=URL,PID,KEY --target tenancy=URL,PID,KEY [--rounds 6]

Throughput and latency swing with whatever else runs on the machine; the CPU time
a gateway process spends per request (utime + stime from /proc, divided by the
requests wrk completed) does much less, so this is the figure used to compare a
feature against the bare gateway. Rounds alternate the targets; the median is
reported. Loopback only, each wrk run bounded (--seconds).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import tempfile

LUA = """wrk.method = "POST"
wrk.body = '{"model":"bench-model","messages":[{"role":"user","content":"Say hello, bench."}],"max_tokens":32}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
"""


def cpu_s(pid: int) -> float:
    total = 0.0
    for p in [pid, *_children(pid)]:
        with open(f"/proc/{p}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def run(url: str, key: str, seconds: int, conns: int) -> tuple[int, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        f.write(LUA % key)
    out = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{seconds}s", "-s", f.name, url + "/v1/chat/completions"],
                         capture_output=True, text=True, timeout=seconds + 30, check=True).stdout
    os.unlink(f.name)
    reqs = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    if reqs == 0:
        raise SystemExit(f"{url}: no request completed\n{out}")
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx.group(1)} failed requests")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    return reqs, rps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", action="append", required=True, help="label=url,pid,key")
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=3)
    ap.add_argument("--conns", type=int, default=16)
    args = ap.parse_args()
    targets = []
    for t in args.target:
        label, _, rest = t.partition("=")
        url, pid, key = rest.split(",", 2)
        if not url.startswith(("http://127.", "http://localhost")):
            raise SystemExit("loopback targets only")
        targets.append((label, url, int(pid), key))
    per: dict[str, list[tuple[float, float]]] = {t[0]: [] for t in targets}
    for r in range(args.rounds):
        for label, url, pid, key in (targets if r % 2 == 0 else targets[::-1]):
            before = cpu_s(pid)
            reqs, rps = run(url, key, args.seconds, args.conns)
            per[label].append(((cpu_s(pid) - before) / reqs * 1e6, rps))
    base = statistics.median(x[0] for x in per[targets[0][0]])
    result = {}
    for label, rows in per.items():
        us = statistics.median(x[0] for x in rows)
        rps = statistics.median(x[1] for x in rows)
        result[label] = {"cpu_us_per_request": round(us, 1), "rps_median": round(rps), "vs_first": round(us / base, 3)}
        print(f"{label:10s} cpu/request {us:7.1f} us   req/s (median, noisy) {rps:8.0f}   x{us / base:.2f}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
