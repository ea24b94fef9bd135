"""Each provider's usage shape becomes the same disjoint token counts (where peers misprice)."""

from __future__ import annotations

from aigw.accounting.usage import Tokens, canonical_usage, tokens_from_usage


def test_openai_chat_cached_tokens_are_inside_prompt_tokens_and_reasoning_inside_completion() -> None:
    usage = {"prompt_tokens": 2000, "completion_tokens": 900, "total_tokens": 2900,
             "prompt_tokens_details": {"cached_tokens": 1536, "audio_tokens": 0},
             "completion_tokens_details": {"reasoning_tokens": 640}}
    assert tokens_from_usage(usage) == Tokens(fresh_input=464, cached_input=1536, output=260, reasoning=640)


def test_canonical_usage_from_the_anthropic_adapter_keeps_cache_writes_apart() -> None:
    usage = {"prompt_tokens": 1300, "completion_tokens": 50,
             "prompt_tokens_details": {"cached_tokens": 1000, "cache_write_tokens": 200}}
    t = tokens_from_usage(usage)
    assert t == Tokens(fresh_input=100, cached_input=1000, cache_write=200, output=50)
    assert t is not None and t.prompt == 1300


def test_raw_anthropic_input_tokens_exclude_cache_reads_and_writes() -> None:
    usage = {"input_tokens": 100, "cache_read_input_tokens": 1000, "cache_creation_input_tokens": 200,
             "output_tokens": 50}
    assert tokens_from_usage(usage) == Tokens(fresh_input=100, cached_input=1000, cache_write=200, output=50)


def test_openai_responses_api_counts_cached_inside_input_tokens() -> None:
    usage = {"input_tokens": 1000, "input_tokens_details": {"cached_tokens": 800}, "output_tokens": 300,
             "output_tokens_details": {"reasoning_tokens": 200}}
    assert tokens_from_usage(usage) == Tokens(fresh_input=200, cached_input=800, output=100, reasoning=200)


def test_gemini_thoughts_are_billed_apart_from_candidates() -> None:
    usage = {"promptTokenCount": 1200, "cachedContentTokenCount": 1000, "candidatesTokenCount": 40,
             "thoughtsTokenCount": 300, "totalTokenCount": 1540}
    assert tokens_from_usage(usage) == Tokens(fresh_input=200, cached_input=1000, output=40, reasoning=300)


def test_bedrock_converse_cache_counts_are_outside_input_tokens() -> None:
    usage = {"inputTokens": 10, "outputTokens": 20, "cacheReadInputTokens": 500, "cacheWriteInputTokens": 70}
    assert tokens_from_usage(usage) == Tokens(fresh_input=10, cached_input=500, cache_write=70, output=20)


def test_deepseek_cache_hits_are_read_when_no_cached_tokens_detail() -> None:
    usage = {"prompt_tokens": 900, "completion_tokens": 10, "prompt_cache_hit_tokens": 800,
             "prompt_cache_miss_tokens": 100}
    assert tokens_from_usage(usage) == Tokens(fresh_input=100, cached_input=800, output=10)


def test_missing_or_inconsistent_usage_never_goes_negative() -> None:
    assert tokens_from_usage(None) is None and tokens_from_usage({}) is None
    odd = tokens_from_usage({"prompt_tokens": 5, "completion_tokens": 1,
                             "prompt_tokens_details": {"cached_tokens": 9},
                             "completion_tokens_details": {"reasoning_tokens": "x"}})
    assert odd == Tokens(cached_input=5, output=1)


def test_gemini_tool_use_prompt_tokens_are_billed_as_input() -> None:
    """toolUsePromptTokenCount (grounding, code execution results fed back) is input the model read:
    it is outside promptTokenCount and inside totalTokenCount."""
    usage = {"promptTokenCount": 100, "candidatesTokenCount": 20, "toolUsePromptTokenCount": 400,
             "thoughtsTokenCount": 30, "totalTokenCount": 550}
    t = tokens_from_usage(usage)
    assert t == Tokens(fresh_input=500, output=20, reasoning=30)
    assert t.total == usage["totalTokenCount"]


def test_anthropic_web_searches_are_counted_raw_and_through_canonical_usage() -> None:
    from aigw.providers.anthropic.translate_response import to_canonical_usage

    raw = {"input_tokens": 10, "output_tokens": 5, "server_tool_use": {"web_search_requests": 3,
                                                                      "web_fetch_requests": 1}}
    direct, canonical = tokens_from_usage(raw), tokens_from_usage(to_canonical_usage(raw))
    assert direct == canonical == Tokens(fresh_input=10, output=5, web_searches=3)
    assert tokens_from_usage({"input_tokens": 10, "output_tokens": 5}) == Tokens(fresh_input=10, output=5)


