#!/usr/bin/env python3
"""Per-request cost of the observe stage, in process: on_request + record, in microseconds.

  .venv/bin/python bench/observability_micro.py [--n 20000]

Variants as in observability_bench.py: metrics only, + JSON log line (to a file),
+ request log buffer, + tracing (spans built, no exporter). Compare the figures
with the gateway's own per-request time (1e6 / req/s of one worker).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import tempfile
import time

from aigw.config.models import Deployment
from aigw.config.observability import TracingConfig
from aigw.observability.logging import JsonFormatter
from aigw.observability.metrics import Metrics
from aigw.observability.request_log import MemoryRequestLog, RequestLogWriter
from aigw.observability.tracing import Tracing
from aigw.pipeline.context import RequestContext
from aigw.pipeline.stages.observe import Observe

USAGE = {"prompt_tokens": 12, "completion_tokens": 30, "total_tokens": 42,
         "prompt_tokens_details": {"cached_tokens": 0}, "completion_tokens_details": {"reasoning_tokens": 0}}
DEP = Deployment(name="bench-model", provider="openai_compatible", model="bench-model", id="bench-model#0")


def ctx(i: int) -> RequestContext:
    c = RequestContext(request_id=f"req_{i}", api="openai", endpoint="chat", model="bench-model",
                       body={"model": "bench-model", "messages": [{"role": "user", "content": "hi"}]})
    c.served_by, c.served_model, c.attempts, c.upstream_s, c.usage = DEP, "bench-model", 1, 0.0004, USAGE
    return c


async def per_request_us(stage: Observe, n: int) -> float:
    for i in range(500):
        await stage.on_request(c := ctx(i))
        await stage.record(c)
    contexts = [ctx(i) for i in range(n)]
    start = time.perf_counter()
    for c in contexts:
        await stage.on_request(c)
        await stage.record(c)
    return (time.perf_counter() - start) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20000)
    args = ap.parse_args()
    log = logging.getLogger("aigw.request")
    handler = logging.FileHandler(tempfile.mktemp(prefix="aigw-obs-micro-", suffix=".log"))
    handler.setFormatter(JsonFormatter())
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False
    store = MemoryRequestLog()
    writer = RequestLogWriter(store, max_buffer=10**7, now=time.time)
    variants = {
        "metrics": Observe(Metrics(["bench-model"]), None, None, False, time.time),
        "metrics+log": Observe(Metrics(["bench-model"]), None, None, True, time.time),
        "metrics+log+request_log": Observe(Metrics(["bench-model"]), writer, None, True, time.time),
        "all+tracing": Observe(Metrics(["bench-model"]), writer, Tracing(TracingConfig(enabled=True,
                                                                                       exporter="none")),
                               True, time.time),
    }
    for name, stage in variants.items():
        us = asyncio.run(per_request_us(stage, args.n))
        print(f"{name:28s} {us:7.1f} µs per request")


if __name__ == "__main__":
    main()
