"""Cost per request, exact to the nano-dollar, by each provider's rules for cache and reasoning."""

from __future__ import annotations

import pytest

from aigw.accounting.pricing import Price, PriceBook, load_table
from aigw.accounting.usage import Tokens, tokens_from_usage
from aigw.config.models import Deployment, Prices
from aigw.providers.anthropic.translate_response import to_canonical_usage


def _book(*deployments: Deployment) -> PriceBook:
    for i, d in enumerate(deployments):
        d.id = d.id or f"d{i}"
    return PriceBook(list(deployments))


def test_openai_cached_input_is_billed_at_the_cached_rate() -> None:
    book = _book(Deployment(name="gpt-4o", provider="openai", api_base="http://x"))
    usage = {"prompt_tokens": 2000, "completion_tokens": 100, "prompt_tokens_details": {"cached_tokens": 1000}}
    tokens = tokens_from_usage(usage)
    assert tokens is not None
    # 1000 fresh x $2.50 + 1000 cached x $1.25 + 100 out x $10 per million
    assert book.for_deployment("d0").cost_nano(tokens) == 2_500_000 + 1_250_000 + 1_000_000


def test_reasoning_tokens_are_billed_once_at_the_output_rate() -> None:
    book = _book(Deployment(name="o4-mini", provider="openai", api_base="http://x"))
    tokens = tokens_from_usage({"prompt_tokens": 100, "completion_tokens": 1000,
                                "completion_tokens_details": {"reasoning_tokens": 800}})
    assert tokens is not None
    assert book.for_deployment("d0").cost_nano(tokens) == 110_000 + 4_400_000  # not 1800 output tokens


def test_anthropic_cache_reads_and_writes_have_their_own_prices() -> None:
    book = _book(Deployment(name="claude-sonnet-4-5-20250929", provider="anthropic", api_base="http://x"))
    tokens = tokens_from_usage({"input_tokens": 100, "cache_read_input_tokens": 10_000,
                                "cache_creation_input_tokens": 2_000, "output_tokens": 500})
    assert tokens is not None
    # 100 x $3 + 10k x $0.30 + 2k x $3.75 + 500 x $15 per million (dated model id found by its family)
    assert book.for_deployment("d0").cost_nano(tokens) == 300_000 + 3_000_000 + 7_500_000 + 7_500_000


def test_anthropic_one_hour_cache_writes_are_billed_at_twice_the_input_price() -> None:
    book = _book(Deployment(name="claude-sonnet-4-5", provider="anthropic", api_base="http://x"))
    raw = {"input_tokens": 10, "cache_creation_input_tokens": 1500, "output_tokens": 20,
           "cache_creation": {"ephemeral_5m_input_tokens": 500, "ephemeral_1h_input_tokens": 1000}}
    # 10 fresh x $3 + 500 5-minute writes x $3.75 + 1000 1-hour writes x $6 + 20 out x $15 per million
    want = 30_000 + 1_875_000 + 6_000_000 + 300_000
    direct = tokens_from_usage(raw)  # the Anthropic shape, as an Anthropic client's pass-through reports it
    canonical = tokens_from_usage(to_canonical_usage(raw))  # as the gateway translates it for OpenAI clients
    assert direct is not None and canonical is not None and direct == canonical
    assert book.for_deployment("d0").cost_nano(direct) == want
    priced = _book(Deployment(name="claude-sonnet-4-5", provider="anthropic", api_base="http://x",
                              prices=Prices(cache_write_1h_per_mtok=7.0)))
    assert priced.for_deployment("d0").cost_nano(direct) == want - 6_000_000 + 7_000_000


def test_config_prices_override_the_table_field_by_field() -> None:
    d = Deployment(name="gpt-4o-mini", provider="openai", api_base="http://x",
                   prices=Prices(input_per_mtok=0.15, output_per_mtok=0.6, cached_input_per_mtok=0.075,
                                 per_request=0.001))
    book = _book(d)
    cost = book.for_deployment("d0").cost_nano(Tokens(fresh_input=1_000_000, cached_input=1_000_000, output=10))
    assert cost == 150_000_000 + 75_000_000 + 6_000 + 1_000_000


