"""Cost of a request: tokens by kind x the price table, in integer nano-dollars.

The shipped table (``data/prices.json``, versioned) covers the common models;
a deployment's ``prices:`` in config overrides it field by field. A model in
neither costs 0 and is reported by ``PriceBook.unknown`` so an operator sees it;
one whose ``prices:`` leave its input or output rate unset, by ``PriceBook.partial``.
Cached reads and cache writes default to the input price, one-hour cache writes
to twice the input price (Anthropic's rule), reasoning to the output price, audio
tokens to the text rates, when a table entry does not name them (audio rates come
from the table only, and stand under a deployment's ``prices:``; under a rule or a
tier they are not scaled). Server-side web searches are priced per search
(``per_web_search``; the table has Anthropic's $0.01 for its models).

Two provider rules change the rates of a whole request:

- **Long context** (``long_context``): when the request's prompt -- fresh input, cached reads and cache
  writes, every prompt token -- is strictly over ``above_input_tokens``, every token of the request
  is billed at the long-context rates (OpenAI: over 272K; Gemini: over 200K). A kind the rule leaves
  unset scales with it: cache reads and writes by the rule's input multiplier, reasoning by its output one.
- **Service tiers** (``tiers``): the tier the provider reports it used (``service_tier`` in OpenAI's
  response and last stream chunk), else the one asked for, picks the tier's rates: explicit, or
  ``scale`` times the standard ones. A tier without its own long-context rates scales the standard
  long-context rates by the same multipliers ("twice the Standard rate for the same context length").
  ``fast`` is OpenAI's new name for ``priority``; any other name (``default``, ``auto``, ``scale``,
  ``standard``) is billed at standard rates.

**Inference geography** (``geo``): where the provider says the call ran (Anthropic's ``inference_geo``), a
multiplier of every token rate (Anthropic bills US-only inference on Claude 4.6 and later at 1.1x).

Per-request and per-search prices are not token rates: no rule changes them. Everything is resolved
once, when the book is built; pricing a request is a dict lookup and a comparison.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

import orjson

from aigw.accounting.usage import Tokens
from aigw.config.models import Deployment, LongContextPrices, Prices, TierPrices, TokenRates

# -001: a Gemini stable version; -0613: an older OpenAI snapshot's month and day
_DATE_SUFFIX = re.compile(r"(-\d{8}|-\d{4}-\d{2}-\d{2}|-latest|@\d+|-00\d|-[01]\d[0-3]\d)$")
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
    long_context: Price | None = None  # the whole request's rates when its prompt is over long_above
    long_above: int = 0
    tiers: Mapping[str, Price] | None = field(default=None, hash=False)  # by service tier, resolved
    audio_input: float | None = None  # audio tokens' own rates (OpenAI's audio models); None: the text rate
    audio_output: float | None = None
    # every token rate times this where the call ran in a geography billed apart (Anthropic: {"us": 1.1})
    geo: Mapping[str, float] | None = field(default=None, hash=False)

    def rates_for(self, prompt: int, tier: str | None = None) -> Price:
        """The rates a request with ``prompt`` prompt tokens, served in ``tier``, is billed at."""
        p = self
        if tier and self.tiers is not None:
            p = self.tiers.get(tier, self)
        long = p.long_context
        return long if long is not None and prompt > p.long_above else p

    def cost_nano(self, t: Tokens, requests: int = 1, tier: str | None = None) -> int:
        """Exact to the nano-dollar: a million tokens at $1 per million is 1e9 nano."""
        if self.long_context is not None or self.tiers is not None:
            return self.rates_for(t.prompt, tier)._flat_cost(t, requests)
        return self._flat_cost(t, requests)

    def _flat_cost(self, t: Tokens, requests: int) -> int:
        milli_micro = (
            t.fresh_input * self.input
            + t.cached_input * (self.input if self.cached_input is None else self.cached_input)
            + (t.cache_write - t.cache_write_1h) * (self.input if self.cache_write is None else self.cache_write)
            + t.output * self.output
            + t.reasoning * (self.output if self.reasoning is None else self.reasoning)
        )
        if t.cache_write_1h:
            milli_micro += t.cache_write_1h * (2 * self.input if self.cache_write_1h is None else self.cache_write_1h)
        if t.audio_input and self.audio_input is not None:  # of fresh input, priced above as text
            milli_micro += t.audio_input * (self.audio_input - self.input)
        if t.audio_output and self.audio_output is not None:  # of output, likewise
            milli_micro += t.audio_output * (self.audio_output - self.output)
        if t.geo and self.geo is not None:
            milli_micro *= self.geo.get(t.geo, 1.0)
        extra = self.per_request * requests
        if t.web_searches:
            extra += self.per_web_search * t.web_searches
        return round(milli_micro * 1000 + extra * 1e9)

    def merged(self, o: Prices) -> Price:
        """This price with a deployment's ``prices:`` over it, field by field. The table's long-context and
        tier rates follow a changed standard rate by the table's multipliers; ``long_context`` and a tier
        given in config override the table's kind by kind (a tier's ``scale`` replaces it)."""
        base = Price(
            input=self.input if o.input_per_mtok is None else o.input_per_mtok,
            output=self.output if o.output_per_mtok is None else o.output_per_mtok,
            cached_input=self.cached_input if o.cached_input_per_mtok is None else o.cached_input_per_mtok,
            cache_write=self.cache_write if o.cache_write_per_mtok is None else o.cache_write_per_mtok,
            reasoning=self.reasoning if o.reasoning_per_mtok is None else o.reasoning_per_mtok,
            per_request=self.per_request if o.per_request is None else o.per_request,
            cache_write_1h=self.cache_write_1h if o.cache_write_1h_per_mtok is None else o.cache_write_1h_per_mtok,
            per_web_search=self.per_web_search if o.per_web_search is None else o.per_web_search,
            audio_input=self.audio_input, audio_output=self.audio_output,  # the table's: config has no audio rates
            geo=self.geo,  # a multiplier of whatever the rates are
        )
        flat = self.flat()
        long = None if self.long_context is None else _rebased(self.long_context, flat, base)
        above = self.long_above
        if o.long_context is not None:
            above = o.long_context.above_input_tokens
            long = _applied(base, _given(o.long_context), long)
        tiers: dict[str, Rule] = {}
        for name, t in (self.tiers or {}).items():  # a table tier's long-context rates are derived: again
            if name in _TIER_NAMES:  # not the aliases: they are added back when resolved
                tiers[name] = (_rates_of(_rebased(t.flat(), flat, base)), None, above)
        for name, tier in (o.tiers or {}).items():
            tiers[name] = _tier_rule(tier, tiers.get(name), above)
        return _resolved(base, long, above, tiers)

    def flat(self) -> Price:
        """The standard short-context rates alone."""
        return self if self.long_context is None and self.tiers is None else \
            replace(self, long_context=None, long_above=0, tiers=None)


# A tier's rule before it is resolved against the standard rates: a multiplier of them, or the rates it
# sets (by kind), the long-context rates it sets (None: its multipliers over the standard long-context
# rates), and its long-context threshold.
Rule = float | tuple[dict[str, float], dict[str, float] | None, int]
_KINDS = ("input", "output", "cached_input", "cache_write", "cache_write_1h", "reasoning")
_TIER_NAMES = ("flex", "priority")
_TIER_ALIASES = {"fast": "priority"}  # OpenAI renamed priority processing Fast mode (both names work)


def _effective(p: Price, kind: str) -> float:
    """The rate a kind is actually billed at (an unset one by the defaults of the module docstring)."""
    value: float | None = getattr(p, kind)
    if value is not None:
        return value
    return 2 * p.input if kind == "cache_write_1h" else p.output if kind == "reasoning" else p.input


def _price(rates: Mapping[str, float], fees: Price) -> Price:
    """A price of these token rates (an absent kind keeps its default) and ``fees``' per-request prices."""
    return Price(input=rates.get("input", 0.0), output=rates.get("output", 0.0),
                 cached_input=rates.get("cached_input"), cache_write=rates.get("cache_write"),
                 reasoning=rates.get("reasoning"), cache_write_1h=rates.get("cache_write_1h"),
                 per_request=fees.per_request, per_web_search=fees.per_web_search,
                 audio_input=fees.audio_input, audio_output=fees.audio_output, geo=fees.geo)


