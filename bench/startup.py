#!/usr/bin/env python3
"""Time a freshly launched gateway: launch -> ready -> first answer, and its idle RSS.

Used by bench/run.sh right after it starts a gateway in the background:

  python startup.py --t0 EPOCH_SECONDS --pid PID --base http://127.0.0.1:4400 \\
      --ready-path /health/ready --key sk-... --model bench-model [--idle-after 2] [--out f.json]

* ``ready_s``: seconds from ``--t0`` (taken by the shell just before the launch)
  until ``GET {base}{ready-path}`` answers 200;
* ``first_answer_s``: seconds from ``--t0`` until the first non-streaming chat
  completion through the gateway came back 200 with a choice in it (the bar's
  "answering within 2 s of start");
* ``cpu_s_to_ready``: CPU seconds the process used until ready (start-up work,
  independent of other load on the box, unlike the wall-clock times);
* ``idle_rss_mb``: resident memory of PID's process tree ``--idle-after``
  seconds after that first answer, with no load.

Standard library only. Every wait is bounded by ``--timeout``; the process
dying while we wait fails at once.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import urllib.error
import urllib.request


def tree_rss_kb(pid: int) -> int:
    """Resident KiB of pid and its descendants (uvicorn workers, if any)."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(name))
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/status") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("VmRSS:")), 0)
        except OSError:
            pass
        todo.extend(children.get(p, ()))
    return total


def cpu_s(pid: int) -> float | None:
    """User + system CPU seconds the process has used (robust to other work on the box)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--t0", type=float, required=True, help="launch time, seconds since the epoch")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--base", required=True, help="http://127.0.0.1:PORT (no /v1)")
    ap.add_argument("--ready-path", default="/health/ready")
    ap.add_argument("--key", default="")
    ap.add_argument("--model", default="bench-model")
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("--idle-after", type=float, default=2.0)
    ap.add_argument("--out")
    a = ap.parse_args()
    if not a.base.startswith(("http://127.", "http://localhost")):
        sys.exit("loopback targets only")

    res: dict[str, object] = {"pid": a.pid}
    deadline = a.t0 + a.timeout
    polls = 0
    while True:
        polls += 1
        if not alive(a.pid):
            res["error"] = "process exited before answering"
            break
        if time.time() > deadline:
            res["error"] = f"not ready after {a.timeout:.0f} s"
            break
        try:
            with urllib.request.urlopen(a.base + a.ready_path, timeout=1) as r:
                if r.status == 200:
                    res["ready_s"] = round(time.time() - a.t0, 4)
                    res["cpu_s_to_ready"] = cpu_s(a.pid)
                    break
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.005)
    res["ready_polls"] = polls
    if "error" not in res:
        body = json.dumps({"model": a.model, "max_tokens": 16,
                           "messages": [{"role": "user", "content": "startup check"}]}).encode()
        headers = {"Content-Type": "application/json"}
        if a.key:
            headers["Authorization"] = f"Bearer {a.key}"
        req = urllib.request.Request(a.base + "/v1/chat/completions", data=body, headers=headers, method="POST")
        try:
            t = time.time()
            with urllib.request.urlopen(req, timeout=max(1.0, deadline - t)) as r:
                answer = json.loads(r.read())
            res["first_answer_s"] = round(time.time() - a.t0, 4)
            res["first_request_ms"] = round((time.time() - t) * 1000, 2)
            if not answer.get("choices"):
                res["error"] = "first answer has no choices"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            res["error"] = f"first chat completion failed: {exc}"
    if "error" not in res and a.idle_after > 0:
        time.sleep(a.idle_after)
        res["idle_rss_mb"] = round(tree_rss_kb(a.pid) / 1024, 1)
    line = json.dumps(res)
    print(line)
    if a.out:
        with open(a.out, "a") as f:
            f.write(line + "\n")
    return 1 if "error" in res else 0


if __name__ == "__main__":
    sys.exit(main())
