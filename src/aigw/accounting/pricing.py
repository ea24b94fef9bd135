"""Cost of a request: tokens by kind x the price table, in integer nano-dollars.

The shipped table (``data/prices.json``, versioned) covers the common models;
a deployment's ``prices:`` in config overrides it field by field. A model in
neither costs 0 and is reported by ``PriceBook.unknown`` so an operator sees it;
one whose ``prices:`` leave its input or output rate unset, by ``PriceBook.partial``.
Cached reads and cache writes default to the input price, one-hour cache writes
to twice the input price (Anthropic's rule), reasoning to the output price, when a
table entry does not name them. Server-side web searches are priced per search
(``per_web_search``; the table has Anthropic's $0.01 for its models).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson

from aigw.accounting.usage import Tokens
from aigw.config.models import Deployment, Prices

_DATE_SUFFIX = re.compile(r"(-\d{8}|-\d{4}-\d{2}-\d{2}|-latest|@\d+)$")
_BEDROCK = re.compile(r"^(?:(?:us|eu|apac|global|us-gov|jp|au)\.)?"  # a cross-region inference profile
                      r"(?:anthropic|meta|amazon|mistral|cohere|ai21|deepseek)\.")  # the vendor
_BEDROCK_TAIL = re.compile(r"-v\d+(?::\d+)?$")
_AZURE_35 = re.compile(r"^gpt-35-")  # Azure spells gpt-3.5-turbo without the dot
_CLAUDE_ALIAS = re.compile(r"^(claude-[a-z]+-\d+)-0$")  # Anthropic's alias claude-sonnet-4-0 is claude-sonnet-4


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens of each kind, and per request."""

    input: float = 0.0
    output: float = 0.0
    cached_input: float | None = None
    cache_write: float | None = None
    reasoning: float | None = None
    per_request: float = 0.0
    cache_write_1h: float | None = None
    per_web_search: float = 0.0  # USD per server-side web search (Anthropic: $10 per 1,000)

    def cost_nano(self, t: Tokens, requests: int = 1) -> int:
        """Exact to the nano-dollar: a million tokens at $1 per million is 1e9 nano."""
        milli_micro = (
            t.fresh_input * self.input
            + t.cached_input * (self.input if self.cached_input is None else self.cached_input)
            + (t.cache_write - t.cache_write_1h) * (self.input if self.cache_write is None else self.cache_write)
            + t.output * self.output
            + t.reasoning * (self.output if self.reasoning is None else self.reasoning)
        )
        if t.cache_write_1h:
            milli_micro += t.cache_write_1h * (2 * self.input if self.cache_write_1h is None else self.cache_write_1h)
        extra = self.per_request * requests
        if t.web_searches:
            extra += self.per_web_search * t.web_searches
        return round(milli_micro * 1000 + extra * 1e9)

    def merged(self, o: Prices) -> Price:
        return Price(
            input=self.input if o.input_per_mtok is None else o.input_per_mtok,
            output=self.output if o.output_per_mtok is None else o.output_per_mtok,
            cached_input=self.cached_input if o.cached_input_per_mtok is None else o.cached_input_per_mtok,
            cache_write=self.cache_write if o.cache_write_per_mtok is None else o.cache_write_per_mtok,
            reasoning=self.reasoning if o.reasoning_per_mtok is None else o.reasoning_per_mtok,
            per_request=self.per_request if o.per_request is None else o.per_request,
            cache_write_1h=self.cache_write_1h if o.cache_write_1h_per_mtok is None else o.cache_write_1h_per_mtok,
            per_web_search=self.per_web_search if o.per_web_search is None else o.per_web_search,
        )


def load_table() -> tuple[str, dict[str, Price]]:
    raw: dict[str, Any] = orjson.loads(
        resources.files("aigw.accounting").joinpath("data", "prices.json").read_bytes())
    return str(raw["version"]), {name: Price(**entry) for name, entry in raw["models"].items()}


def _candidates(name: str) -> list[str]:
    """The names a model id may be listed under: as given, without a path (``openai/gpt-4o``), without a
    date or version suffix, and without Bedrock's region and vendor prefixes and version tail
    (``us.anthropic.claude-sonnet-4-5-20250929-v1:0`` is ``claude-sonnet-4-5``); Azure's ``gpt-35-turbo`` is
    ``gpt-3.5-turbo`` and Anthropic's alias ``claude-opus-4-0`` is ``claude-opus-4``. A snapshot priced apart
    from its family (``gpt-4o-2024-05-13``) has its own entry, found first."""
    base = name.rsplit("/", 1)[-1].lower()
    out = [name, base]
    bedrock = _BEDROCK.sub("", _BEDROCK_TAIL.sub("", base))
    for candidate in (base, bedrock):
        stripped = _CLAUDE_ALIAS.sub(r"\1", _AZURE_35.sub("gpt-3.5-", _DATE_SUFFIX.sub("", candidate)))
        for found in (candidate, stripped):
            if found not in out:
                out.append(found)
    return out


class PriceBook:
    """Prices per deployment, resolved once (config override over the shipped table)."""

    def __init__(self, deployments: list[Deployment], table: dict[str, Price] | None = None,
                 version: str = "") -> None:
        if table is None:
            version, table = load_table()
        self.version = version
        self._table = table
        self._by_deployment: dict[str, Price] = {}
        self._by_name: dict[str, Price] = {}
        self.unknown: set[str] = set()
        self.partial: set[str] = set()  # not in the table, and their ``prices:`` leave input or output unset
        for d in deployments:
            base = self.lookup(d.model) or self.lookup(d.name)
            if base is None and d.prices is None:
                self.unknown.add(d.model)
            elif base is None and (d.prices is None or d.prices.input_per_mtok is None
                                   or d.prices.output_per_mtok is None):
                self.partial.add(d.model)
            price = base or Price()
            self._by_deployment[d.id] = price.merged(d.prices) if d.prices is not None else price
            self._by_name.setdefault(d.name, self._by_deployment[d.id])

    def lookup(self, model: str) -> Price | None:
        for name in _candidates(model):
            if name in self._table:
                return self._table[name]
        return None

    def for_deployment(self, deployment_id: str, model: str = "") -> Price:
        price = self._by_deployment.get(deployment_id)
        if price is None:
            price = self.lookup(model) or Price()
        return price

    def for_model(self, name: str) -> Price | None:
        """A public model's price when no deployment served it (a cache hit): its first deployment's."""
        return self._by_name.get(name) or self.lookup(name)
