#!/usr/bin/env python3
"""Tenancy's cost by part, in process: apps with one stage's ``build`` patched out, alternating rounds.

    .venv/bin/python bench/tenancy_parts.py [--parts accounting,limits,budget,limits+budget] [--rounds 3]

Like ``tenancy_inprocess.py`` (same config, virtual key, mock provider in 0 ms, GC tuning, CPU of this process
and of the ledger's writer children), with more apps beside ``bare`` and ``tenancy``: for each part (a stage
name, or several joined by "+"), a tenancy app built while those stages' ``build`` says "off". Every app is
started first, then the rounds go over all of them in turn and the best round of each counts, so slow spells
land on all alike. ``tenancy`` minus an app is what its parts cost; parts share work (``measure``, the request's
tokens and cost, is paid by whichever of limits, budget and accounting runs first), so shares overlap. Steadier
than the HTTP breakdown (``tenancy_breakdown.py``), which sees the server and the writer child's interference
too. Bench-only patching: never how the gateway runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import tempfile
from typing import Any

from tenancy_inprocess import MASTER, config, lifespan, round_, virtual_key

from aigw.app import build_app
from aigw.gc_tuning import tune_gc


def built_without(parts: str, cfg: Any) -> Any:
    """The app of ``cfg`` with the stages named in ``parts`` ("+"-joined) left out."""
    modules = [importlib.import_module(f"aigw.pipeline.stages.{name}") for name in parts.split("+") if name]
    saved = [m.build for m in modules]
    try:
        for m in modules:
            m.build = lambda deps: None
        return build_app(cfg)
    finally:
        for m, build in zip(modules, saved, strict=True):
            m.build = build


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parts", default="accounting,limits,budget,limits+budget,limits+budget+accounting")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--conc", type=int, default=16)
    args = ap.parse_args()
    names = ["bare", "tenancy", *(p for p in args.parts.split(",") if p)]
    with tempfile.TemporaryDirectory() as tmp:
        apps: dict[str, tuple[Any, str]] = {}
        for name in names:
            cfg = config(name != "bare", os.path.join(tmp, f"{name}.db"), "", "unused:")
            app = build_app(cfg) if name in ("bare", "tenancy") else built_without(name, cfg)
            await lifespan(app, "startup")
            apps[name] = (app, await virtual_key(app) if name != "bare" else MASTER)
        tune_gc(20_000)
        for app, key in apps.values():  # warm-up
            await round_(app, key, min(1000, args.requests), args.conc)
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for name, (app, key) in apps.items():
                us = await round_(app, key, args.requests, args.conc)
                best[name] = min(best.get(name, us), us)
        for app, _ in apps.values():
            await lifespan(app, "shutdown")
    bare, full = best["bare"], best["tenancy"]
    for name, us in best.items():
        label = name if name in ("bare", "tenancy") else f"-{name}"
        print(f"{label:28s} {us:7.1f} µs CPU/request   +{us - bare:6.1f} over bare   {full - us:+6.1f} vs tenancy")


if __name__ == "__main__":
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(main())
