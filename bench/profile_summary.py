#!/usr/bin/env python3
"""Summarise a py-spy ``--format raw`` profile (collapsed stacks) of the gateway.

  python profile_summary.py results/.../profile-nonstream.txt [--top 20] [--ours aigw/]

Each input line is ``frame;frame;...;leaf COUNT`` with frames like
``handle (aigw/http/flow.py:63)``. Prints, as shares of all on-CPU samples:

* by area: which package the leaf frame (where the CPU actually was) is in;
* our code, self: aigw functions that were the leaf;
* our code, attributed: every sample charged to its innermost aigw frame, i.e.
  our function plus the library calls it makes (orjson, aiohttp, dict copies);
  samples with no aigw frame on the stack are the server/loop/client machinery
  running as event-loop callbacks (parsers, transports), split by the leaf's area;
* our code, inclusive: the share of samples with the function anywhere on the stack;
* top leaf functions overall.

Line numbers are dropped so a function counts once.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")

AREAS = [  # first match wins, on the frame's file path
    ("aigw (ours)", ("aigw/",)),
    ("uvicorn + httptools (inbound HTTP)", ("uvicorn/", "httptools/")),
    ("aiohttp (upstream client)", ("aiohttp/", "multidict/", "yarl/", "aiohappyeyeballs/", "propcache/")),
    ("asyncio / uvloop (event loop)", ("asyncio/", "uvloop/", "selectors.py")),
    ("pydantic", ("pydantic",)),
    ("logging", ("logging/",)),
]


def split_frame(frame: str) -> tuple[str, str]:
    m = FRAME.match(frame.strip())
    if not m:
        return frame.strip(), ""
    return m.group("func"), m.group("file")


def area(file: str) -> str:
    for name, needles in AREAS:
        if any(n in file for n in needles):
            return name
    return "other (stdlib, C extensions, ...)" if file else "native / unknown"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("path")
    ap.add_argument("--top", type=int, default=20)
    ap.add_argument("--ours", default="aigw/", help="path fragment that marks our frames")
    ap.add_argument("--entry", default="aigw/cli/", help="our frames that only start the server (not owners)")
    a = ap.parse_args()

    total = 0
    by_area: Counter[str] = Counter()
    self_ours: Counter[str] = Counter()
    attributed: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    leaf_all: Counter[str] = Counter()
    with open(a.path) as f:
        for raw in f:
            raw = raw.rstrip("\n")
            if not raw:
                continue
            stack, _, count = raw.rpartition(" ")
            try:
                n = int(count)
            except ValueError:
                continue
            frames = [split_frame(fr) for fr in stack.split(";") if fr]
            if not frames:
                continue
            total += n
            func, file = frames[-1]
            key_leaf = f"{func} ({file})"
            leaf_all[key_leaf] += n
            by_area[area(file)] += n
            if a.ours in file:
                self_ours[key_leaf] += n
            owner = next((f"{fn} ({fl})" for fn, fl in reversed(frames) if a.ours in fl and a.entry not in fl), None)
            attributed[owner or f"(no aigw frame) {area(file)}"] += n
            for key in {f"{fn} ({fl})" for fn, fl in frames if a.ours in fl and a.entry not in fl}:
                inclusive[key] += n
    if not total:
        print(f"{a.path}: no samples")
        return 1

    def show(title: str, counter: Counter[str], top: int) -> None:
        print(f"\n{title}")
        for key, n in counter.most_common(top):
            print(f"  {100 * n / total:5.1f}%  {key}")

    print(f"{a.path}: {total} on-CPU samples")
    show("by area (leaf frame):", by_area, len(by_area))
    show("our code, self (leaf in aigw):", self_ours, a.top)
    show("our code, attributed (innermost aigw frame, incl. the library calls it makes):", attributed, a.top)
    show("our code, inclusive (anywhere on the stack):", inclusive, a.top)
    show("top leaf functions overall:", leaf_all, a.top)
    return 0


if __name__ == "__main__":
    sys.exit(main())
