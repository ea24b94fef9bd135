"""The budget's worst case of one request, as pure functions of its body and its prices.

Kept apart from the stage (``budget.py``), which only puts them together: how many answers a body may
generate and how long (a deployment that thinks raises ``max_tokens`` by the thinking budget), which rates its
prompt may be billed at, and what it may cost beyond its tokens (per-request fees and server-side web
searches), so that the reservation covers every charge the settle may add.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from aigw.accounting.pricing import Price
from aigw.accounting.tokens import prompt_items
from aigw.providers.anthropic.thinking import sent_max_tokens
from aigw.schema.anthropic import PRIVATE_KEY
from aigw.types import JSON

DEARER_TIERS = ("priority", "fast")  # tiers that may cost more than the standard one (flex costs less)
# Web searches an Anthropic ``web_search`` tool without ``max_uses`` may run in one call: Anthropic's
# server-side loop stops after 10 iterations (``stop_reason: pause_turn``), one search each.
SEARCHES_WITHOUT_MAX_USES = 10


# The output caps of the deployments that may serve a model: the largest when every one has a cap (else None),
# and the largest known (0: none)
Caps = tuple[int | None, int]
NO_CAPS: Caps = (None, 0)


def output_caps(caps: Iterable[int | None]) -> Caps:
    """``Caps`` of deployments with these ``max_output_tokens`` (None: not configured)."""
    found = list(caps)
    known = [c for c in found if c is not None]
    return (max(known) if found and len(known) == len(found) else None), max(known, default=0)


def joined(a: Caps, b: Caps) -> Caps:
    """The caps of the deployments of both."""
    every = None if a[0] is None or b[0] is None else max(a[0], b[0])
    return every, max(a[1], b[1])


def output_tokens(asked: int, caps: Caps, default: int) -> int:
    """The most output tokens one answer may bill: what the client asked for, at most the largest cap when
    every deployment that may serve it has one (an upstream generates no more); with nothing asked, that cap,
    else ``default`` (``tenancy.default_max_tokens``) or a larger cap some deployment has."""
    every, largest = caps
    if asked:
        return asked if every is None else min(asked, every)
    return every if every is not None else max(default, largest)


def thinking_tokens(body: JSON, caps: Caps, default: int) -> int:
    """The most output tokens one answer may bill where a deployment that thinks may serve ``body`` (which
    sets no max and asks for ``reasoning_effort``): the ``max_tokens`` its adapter sends, thinking budget
    included, at most the cap every deployment has (as ``output_tokens`` treats a client's max)."""
    return output_tokens(sent_max_tokens(body), caps, default)


class Rates(NamedTuple):
    """The dearest rates over the deployments that may serve a request (USD per million tokens, per
    request and per web search)."""

    per_in: float
    per_out: float
    per_request: float
    per_search: float


def count(value: object) -> int:
    """A positive whole number the client sent, else 0."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0


def answers(endpoint: str, body: JSON) -> int:
    """How many answers the call may generate (and bill): ``n`` per prompt; a legacy completion generates
    ``best_of`` (at least ``n``) for each prompt of a list."""
    n = count(body.get("n")) or 1
    if endpoint != "completions":
        return n
    return max(n, count(body.get("best_of"))) * max(1, len(prompt_items(body)))


def web_searches(body: JSON) -> int:
    """The most server-side web searches the call may run (and bill, ``per_web_search``): each Anthropic
    ``web_search`` server tool's ``max_uses``, else ``SEARCHES_WITHOUT_MAX_USES``."""
    own = body.get(PRIVATE_KEY)
    tools = own.get("server_tools") if isinstance(own, dict) else None
    if not isinstance(tools, list):
        return 0
    total = 0
    for tool in tools:
        if isinstance(tool, dict) and str(tool.get("type", "")).startswith("web_search"):
            total += count(tool.get("max_uses")) or SEARCHES_WITHOUT_MAX_USES
    return total


def input_rate(p: Price, write: str) -> float:
    """A prompt token's dearest rate: a cache write's where the prompt may be written (as ``cost_nano``
    prices them: 5 min at ``cache_write``, else input; 1 h at ``cache_write_1h``, else 2x input)."""
    if not write:
        return p.input
    five = p.input if p.cache_write is None else p.cache_write
    if write == "5m":
        return max(p.input, five)
    return max(p.input, five, 2 * p.input if p.cache_write_1h is None else p.cache_write_1h)


def cache_write(body: JSON) -> str:
    """Whether the prompt may be written to the provider's cache, and for how long: "1h", "5m" (any other
    ``cache_control``), or "" (none): on a content part, a tool, or a tool result's own fields."""
    found = ""
    marked: list[object] = []
    for m in body.get("messages") or ():
        if isinstance(m, dict):
            if isinstance(content := m.get("content"), list):
                marked += [p.get("cache_control") for p in content if isinstance(p, dict)]
            if isinstance(own := m.get(PRIVATE_KEY), dict):
                marked.append(own.get("cache_control"))
    marked += [t.get("cache_control") for t in body.get("tools") or () if isinstance(t, dict)]
    for mark in marked:
        if mark is not None:
            if isinstance(mark, dict) and mark.get("ttl") == "1h":
                return "1h"
            found = "5m"
    return found


def worst_rates(prices: list[Price], write: str = "") -> Rates:
    """Dearest input, output-or-reasoning, per-request and per-search price over a model's deployments;
    input at the dearest of its cache-write rates too when the prompt may be written (``write``: "5m" or
    "1h"); tokens at their audio rates where a model has dearer ones (an answer may be audio), and at the
    dearest geography's multiple (Anthropic's US-only inference: asked by the request or by the workspace's
    default, which the gateway cannot see)."""
    return Rates(max(max(input_rate(p, write), p.audio_input or 0.0) * _geo(p) for p in prices),
                 max(max(p.output, p.output if p.reasoning is None else p.reasoning, p.audio_output or 0.0) * _geo(p)
                     for p in prices),
                 max(p.per_request for p in prices), max(p.per_web_search for p in prices))


def _geo(p: Price) -> float:
    return max(1.0, *p.geo.values()) if p.geo else 1.0


def fast_mode(body: JSON) -> bool:
    """Whether an Anthropic client asked for Claude's fast mode (``speed: "fast"``, kept for the Anthropic upstream):
    billed at the ``priority`` tier's rates (``providers/anthropic/translate_response.service_tier``)."""
    own = body.get(PRIVATE_KEY)
    return isinstance(own, dict) and own.get("speed") == "fast"