def test_unknown_models_cost_nothing_and_are_reported() -> None:
    book = _book(Deployment(name="my-llama", provider="openai_compatible", api_base="http://x"))
    assert book.unknown == {"my-llama"}
    assert book.for_deployment("d0").cost_nano(Tokens(fresh_input=10**6, output=10**6)) == 0


def test_an_unknown_model_priced_in_part_is_reported_and_its_unset_rate_costs_nothing() -> None:
    d = Deployment(name="my-llama", provider="openai_compatible", api_base="http://x",
                   prices=Prices(cached_input_per_mtok=0.1, per_request=0.001))
    book = _book(d)
    assert book.partial == {"my-llama"} and book.unknown == set()
    assert book.for_deployment("d0").cost_nano(Tokens(fresh_input=10**6, output=10**6)) == 1_000_000
    full = _book(Deployment(name="my-llama", provider="openai_compatible", api_base="http://x",
                            prices=Prices(input_per_mtok=1, output_per_mtok=2)))
    assert full.partial == set() and full.unknown == set()


def test_the_shipped_table_is_versioned_and_complete() -> None:
    version, table = load_table()
    assert version >= "2026-01-01"
    assert all(p.input >= 0 and p.output >= 0 for p in table.values())
    for name in ("gpt-4o", "gpt-4o-mini", "claude-sonnet-4-5", "gemini-2.5-flash", "text-embedding-3-small"):
        assert name in table
    assert Price(input=1.0).cost_nano(Tokens(fresh_input=1)) == 1000  # $1 per million = 1000 nano a token


def test_anthropic_web_searches_are_billed_per_search_beside_the_tokens() -> None:
    book = _book(Deployment(name="claude-sonnet-4-5", provider="anthropic", api_base="http://x"))
    tokens = tokens_from_usage({"input_tokens": 1000, "output_tokens": 100,
                                "server_tool_use": {"web_search_requests": 2}})
    assert tokens is not None
    # 1000 x $3 + 100 x $15 per million, + 2 searches x $0.01 (Anthropic: $10 per 1,000)
    assert book.for_deployment("d0").cost_nano(tokens) == 3_000_000 + 1_500_000 + 20_000_000
    cheaper = _book(Deployment(name="claude-sonnet-4-5", provider="anthropic", api_base="http://x",
                               prices=Prices(per_web_search=0.005)))
    assert cheaper.for_deployment("d0").cost_nano(tokens) == 3_000_000 + 1_500_000 + 10_000_000


def test_bedrock_model_ids_find_their_models_price() -> None:
    """Bedrock names a model with a region and vendor prefix and a version tail; its list price is the
    model's own (an OpenAI-compatible gateway in front of Bedrock passes these ids through)."""
    table = PriceBook([]).lookup
    assert table("us.anthropic.claude-sonnet-4-5-20250929-v1:0") == table("claude-sonnet-4-5")
    assert table("anthropic.claude-3-5-haiku-20241022-v1:0") == table("claude-3-5-haiku")
    assert table("arn:aws:bedrock:us-east-1:1:inference-profile/eu.anthropic.claude-opus-4-1-20250805-v1:0") \
        == table("claude-opus-4-1")
    assert table("claude-sonnet-4-5") is not None and table("anthropic.unknown-model-v1:0") is None


def test_gemini_thoughts_outside_completion_tokens_are_billed_at_the_output_rate() -> None:
    """Google's OpenAI-compatible endpoint: completion_tokens holds the answer only, total_tokens the thoughts."""
    book = _book(Deployment(name="gemini-2.5-flash", provider="openai_compatible", api_base="http://x"))
    tokens = tokens_from_usage({"prompt_tokens": 20, "completion_tokens": 151, "total_tokens": 553})
    assert tokens is not None
    # 20 in x $0.30 + (151 answer + 382 thought) out x $2.50 per million
    assert book.for_deployment("d0").cost_nano(tokens) == 6_000 + 1_332_500


def test_bedrock_one_hour_cache_writes_cost_what_anthropics_do() -> None:
    book = _book(Deployment(name="us.anthropic.claude-sonnet-4-5-20250929-v1:0", provider="openai_compatible",
                            api_base="http://x"))
    tokens = tokens_from_usage({"inputTokens": 10, "outputTokens": 20, "cacheWriteInputTokens": 1500,
                                "cacheDetails": [{"ttl": "1h", "inputTokens": 1000},
                                                 {"ttl": "5m", "inputTokens": 500}]})
    assert tokens is not None
    # 10 fresh x $3 + 500 5-minute writes x $3.75 + 1000 1-hour writes x $6 + 20 out x $15 per million
    assert book.for_deployment("d0").cost_nano(tokens) == 30_000 + 1_875_000 + 6_000_000 + 300_000


