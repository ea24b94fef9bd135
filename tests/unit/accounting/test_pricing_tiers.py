"""Rates that change for the whole request: a prompt over the long-context threshold, a priced service tier."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aigw.accounting.pricing import Price, PriceBook, load_table
from aigw.accounting.usage import Tokens, tokens_from_usage
from aigw.config.models import Deployment, LongContextPrices, Prices, TierPrices


def _price(name: str, prices: Prices | None = None, model: str = "") -> Price:
    d = Deployment(name=name, provider="openai", model=model, api_base="http://x", prices=prices, id="d0")
    return PriceBook([d]).for_deployment("d0")


def test_gpt_6_2_sol_bills_the_whole_request_at_long_context_rates_one_token_over_272k() -> None:
    """OpenAI: "more than 272K input tokens" -- input and cache rates double, output costs 1.5x, for the full
    request. Exactly 272,000 is still short context."""
    sol = _price("gpt-6.2-sol")
    at = Tokens(fresh_input=272_000, output=1_000)
    over = Tokens(fresh_input=272_001, output=1_000)
    assert sol.cost_nano(at) == 272_000 * 2_000 + 1_000 * 10_000
    assert sol.cost_nano(over) == 272_001 * 4_000 + 1_000 * 15_000  # every token, not the ones past the line


def test_cached_reads_and_cache_writes_count_toward_the_threshold_and_pay_long_rates() -> None:
    sol = _price("gpt-6.2-sol")
    tokens = tokens_from_usage({"prompt_tokens": 272_001, "completion_tokens": 100,
                                "prompt_tokens_details": {"cached_tokens": 200_000, "cache_write_tokens": 72_000}})
    assert tokens is not None and tokens.fresh_input == 1
    # 1 fresh x $4 + 200k cached x $0.20 + 72k writes x $5 + 100 out x $15 per million
    assert sol.cost_nano(tokens) == 4_000 + 40_000_000 + 360_000_000 + 1_500_000
    short = Tokens(fresh_input=0, cached_input=200_000, cache_write=72_000, output=100)
    assert sol.cost_nano(short) == 20_000_000 + 180_000_000 + 1_000_000


@pytest.mark.parametrize("tier", ["priority", "fast"])
def test_gpt_6_2_sol_fast_mode_costs_twice_the_standard_rate_for_the_same_context_length(tier: str) -> None:
    sol = _price("gpt-6.2-sol")
    short, long = Tokens(fresh_input=1_000, output=100), Tokens(fresh_input=300_000, output=100)
    assert sol.cost_nano(short, tier=tier) == 2 * sol.cost_nano(short)
    assert sol.cost_nano(long, tier=tier) == 2 * sol.cost_nano(long) == 300_000 * 8_000 + 100 * 30_000


@pytest.mark.parametrize("tier", [None, "", "default", "auto", "scale", "standard", "flex", "ultrafast"])
def test_a_tier_the_model_has_no_rates_for_is_billed_at_standard_rates(tier: str | None) -> None:
    """Flex is unavailable on GPT-6.2 Sol; default, auto, scale and standard are the standard tier."""
    tokens = Tokens(fresh_input=1_000, output=100)
    assert _price("gpt-6.2-sol").cost_nano(tokens, tier=tier) == 1_000 * 2_000 + 100 * 10_000


def test_config_sets_a_long_context_rule_and_unset_kinds_scale_with_it() -> None:
    """An operator's rule for a model the table keeps flat: the unset cached rate follows the input's 2x."""
    pro = _price("gemini-2.5-pro", Prices(long_context=LongContextPrices(
        above_input_tokens=200_000, input_per_mtok=2.5, output_per_mtok=15)))
    long = Tokens(fresh_input=150_000, cached_input=50_001, output=1_000, reasoning=1_000)
    # 150k x $2.50 + 50,001 cached x $0.25 + (1k out + 1k thinking) x $15 per million
    assert pro.cost_nano(long) == 375_000_000 + 12_500_250 + 30_000_000
    assert pro.cost_nano(Tokens(fresh_input=200_000)) == 250_000_000  # at the threshold: $1.25


def test_config_tiers_by_scale_or_by_rates_and_over_the_tables_rules() -> None:
    tokens, long = Tokens(fresh_input=100_000, output=100_000), Tokens(fresh_input=300_000, output=0)
    flex = _price("gpt-6.2-sol", Prices(tiers={"flex": TierPrices(scale=0.5)}))
    assert flex.cost_nano(tokens, tier="flex") == 600_000_000  # half of $2 and $10
    assert flex.cost_nano(long, tier="flex") == 300_000 * 2_000  # half the long-context $4
    assert flex.cost_nano(tokens, tier="priority") == 2_400_000_000  # the table's Fast mode is kept
    tokens = Tokens(fresh_input=1_000_000, output=1_000_000)
    rated = _price("o3", Prices(tiers={"flex": TierPrices(input_per_mtok=1, output_per_mtok=4)}))
    assert rated.cost_nano(tokens, tier="flex") == 5_000_000_000
    assert rated.cost_nano(Tokens(cached_input=1_000_000), tier="flex") == 250_000_000  # $0.50 cached, halved


def test_a_config_standard_rate_moves_the_tables_long_context_and_tier_rates_by_their_multipliers() -> None:
    """A negotiated $1 input for gpt-6.2-sol: long context still doubles it, Fast mode still doubles that."""
    sol = _price("sol", Prices(input_per_mtok=1.0), model="gpt-6.2-sol")
    assert sol.cost_nano(Tokens(fresh_input=300_000)) == 300_000 * 2_000
    assert sol.cost_nano(Tokens(fresh_input=300_000), tier="fast") == 300_000 * 4_000
    assert sol.cost_nano(Tokens(output=1_000_000), tier="fast") == 20_000_000_000  # output untouched: $10 x 2


def test_config_long_context_overrides_the_tables_kind_by_kind() -> None:
    sol = _price("gpt-6.2-sol", Prices(long_context=LongContextPrices(above_input_tokens=100_000, output_per_mtok=12)))
    assert sol.cost_nano(Tokens(fresh_input=100_001, output=1_000)) == 100_001 * 4_000 + 1_000 * 12_000


@pytest.mark.parametrize("bad", [
    {"long_context": {"input_per_mtok": 2.5}},  # no threshold
    {"long_context": {"above_input_tokens": 0, "input_per_mtok": 2.5}},
    {"long_context": {"above_input_tokens": 200_000, "input_per_mtok": -1}},
    {"long_context": {"above_input_tokens": 200_000, "inptu_per_mtok": 2.5}},  # a typo is not ignored
    {"tiers": {"premium": {"scale": 2}}},  # not a tier any provider prices
    {"tiers": {"flex": {"scale": 0.5, "input_per_mtok": 1}}},  # a scale or rates, not both
    {"tiers": {"flex": {}}},
    {"tiers": {"flex": {"scale": 0}}},
])
def test_bad_tier_or_long_context_prices_are_refused_at_load(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Deployment.model_validate({"name": "m", "provider": "openai", "prices": bad})


def test_the_table_only_carries_rules_from_the_providers_pages() -> None:
    """Table 2026-11-27c: GPT-6.2 Sol's long-context and Fast-mode rules (developers.openai.com); table 2026-11-29:
    Claude Opus 4.6-4.8's fast mode (code.claude.com and platform.claude.com, fast mode); table 2026-11-29b: Flex
    on GPT-5, GPT-5 mini and nano, o3 and o4-mini (developers.openai.com, flex processing: "priced at Batch API
    rates", half); table 2026-11-29c: Priority on the models openai.com/api-priority-processing lists; every other
    model stays flat until its provider's page is read."""
    version, table = load_table()
    assert version >= "2026-11-29c"
    ruled = {name for name, p in table.items() if p.long_context is not None or p.tiers is not None}
    assert ruled == {"gpt-6.2-sol", "claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8", "gpt-5-nano",
                     *PRIORITY}
    sol = table["gpt-6.2-sol"]
    assert sol.long_above == 272_000 and sol.tiers is not None and set(sol.tiers) == {"priority", "fast"}


@pytest.mark.parametrize("model", ["gpt-5", "gpt-5-mini", "gpt-5-nano", "o3", "o4-mini", "o3-2025-04-16"])
def test_openais_flex_tier_is_billed_at_half_the_standard_rates(model: str) -> None:
    """OpenAI's Flex processing (``service_tier: "flex"``, which OpenAI reports back) costs half the standard
    rates on the models that offer it, cached input too; it was billed at the standard rates, twice the bill."""
    price = _price(model)
    tokens = Tokens(fresh_input=1_000_000, cached_input=1_000_000, output=1_000_000, reasoning=1_000_000)
    assert price.cost_nano(tokens, tier="flex") * 2 == price.cost_nano(tokens) > 0


# openai.com/api-priority-processing: USD per million input, cached input, output tokens
PRIORITY = {"gpt-5": (2.5, 0.25, 20.0), "gpt-5-mini": (0.45, 0.045, 3.6), "gpt-4.1": (3.5, 0.875, 14.0),
            "gpt-4.1-mini": (0.7, 0.175, 2.8), "gpt-4.1-nano": (0.2, 0.05, 0.8), "gpt-4o": (4.25, 2.125, 17.0),
            "gpt-4o-2024-05-13": (8.75, 8.75, 26.25), "gpt-4o-mini": (0.25, 0.125, 1.0), "o3": (3.5, 0.875, 14.0),
            "o4-mini": (2.0, 0.5, 8.0)}


@pytest.mark.parametrize("tier", ["priority", "fast"])
@pytest.mark.parametrize("model", sorted(PRIORITY))
def test_openais_priority_tier_is_billed_at_its_listed_rates(model: str, tier: str) -> None:
    """A call OpenAI served (and reported) as ``priority`` was billed at the standard rates: about half of what
    OpenAI charges for it, and a budget that let through twice the spend it was set to."""
    inp, cached, out = PRIORITY[model]
    price = _price(model)
    assert price.cost_nano(Tokens(fresh_input=1_000_000), tier=tier) == round(inp * 1e9)
    assert price.cost_nano(Tokens(cached_input=1_000_000), tier=tier) == round(cached * 1e9)
    assert price.cost_nano(Tokens(output=500_000, reasoning=500_000), tier=tier) == round(out * 1e9)
