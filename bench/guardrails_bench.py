#!/usr/bin/env python3
"""Cost of the input guardrails (PII redaction + injection scoring) on a 2 KB prompt.

  .venv/bin/python bench/guardrails_bench.py [--iterations 3000]

Bounded loop, one process, no I/O inside the timed region. Prints microseconds
per request (p50 / p90 / p99) for a few prompt shapes; docs/guardrails.md
quotes the p50 figures. Issue 7's budget: at most 1 ms p50 for a 2 KB prompt.
"""

from __future__ import annotations

import argparse
import statistics
import time

from aigw.guardrails.injection import check_injection
from aigw.guardrails.pii import PiiDetector, apply_pii_policy

PROSE = (
    "We are migrating the billing service to the new cluster next week. Please review the plan below and "
    "flag anything that looks risky: the database moves first, then the workers, then the API pods. "
    "Rollback is a DNS switch back to the old load balancer. The runbook lists owners for each step. "
)
WITH_PII = (
    "Customer Jane Roe (jane.roe@example.com, +1 (415) 555-0132) says card 4111 1111 1111 1111 was charged "
    "twice on 2024-03-15 for order #100234987 ($1,299.99). Refund to IBAN DE89 3704 0044 0532 0130 00. "
    "Her SSN 536-22-8745 is on the form; she logged in from 203.0.113.45 using v2.3.14 of the app. "
)
TYPICAL_PII = "Please follow up with the customer at jane.roe@example.com or +44 20 7946 0958 about order 100234987. "
DIGITS = "Invoice lines: " + " ".join(f"{i:06d} x {i % 97}.{i % 100:02d} = {i * 3.7:.2f};" for i in range(1, 80)) + " "
TOOL = '{"results": [{"title": "Migration guide", "snippet": "Move the database first, keep replicas in sync."}]}'


def prompt(body: str, size: int = 2048, tail: str = "") -> list[dict[str, object]]:
    text = (body * (size // len(body) + 1))[: size - len(tail)] + tail
    return [
        {"role": "system", "content": "You are a helpful assistant for the operations team."},
        {"role": "user", "content": text},
        {"role": "tool", "tool_call_id": "call_1", "content": TOOL},
    ]


def measure(
    messages: list[dict[str, object]], detector: PiiDetector, iterations: int
) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU (thread) microseconds per request: CPU is what the checks cost even on a busy box."""
    for _ in range(200):  # warm-up
        apply_pii_policy(messages, "redact", detector)
        check_injection(messages, 0.8)
    wall, cpu = [], []
    for _ in range(iterations):
        w0, c0 = time.perf_counter_ns(), time.thread_time_ns()
        redacted, _verdict, _mapping = apply_pii_policy(messages, "redact", detector)
        check_injection(redacted, 0.8)
        cpu.append((time.thread_time_ns() - c0) / 1000)
        wall.append((time.perf_counter_ns() - w0) / 1000)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--iterations", type=int, default=3000)
    args = parser.parse_args()
    detector = PiiDetector()
    print("| 2 KB prompt (PII redact + injection score) | wall p50 µs | wall p90 µs | CPU p50 µs | CPU p99 µs |")
    print("|---|---|---|---|---|")
    cases = (
        ("prose, no PII", prompt(PROSE)),
        ("prose with an email, a phone and an order number", prompt(PROSE, tail=TYPICAL_PII)),
        ("dense PII (~30 values per KB, stress)", prompt(WITH_PII)),
        ("digit-heavy table", prompt(DIGITS)),
    )
    for name, messages in cases:
        wall, cpu = measure(messages, detector, args.iterations)
        w, c = statistics.quantiles(wall, n=100), statistics.quantiles(cpu, n=100)
        print(f"| {name} | {w[49]:.0f} | {w[89]:.0f} | {c[49]:.0f} | {c[98]:.0f} |")


if __name__ == "__main__":
    main()
