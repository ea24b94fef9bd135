#!/usr/bin/env python3
"""Compare one bench/run.sh result with issue 2's performance bar.

  python bar_check.py RESULTS_DIR [--gateway aigw] [--floor floor] [--md]

Reads RESULTS_DIR/bench.json (run_bench.py output) and RESULTS_DIR/startup.jsonl
(bench/startup.py lines, tagged by bench/run.sh). Prints one row per bar item:
the bar, the gateway's figure, the Python floor's figure (same run, same box),
and PASS / MISS with the margin. Exit status 0 always: this is a report, the
numbers are read by people (a timed unit test is not how the bar is checked).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys


def load(path):
    with open(path) as f:
        return json.load(f)


def row(summary, target, mode, conc):
    for a in summary:
        if a["target"] == target and a["mode"] == mode and a["concurrency"] == conc:
            return a
    return None


def get(summary, target, mode, conc, key):
    a = row(summary, target, mode, conc)
    return None if a is None else a.get(key)


def startup(lines, who):
    rows = [r for r in lines if r.get("who") == who]
    ok = [r for r in rows if "first_answer_s" in r]
    return {
        "trials": len(rows),
        "failed": len(rows) - len(ok),
        "first_answer_s_max": max((r["first_answer_s"] for r in ok), default=None),
        "first_answer_s_min": min((r["first_answer_s"] for r in ok), default=None),
        "ready_s_max": max((r["ready_s"] for r in ok if "ready_s" in r), default=None),
        "idle_rss_mb_max": max((r["idle_rss_mb"] for r in ok if "idle_rss_mb" in r), default=None),
        "first_answer_s_median": statistics.median([r["first_answer_s"] for r in ok]) if ok else None,
        "cpu_s_to_ready_max": max((r["cpu_s_to_ready"] for r in ok if r.get("cpu_s_to_ready") is not None),
                                  default=None),
    }


def fmt(x, unit="", nd=2):
    if x is None:
        return "-"
    return f"{x:.{nd}f}{unit}"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--gateway", default="aigw")
    ap.add_argument("--floor", default="floor")
    ap.add_argument("--md", action="store_true", help="Markdown table instead of plain text")
    a = ap.parse_args()

    bench = load(os.path.join(a.results, "bench.json"))
    summ, meta = bench["summary"], bench["meta"]
    lines = []
    sp = os.path.join(a.results, "startup.jsonl")
    if os.path.exists(sp):
        with open(sp) as f:
            lines = [json.loads(line) for line in f if line.strip()]
    targets = list(meta["targets"])
    who = [t for t in (a.gateway, a.floor) if t in targets]

    def errors(t):
        """Errors over every run (also attempts merge_cells.py did not keep) plus a failed smoke test."""
        runs = [r for r in bench["runs"] if r["target"] == t]
        smoke = meta.get("smoke", {}).get(t, {})
        smoke_ok = meta.get("smoke_all_ok", {}).get(t, bool(smoke.get("nonstream_ok") and smoke.get("stream_ok")))
        n_err = meta.get("errors_all_attempts", {}).get(t, sum(r["errors"] for r in runs))
        n_req = meta.get("requests_all_attempts", {}).get(t, sum(r["requests"] for r in runs))
        return n_err + int(not smoke_ok), n_req

    def idle(t):
        st = startup(lines, t)["idle_rss_mb_max"]
        before = meta.get("idle_rss_mb", {}).get(f"{t}:before_first_request")
        vals = [v for v in (st, before) if v is not None]
        return max(vals) if vals else None

    # (name, bar text, cmp, threshold, value-fn(target), unit, nd)
    items = [
        ("non-stream req/s, c=16", ">= 1400", ">=", 1400.0,
         lambda t: get(summ, t, "nonstream", 16, "rps"), "", 0),
        ("non-stream added p50, c=1", "<= 1 ms", "<=", 1.0,
         lambda t: get(summ, t, "nonstream", 1, "added_p50"), " ms", 2),
        ("non-stream added p99, c=1", "<= 3 ms", "<=", 3.0,
         lambda t: get(summ, t, "nonstream", 1, "added_p99"), " ms", 2),
        ("stream added TTFC p50, c=1", "<= 2 ms", "<=", 2.0,
         lambda t: get(summ, t, "stream", 1, "added_ttfc_p50"), " ms", 2),
        ("streams/s, c=16", ">= 560", ">=", 560.0,
         lambda t: get(summ, t, "stream", 16, "rps"), "", 0),
        ("idle RSS", "<= 100 MB", "<=", 100.0, idle, " MB", 0),
        ("start -> first answer (worst trial)", "<= 2 s", "<=", 2.0,
         lambda t: startup(lines, t)["first_answer_s_max"], " s", 2),
        ("errors (all runs + smoke)", "0", "<=", 0.0, lambda t: float(errors(t)[0]), "", 0),
    ]
    head = ["bar item", "bar", *who, "verdict (" + a.gateway + ")"]
    out = []
    verdicts = {}
    for name, bar, cmp, thr, fn, unit, nd in items:
        vals = {t: fn(t) for t in who}
        g = vals.get(a.gateway)
        if g is None:
            verdict = "no data"
        else:
            ok = g >= thr if cmp == ">=" else g <= thr
            margin = (f"{(g / thr - 1) * 100:+.0f}%" if thr else "") if cmp == ">=" else f"{g - thr:+.{nd}f}{unit}"
            verdict = ("PASS" if ok else "MISS") + (f" ({margin})" if margin and thr else "")
        verdicts[name] = verdict
        out.append([name, bar, *[fmt(vals[t], unit, nd) for t in who], verdict])

    if a.md:
        print("| " + " | ".join(head) + " |")
        print("|" + "---|" * len(head))
        for r in out:
            print("| " + " | ".join(r) + " |")
    else:
        widths = [max(len(str(r[i])) for r in [head, *out]) for i in range(len(head))]
        for r in [head, *out]:
            print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    print("\nCPU cost per request (target process CPU ms per successful request = cpu% * 10 / req/s;"
          " /s per core = 1000 / that, what one fully used core would serve):")
    for mode in ("nonstream", "stream"):
        for conc in sorted({r["concurrency"] for r in summ if r["mode"] == mode}):
            cells = []
            for t in who:
                r = row(summ, t, mode, conc)
                if r and r.get("rps") and r.get("cpu_pct") is not None:
                    ms = r["cpu_pct"] * 10 / r["rps"]
                    cells.append(f"{t} {ms:.3f} ms = {1000 / ms:.0f}/s per core (cpu {r['cpu_pct']:.0f}%,"
                                 f" frgn {r.get('foreign_cpu_pct') or 0:.0f}%)")
            if cells:
                print(f"  {mode:<9} c={conc:<3} " + "; ".join(cells))
    after = {t: meta.get("idle_rss_mb", {}).get(f"{t}:after_all_runs") for t in who}
    if any(v is not None for v in after.values()):
        print("RSS after all runs (idle again): " + ", ".join(f"{t} {fmt(v, ' MB', 0)}" for t, v in after.items()))
    n_err, n_req = errors(a.gateway) if a.gateway in targets else (None, None)
    n_miss = sum(v.startswith("MISS") for v in verdicts.values())
    n_none = sum(v == "no data" for v in verdicts.values())
    print(f"\n{a.gateway}: {n_req} measured requests (all attempts), {n_err} errors; "
          f"misses: {n_miss} of {len(verdicts)}" + (f", no data: {n_none}" if n_none else ""))
    for t in who + [f"{w}-cold" for w in who]:
        s = startup(lines, t)
        if s["trials"]:
            print(f"{t} start-up: {s['trials']} trials, ready <= {fmt(s['ready_s_max'], ' s')}, "
                  f"first answer {fmt(s['first_answer_s_min'], ' s')} / {fmt(s['first_answer_s_median'], ' s')} / "
                  f"{fmt(s['first_answer_s_max'], ' s')} (min / median / max), "
                  f"CPU to ready <= {fmt(s['cpu_s_to_ready_max'], ' s')}, "
                  f"idle RSS <= {fmt(s['idle_rss_mb_max'], ' MB', 0)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