def _given(rates: TokenRates) -> dict[str, float]:
    return {k: v for k in _KINDS if (v := getattr(rates, k + "_per_mtok")) is not None}


def _applied(base: Price, given: Mapping[str, float], fallback: Price | None = None) -> Price:
    """``base`` under a rule that sets ``given`` kinds; an unset kind is ``fallback``'s, else ``base``'s times
    the rule's input multiplier (cache reads and writes) or output multiplier (reasoning)."""
    if fallback is not None:
        given = {**{k: _effective(fallback, k) for k in _KINDS}, **given}
    into = given.get("input", base.input) / base.input if base.input else 1.0
    outo = given.get("output", base.output) / base.output if base.output else 1.0
    rates: dict[str, float] = {}
    for kind in _KINDS:
        if kind in given:
            rates[kind] = given[kind]
        elif kind in ("input", "output") or getattr(base, kind) is not None:
            rates[kind] = _effective(base, kind) * (outo if kind in ("output", "reasoning") else into)
    return _price(rates, base)


def _scaled(p: Price, factor: float) -> Price:
    return _applied(p, {"input": p.input * factor, "output": p.output * factor})


def _rebased(rule: Price, old: Price, new: Price) -> Price:
    """A rule's rates over ``old`` standard rates, moved onto ``new`` ones by the same per-kind multipliers."""
    if old == new:
        return rule
    rates = {k: _effective(rule, k) * _effective(new, k) / _effective(old, k) if _effective(old, k)
             else _effective(rule, k) for k in _KINDS}
    return _price(rates, new)