def test_thinking_counted_only_in_total_tokens_is_billed_as_output() -> None:
    """Gemini's OpenAI-compatible endpoint leaves thought tokens out of completion_tokens but counts them in
    total_tokens (Google bills them as output); xAI does the same and names them in reasoning_tokens."""
    gemini = {"prompt_tokens": 20, "completion_tokens": 151, "total_tokens": 553}
    assert tokens_from_usage(gemini) == Tokens(fresh_input=20, output=151, reasoning=382)
    xai = {"prompt_tokens": 40, "completion_tokens": 50, "total_tokens": 390,
           "prompt_tokens_details": {"cached_tokens": 30}, "completion_tokens_details": {"reasoning_tokens": 300}}
    assert tokens_from_usage(xai) == Tokens(fresh_input=10, cached_input=30, output=50, reasoning=300)
    openai = {"prompt_tokens": 40, "completion_tokens": 350, "total_tokens": 390,
              "completion_tokens_details": {"reasoning_tokens": 300}}
    assert tokens_from_usage(openai) == Tokens(fresh_input=40, output=50, reasoning=300)  # inside: billed once


def test_bedrock_one_hour_cache_writes_are_told_apart_by_their_ttl() -> None:
    """Bedrock Converse breaks cacheWriteInputTokens down by TTL in cacheDetails; one-hour writes cost more."""
    usage = {"inputTokens": 10, "outputTokens": 20, "cacheWriteInputTokens": 1500,
             "cacheDetails": [{"ttl": "1h", "inputTokens": 1000}, {"ttl": "5m", "inputTokens": 500}]}
    assert tokens_from_usage(usage) == Tokens(fresh_input=10, cache_write=1500, cache_write_1h=1000, output=20)


def test_a_usage_without_its_prompt_count_is_no_usage() -> None:
    """Some OpenAI-compatible servers and proxies send ``usage`` with null counts, or a completion count alone.
    Read as usage, such an answer was billed a prompt of 0 (all null: nothing at all), as reported by the
    provider; it is no usage, so the ledger counts the call locally as for a server that sends none."""
    assert tokens_from_usage({"prompt_tokens": None, "completion_tokens": None, "total_tokens": None}) is None
    assert tokens_from_usage({"completion_tokens": 5, "total_tokens": None}) is None
    assert tokens_from_usage({"prompt_tokens": None, "completion_tokens": 5,
                              "completion_tokens_details": {"reasoning_tokens": 2}}) is None
    # a count of 0 is a count (an embedding served locally, a prompt a server had cached whole)
    assert tokens_from_usage({"prompt_tokens": 0, "total_tokens": 0}) == Tokens()
    assert tokens_from_usage({"prompt_tokens": 7.0, "completion_tokens": 3}) == Tokens(fresh_input=7, output=3)


def test_openai_audio_tokens_are_told_apart_inside_prompt_and_completion() -> None:
    """gpt-audio and the gpt-4o audio models report audio tokens inside prompt_tokens and completion_tokens
    (``*_tokens_details.audio_tokens``); they are billed at their own, far higher, rates."""
    usage = {"prompt_tokens": 1000, "completion_tokens": 1000, "total_tokens": 2000,
             "prompt_tokens_details": {"audio_tokens": 900, "cached_tokens": 0, "text_tokens": 100},
             "completion_tokens_details": {"audio_tokens": 950, "reasoning_tokens": 0, "text_tokens": 50}}
    t = tokens_from_usage(usage)
    assert t == Tokens(fresh_input=1000, output=1000, audio_input=900, audio_output=950)
    assert t is not None and t.total == 2000  # sub-counts: not added again


def test_the_inference_geography_anthropic_reports_is_kept_raw_and_through_canonical_usage() -> None:
    """Anthropic names where a call ran in ``usage.inference_geo`` (``"us"`` bills US-only inference at 1.1x)."""
    from aigw.providers.anthropic.translate_response import to_canonical_usage

    raw = {"input_tokens": 10, "output_tokens": 5, "cache_read_input_tokens": 100, "inference_geo": "us"}
    assert tokens_from_usage(raw) == tokens_from_usage(to_canonical_usage(raw)) \
        == Tokens(fresh_input=10, cached_input=100, output=5, geo="us")
    assert tokens_from_usage({"input_tokens": 10, "output_tokens": 5, "inference_geo": "global"}) \
        == Tokens(fresh_input=10, output=5, geo="global")
    assert "inference_geo" not in to_canonical_usage({"input_tokens": 10, "output_tokens": 5})


def test_a_local_count_told_to_a_client_reads_back_as_the_same_counts() -> None:
    """What a client is told (a whole answer's or a stream's usage without the upstream's) is what is billed."""
    for t in (Tokens(fresh_input=12, output=30), Tokens(fresh_input=5, cached_input=7, cache_write=3, output=4,
                                                          reasoning=9)):
        assert tokens_from_usage(canonical_usage(t)) == t
    assert canonical_usage(Tokens(fresh_input=8), completion=False) == {"prompt_tokens": 8, "total_tokens": 8}