def test_provider_spellings_of_a_model_find_its_price() -> None:
    """Azure names gpt-3.5-turbo ``gpt-35-turbo``; Anthropic's aliases ``claude-sonnet-4-0`` and
    ``claude-opus-4-0`` are Claude Sonnet 4 and Opus 4: none of them is free."""
    table = PriceBook([]).lookup
    assert table("gpt-35-turbo") == table("gpt-3.5-turbo") is not None
    assert table("claude-sonnet-4-0") == table("claude-sonnet-4") is not None
    assert table("claude-opus-4-0") == table("claude-opus-4") is not None
    assert table("us.anthropic.claude-sonnet-4-0") == table("claude-sonnet-4")
    book = _book(Deployment(name="chat", provider="azure", model="gpt-35-turbo", api_base="http://x"))
    assert book.unknown == set()
    assert book.for_deployment("d0").cost_nano(Tokens(fresh_input=1000, output=500)) == 500_000 + 750_000


def test_a_snapshot_priced_apart_from_its_family_keeps_its_own_price() -> None:
    """gpt-4o-2024-05-13 is $5 / $15 per million, not gpt-4o's $2.50 / $10 (and has no cached rate)."""
    book = _book(Deployment(name="gpt-4o-2024-05-13", provider="openai", api_base="http://x"))
    tokens = tokens_from_usage({"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100})
    assert tokens is not None
    assert book.for_deployment("d0").cost_nano(tokens) == 5_000_000 + 1_500_000
    assert PriceBook([]).lookup("gpt-4o-2024-08-06") == PriceBook([]).lookup("gpt-4o")


def test_models_added_on_2026_11_27_are_priced_under_their_provider_ids() -> None:
    """Table 2026-11-27b: Claude Opus 4.6-5.5, Sonnet 4.6/5/5.5, Haiku 5.5, Fable 5/5.1; GPT-6 Sol, 6.1 Terra,
    6.2 Sol/Astra. Each is found under its provider id, a dated or Vertex-style id, and a Bedrock id."""
    table = PriceBook([]).lookup
    for name in ("claude-opus-4-6", "claude-opus-4-7", "claude-opus-4-8", "claude-opus-5", "claude-opus-5-5",
                 "claude-sonnet-4-6", "claude-sonnet-5", "claude-sonnet-5-5", "claude-haiku-5-5",
                 "claude-fable-5", "claude-fable-5-1", "gpt-6-sol", "gpt-6.1-terra", "gpt-6.2-sol", "gpt-6.2-astra"):
        assert table(name) is not None, name
    assert table("claude-opus-5-5@20260922") == table("claude-opus-5-5")  # Vertex spelling
    assert table("us.anthropic.claude-sonnet-5-5-v1:0") == table("claude-sonnet-5-5")  # Bedrock profile
    assert table("anthropic.claude-haiku-5-5") == table("claude-haiku-5-5")
    assert table("openai/gpt-6.2-sol") == table("gpt-6.2-sol")


def test_claude_opus_5_5_bills_its_own_cache_rates_under_a_dated_id() -> None:
    book = _book(Deployment(name="claude-opus-5-5-20260922", provider="anthropic", api_base="http://x"))
    tokens = tokens_from_usage({"input_tokens": 100, "cache_read_input_tokens": 10_000,
                                "cache_creation_input_tokens": 2_000, "output_tokens": 500,
                                "cache_creation": {"ephemeral_5m_input_tokens": 1_000,
                                                   "ephemeral_1h_input_tokens": 1_000}})
    assert tokens is not None
    assert book.unknown == set()
    # 100 x $4 + 10k reads x $0.20 + 1k 5-minute writes x $5 + 1k 1-hour writes x $8 + 500 out x $20 per million
    assert book.for_deployment("d0").cost_nano(tokens) == 400_000 + 2_000_000 + 5_000_000 + 8_000_000 + 10_000_000


def test_claude_fable_5_1_cache_reads_cost_a_quarter_of_fable_5s() -> None:
    tokens = Tokens(fresh_input=1_000, cached_input=100_000, output=1_000)
    fable_51 = _book(Deployment(name="claude-fable-5-1", provider="anthropic", api_base="http://x"))
    fable_5 = _book(Deployment(name="claude-fable-5", provider="anthropic", api_base="http://x"))
    # 1k x $10 + 100k reads x $0.25 (5.1) or $1 (5) + 1k out x $50 per million
    assert fable_51.for_deployment("d0").cost_nano(tokens) == 10_000_000 + 25_000_000 + 50_000_000
    assert fable_5.for_deployment("d0").cost_nano(tokens) == 10_000_000 + 100_000_000 + 50_000_000


def test_gpt_6_2_sol_bills_cached_input_and_cache_writes_under_a_dated_id() -> None:
    book = _book(Deployment(name="gpt-6.2-sol-2026-11-17", provider="openai", api_base="http://x"))
    tokens = tokens_from_usage({"prompt_tokens": 2_000, "completion_tokens": 300,
                                "prompt_tokens_details": {"cached_tokens": 1_000, "cache_write_tokens": 400},
                                "completion_tokens_details": {"reasoning_tokens": 200}})
    assert tokens is not None
    assert book.unknown == set()
    # 600 fresh x $2 + 1k cached x $0.10 + 400 writes x $2.50 + 300 out (200 of them reasoning) x $10 per million
    assert book.for_deployment("d0").cost_nano(tokens) == 1_200_000 + 100_000 + 1_000_000 + 3_000_000


def test_claude_models_listed_without_cache_rates_bill_anthropics_cache_multipliers() -> None:
    """Anthropic bills cache reads at 0.1x input, 5-minute writes at 1.25x and 1-hour writes at 2x. Sonnet 4.6
    was in the table with input and output only, Haiku 5.5 without a read rate: their reads fell back to the
    input price (ten times the bill) and Sonnet 4.6's 5-minute writes to it too (a fifth under the bill)."""
    usage = {"input_tokens": 1_000, "cache_read_input_tokens": 100_000, "cache_creation_input_tokens": 3_000,
             "cache_creation": {"ephemeral_5m_input_tokens": 2_000, "ephemeral_1h_input_tokens": 1_000},
             "output_tokens": 1_000}
    tokens = tokens_from_usage(usage)
    assert tokens is not None
    sonnet = _book(Deployment(name="claude-sonnet-4-6", provider="anthropic", api_base="http://x"))
    # 1k x $3 + 100k reads x $0.30 + 2k 5-minute writes x $3.75 + 1k 1-hour writes x $6 + 1k out x $15 per million
    assert sonnet.for_deployment("d0").cost_nano(tokens) == 3_000_000 + 30_000_000 + 7_500_000 + 6_000_000 + 15_000_000
    haiku = _book(Deployment(name="claude-haiku-5-5", provider="anthropic", api_base="http://x"))
    # 1k x $0.10 + 100k reads x $0.01 + 2k x $0.125 + 1k x $0.20 + 1k out x $0.50 per million
    assert haiku.for_deployment("d0").cost_nano(tokens) == 100_000 + 1_000_000 + 250_000 + 200_000 + 500_000


def test_every_claude_model_in_the_table_names_its_cache_read_and_write_rates() -> None:
    """An unset kind costs the input price, which is never Anthropic's rate for a cache read (0.1x) or a
    5-minute write (1.25x): each Claude entry states both."""
    _, table = load_table()
    loose = [name for name, price in table.items() if name.startswith("claude-")
             and (price.cached_input is None or price.cache_write is None)]
    assert loose == []


def test_audio_tokens_are_billed_at_the_audio_rates() -> None:
    """OpenAI's audio models bill audio tokens apart: gpt-4o-audio-preview $40 in and $80 out a million, text
    $2.50 and $10 (developers.openai.com/api/docs/models/gpt-4o-audio-preview). They were billed as text: a
    spoken answer at an eighth of its price, and at nothing where the model was not in the table."""
    usage = {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000,
             "prompt_tokens_details": {"audio_tokens": 900, "cached_tokens": 0},
             "completion_tokens_details": {"audio_tokens": 950, "reasoning_tokens": 0}}
    tokens = tokens_from_usage(usage)
    assert tokens is not None
    book = _book(Deployment(name="talk", model="gpt-4o-audio-preview-2025-06-03", provider="openai",
                            api_base="http://x"))
    assert book.unknown == set()
    # 100 text in x $2.50 + 900 audio in x $40 + 50 text out x $10 + 950 audio out x $80 per million
    cost = 250_000 + 36_000_000 + 500_000 + 76_000_000
    assert book.for_deployment("d0").cost_nano(tokens) == cost
    # a deployment's negotiated text rates leave the table's audio rates standing
    own = _book(Deployment(name="talk", model="gpt-4o-audio-preview", provider="openai", api_base="http://x",
                           prices=Prices(input_per_mtok=2.0)))
    assert own.for_deployment("d0").cost_nano(tokens) == 200_000 + 36_000_000 + 500_000 + 76_000_000
    listed = {"gpt-audio": (2.5, 32.0, 10.0, 64.0), "gpt-4o-mini-audio-preview": (0.15, 10.0, 0.6, 20.0)}
    for model, rates in listed.items():
        price = PriceBook([]).lookup(model)
        assert price is not None, model
        assert (price.input, price.audio_input, price.output, price.audio_output) == rates
    # a text model's answer costs what it did: no audio, no audio rate
    plain = _book(Deployment(name="gpt-4o", provider="openai", api_base="http://x"))
    assert plain.for_deployment("d0").cost_nano(Tokens(fresh_input=1000, output=100)) == 2_500_000 + 1_000_000


def test_a_gemini_stable_version_id_finds_its_models_price() -> None:
    """Google names a Gemini model's stable versions ``-001``, ``-002`` (``gemini-2.0-flash-001``, the id Vertex
    AI documents), priced as the model; such a deployment cost $0, with only a start-up warning."""
    book = _book(Deployment(name="flash", model="gemini-2.0-flash-001", provider="openai_compatible",
                            api_base="http://x"))
    assert book.unknown == set()
    assert book.for_deployment("d0").cost_nano(Tokens(fresh_input=1_000_000)) == 100_000_000  # $0.10 a million
    assert PriceBook([]).lookup("google/gemini-2.0-flash-001") == PriceBook([]).lookup("gemini-2.0-flash")
    assert PriceBook([]).lookup("text-embedding-ada-002") is not None  # a listed id ending so is found as given


def test_us_only_inference_bills_claude_4_6_and_later_at_1_1x() -> None:
    """Anthropic bills ``inference_geo: "us"`` at 1.1x every token category on Claude Opus 4.6, Sonnet 4.6 and
    later models (platform.claude.com data residency; Claude Platform on AWS: "A 1.1x pricing multiplier
    applies"); the usage says where the call ran. Such calls were billed at global rates, a tenth under."""
    usage = {"input_tokens": 1_000, "cache_read_input_tokens": 10_000, "cache_creation_input_tokens": 2_000,
             "output_tokens": 1_000, "server_tool_use": {"web_search_requests": 1}}
    opus = _book(Deployment(name="claude-opus-4-6", provider="anthropic", api_base="http://x")).for_deployment("d0")
    global_ = tokens_from_usage({**usage, "inference_geo": "global"})
    us = tokens_from_usage(to_canonical_usage({**usage, "inference_geo": "us"}))
    assert global_ is not None and us is not None
    # 1k x $5 + 10k reads x $0.50 + 2k writes x $6.25 + 1k out x $25 per million, + one search at $0.01
    tokens_cost = 5_000_000 + 5_000_000 + 12_500_000 + 25_000_000
    assert opus.cost_nano(global_) == tokens_cost + 10_000_000
    assert opus.cost_nano(us) == round(tokens_cost * 1.1) + 10_000_000  # the search fee is no token rate
    negotiated = _book(Deployment(name="claude-sonnet-4-6", provider="anthropic", api_base="http://x",
                                  prices=Prices(input_per_mtok=2.0, output_per_mtok=10.0))).for_deployment("d0")
    assert negotiated.cost_nano(Tokens(fresh_input=1_000_000, geo="us")) == 2_200_000_000  # the rule stands
    older = _book(Deployment(name="claude-sonnet-4-5", provider="anthropic", api_base="http://x")).for_deployment("d0")
    assert older.cost_nano(Tokens(fresh_input=1_000_000, geo="us")) == 3_000_000_000  # no such rule before 4.6


def test_claude_fast_mode_is_billed_at_its_multiple_of_the_standard_rates() -> None:
    """Anthropic's own pages: fast mode costs $10 / $50 a million on Opus 4.8 (2x) and $30 / $150 on Opus 4.7
    and 4.6 (6x) (code.claude.com fast mode; platform.claude.com fast mode). A fast call's answer reports the
    ``priority`` tier (its alias ``fast`` too); the rest stay at standard rates."""
    tokens = Tokens(fresh_input=1_000_000, output=1_000_000)
    for model, fast in (("claude-opus-4-8", 60_000_000_000), ("claude-opus-4-6", 180_000_000_000),
                        ("claude-opus-4-7", 180_000_000_000)):
        price = _book(Deployment(name=model, provider="anthropic", api_base="http://x")).for_deployment("d0")
        assert price.cost_nano(tokens, tier="default") == 30_000_000_000, model
        assert price.cost_nano(tokens, tier="priority") == price.cost_nano(tokens, tier="fast") == fast, model


def test_openai_snapshots_with_four_digit_dates_are_priced() -> None:
    """OpenAI's older snapshots end in MMDD (``gpt-4-0613``, ``gpt-3.5-turbo-0125``); they cost $0 before, with
    only a start-up warning. Those its pricing page lists apart keep their own rates (``gpt-3.5-turbo-1106`` is
    $1 / $2, GPT-4 Turbo's previews $10 / $30, not GPT-4's $30 / $60), under Azure's spelling too."""
    table = PriceBook([]).lookup
    assert table("gpt-4-0613") == table("gpt-4-0314") == table("gpt-4") is not None
    assert table("gpt-3.5-turbo-0125") == table("gpt-3.5-turbo") is not None
    assert table("gpt-35-turbo-0125") == table("gpt-3.5-turbo")
    per_million = {"gpt-3.5-turbo-1106": (1.0, 2.0), "gpt-35-turbo-1106": (1.0, 2.0),
                   "gpt-3.5-turbo-0613": (1.5, 2.0), "gpt-3.5-turbo-0301": (1.5, 2.0),
                   "gpt-3.5-turbo-16k-0613": (3.0, 4.0), "gpt-35-turbo-16k": (3.0, 4.0),
                   "gpt-3.5-turbo-instruct": (1.5, 2.0), "gpt-4-32k-0613": (60.0, 120.0),
                   "gpt-4-1106-preview": (10.0, 30.0), "gpt-4-0125-preview": (10.0, 30.0),
                   "gpt-4-turbo-preview": (10.0, 30.0), "gpt-4-1106-vision-preview": (10.0, 30.0)}
    for model, (inp, out) in per_million.items():
        book = _book(Deployment(name="chat", provider="openai", model=model, api_base="http://x"))
        assert book.unknown == set(), model
        cost = book.for_deployment("d0").cost_nano(Tokens(fresh_input=1_000_000, output=1_000_000))
        assert cost == round((inp + out) * 1e9), model


# Ids users commonly call, as the provider spells them and as a dated snapshot: each must cost something.
COMMONLY_CALLED = ("o1-pro", "o1-pro-2025-03-19", "o3-pro", "o3-pro-2025-06-10", "gpt-5-pro", "gpt-5-pro-2025-10-06",
                   "claude-3-opus", "claude-3-opus-20240229", "claude-3-opus-latest",
                   "anthropic.claude-3-opus-20240229-v1:0", "claude-3-opus@20240229",
                   "chatgpt-4o-latest", "openai/chatgpt-4o-latest", "gpt-5-chat-latest", "gpt-5-chat", "gpt-5-codex",
                   "codex-mini-latest", "o1-mini", "o1-mini-2024-09-12", "o1-preview", "o1-preview-2024-09-12",
                   "gpt-4.5-preview", "gpt-4.5-preview-2025-02-27")


def test_no_commonly_called_model_costs_nothing() -> None:
    """A model the table does not price costs $0 with only a start-up warning: its spend is never charged and a
    budget never stops it. The table's only free entries are the mock provider's."""
    _, table = load_table()
    assert sorted(name for name, p in table.items() if p.input == p.output == 0) == ["mock", "mock-embed", "mock-large"]
    for model in COMMONLY_CALLED:
        book = _book(Deployment(name="chat", provider="openai_compatible", model=model, api_base="http://x"))
        assert book.unknown == set(), model
        assert book.for_deployment("d0").cost_nano(Tokens(fresh_input=1_000, output=1_000)) > 0, model


@pytest.mark.parametrize(("model", "want"), [
    # 1k prompt (200 of it cached: no discount on these) x input + 2k completion (1.5k reasoning) x output
    ("o1-pro", 1_000 * 150_000 + 2_000 * 600_000),  # $150 / $600 a million
    ("o3-pro-2025-06-10", 1_000 * 20_000 + 2_000 * 80_000),  # $20 / $80
    ("gpt-5-pro-2025-10-06", 1_000 * 15_000 + 2_000 * 120_000),  # $15 / $120
])
def test_openais_pro_reasoning_models_bill_their_list_prices(model: str, want: int) -> None:
    """OpenAI's pro models list no cached-input rate, and bill reasoning as output; they cost $0 before."""
    book = _book(Deployment(name=model, provider="openai", api_base="http://x"))
    tokens = tokens_from_usage({"prompt_tokens": 1_000, "completion_tokens": 2_000,
                                "prompt_tokens_details": {"cached_tokens": 200},
                                "completion_tokens_details": {"reasoning_tokens": 1_500}})
    assert tokens is not None and tokens.cached_input == 200 and tokens.reasoning == 1_500
    assert book.for_deployment("d0").cost_nano(tokens) == want


def test_claude_3_opus_bills_its_list_and_cache_prices_under_every_spelling() -> None:
    """Claude Opus 3 (platform.claude.com pricing: $15 in, $18.75 5-minute and $30 1-hour writes, $1.50 reads,
    $75 out) was not in the table: under its dated, alias, Bedrock and Vertex ids every call cost $0."""
    usage = {"input_tokens": 100, "cache_read_input_tokens": 10_000, "cache_creation_input_tokens": 2_000,
             "cache_creation": {"ephemeral_5m_input_tokens": 1_000, "ephemeral_1h_input_tokens": 1_000},
             "output_tokens": 500}
    tokens = tokens_from_usage(usage)
    assert tokens is not None
    for model in ("claude-3-opus-20240229", "claude-3-opus-latest", "us.anthropic.claude-3-opus-20240229-v1:0"):
        book = _book(Deployment(name=model, provider="anthropic", api_base="http://x"))
        # 100 x $15 + 10k reads x $1.50 + 1k 5-minute writes x $18.75 + 1k 1-hour writes x $30 + 500 out x $75
        assert book.for_deployment("d0").cost_nano(tokens) == \
            1_500_000 + 15_000_000 + 18_750_000 + 30_000_000 + 37_500_000, model


@pytest.mark.parametrize(("model", "want"), [
    # 1M fresh input + 1M cached input (at the input price where none is listed) + 1M output, $ a million
    ("chatgpt-4o-latest", (5 + 5 + 15) * 10**9),
    ("gpt-5-chat-latest", 11_375_000_000), ("gpt-5-codex", 11_375_000_000),  # 1.25 + 0.125 + 10
    ("codex-mini-latest", 7_875_000_000),  # 1.50 + 0.375 + 6
    ("o1-mini-2024-09-12", 6_050_000_000),  # 1.10 + 0.55 + 4.40
    ("o1-preview-2024-09-12", 82_500_000_000),  # 15 + 7.50 + 60
    ("gpt-4.5-preview-2025-02-27", 262_500_000_000),  # 75 + 37.50 + 150
])
def test_openais_aliases_and_older_snapshots_bill_their_list_prices(model: str, want: int) -> None:
    """chatgpt-4o-latest ($5 / $15, not gpt-4o's $2.50 / $10) and these ids were not in the table: $0 a call."""
    book = _book(Deployment(name="chat", provider="openai", model=model, api_base="http://x"))
    assert book.unknown == set()
    assert book.for_deployment("d0").cost_nano(Tokens(fresh_input=10**6, cached_input=10**6, output=10**6)) == want