def _rates_of(p: Price) -> dict[str, float]:
    return {k: _effective(p, k) for k in _KINDS}


def _tier_rule(tier: TierPrices, table: Rule | None, above: int) -> Rule:
    """A config tier over the table's: ``scale`` replaces it; rates override it kind by kind, and its
    long-context rates follow the new rates unless the config gives them."""
    if tier.scale is not None:
        return tier.scale
    given = {**table[0], **_given(tier)} if isinstance(table, tuple) else _given(tier)
    own: LongContextPrices | None = tier.long_context
    return (given, None, above) if own is None else (given, _given(own), own.above_input_tokens)


def _resolved(base: Price, long: Price | None, above: int, tiers: Mapping[str, Rule]) -> Price:
    """``base`` with its long-context rates and tiers, each tier complete (its long-context rates too)."""
    out: dict[str, Price] = {}
    for name, rule in tiers.items():
        tier_long: Price | None = None
        if isinstance(rule, float):
            rates, tier_above = _scaled(base, rule), above
            if long is not None:
                tier_long = _scaled(long, rule)
        else:
            given, own_long, tier_above = rule
            rates = _applied(base, given)
            if own_long is not None:
                tier_long = _applied(rates, own_long)
            elif long is not None:  # the tier's multipliers over the standard long-context rates
                tier_long = _rebased(long, base, rates)
        out[name] = replace(rates, long_context=tier_long, long_above=tier_above if tier_long else 0)
    for alias, name in _TIER_ALIASES.items():
        if name in out:
            out[alias] = out[name]
    return replace(base, long_context=long, long_above=above if long is not None else 0, tiers=out or None)


def _from_table(entry: Mapping[str, Any]) -> Price:
    """A price of the shipped table: rates plus, optionally, ``long_context`` and ``tiers`` written in the
    table's own spelling (``{"above_input_tokens": N, "input": ...}``, ``{"flex": {"scale": 0.5}}`` or a
    tier's rates; a table tier's long-context rates are always its multipliers over the standard ones)."""
    rest = {k: v for k, v in entry.items() if k not in ("long_context", "tiers", "geo")}
    base = Price(**rest, geo={str(k): float(v) for k, v in entry["geo"].items()} if entry.get("geo") else None)
    long, above = None, 0
    if (lc := entry.get("long_context")) is not None:
        above = int(lc["above_input_tokens"])
        long = _applied(base, {k: float(lc[k]) for k in _KINDS if k in lc})
    tiers: dict[str, Rule] = {}
    for name, tier in (entry.get("tiers") or {}).items():
        if "scale" in tier:
            tiers[name] = float(tier["scale"])
            continue
        tiers[name] = ({k: float(tier[k]) for k in _KINDS if k in tier}, None, above)
    return _resolved(base, long, above, tiers)


def load_table() -> tuple[str, dict[str, Price]]:
    raw: dict[str, Any] = orjson.loads(
        resources.files("aigw.accounting").joinpath("data", "prices.json").read_bytes())
    return str(raw["version"]), {name: _from_table(entry) for name, entry in raw["models"].items()}


def _candidates(name: str) -> list[str]:
    """The names a model id may be listed under: as given, without a path (``openai/gpt-4o``), without a
    date or version suffix (Gemini's stable ``-001`` too), and without Bedrock's region and vendor prefixes
    and version tail (``us.anthropic.claude-sonnet-4-5-20250929-v1:0`` is ``claude-sonnet-4-5``); Azure's
    ``gpt-35-turbo`` is ``gpt-3.5-turbo`` and Anthropic's alias ``claude-opus-4-0`` is ``claude-opus-4``. A
    snapshot priced apart from its family (``gpt-4o-2024-05-13``) has its own entry, found first."""
    base = name.rsplit("/", 1)[-1].lower()
    out = [name, base]
    bedrock = _BEDROCK.sub("", _BEDROCK_TAIL.sub("", base))
    for candidate in (base, bedrock):
        spelt = _CLAUDE_ALIAS.sub(r"\1", _AZURE_35.sub("gpt-3.5-", candidate))  # a snapshot priced apart, first
        stripped = _CLAUDE_ALIAS.sub(r"\1", _AZURE_35.sub("gpt-3.5-", _DATE_SUFFIX.sub("", candidate)))
        for found in (candidate, spelt, stripped):
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
