"""Local token counts: a shipped tokenizer, no network; the reservation estimate errs high."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from aigw.accounting.tokens import TokenCounter, estimate_text, upper_estimate


def test_the_tokenizer_loads_without_any_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the tokenizer tried to reach the network")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    counter = TokenCounter()
    assert counter.exact
    assert counter.count_text("hello world") == 2  # cl100k_base
    assert counter.count_text("The quick brown fox jumps over the lazy dog.") == 10


def test_chat_prompts_count_openai_message_framing() -> None:
    counter = TokenCounter()
    messages = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "hello world"}]
    content = counter.count_text("You are terse.") + counter.count_text("hello world")
    assert counter.count_messages(messages) == content + 2 * 3 + 3


@pytest.mark.parametrize("text", [
    "The quick brown fox jumps over the lazy dog. " * 20,
    "def f(x):\n    return {'a': [1, 2, 3], 'b': x ** 2}\n" * 10,
    "東京は日本の首都です。" * 20,
])
def test_the_reservation_estimate_is_never_below_the_real_count(text: str) -> None:
    body = {"messages": [{"role": "user", "content": text}]}
    assert upper_estimate(body) >= TokenCounter().count_messages(body["messages"])


def test_the_fallback_estimator_is_calibrated_for_latin_and_cjk() -> None:
    counter = TokenCounter()
    english = "Budgets are reserved before a call and settled after it, per key and tenant. " * 10
    assert abs(estimate_text(english) - counter.count_text(english)) / counter.count_text(english) < 0.3
    assert estimate_text("東京は日本の首都です") == 10


@pytest.mark.parametrize("body", [
    {"input": list(range(12_000, 12_100))},  # one token array of 100 ids
    {"input": [list(range(22_000, 22_060)), list(range(100, 140))]},  # two token arrays, 100 ids in all
    {"prompt": list(range(32_000, 32_100))},  # legacy completions take them too
    {"prompt": [list(range(42_000, 42_100))]},
])
def test_a_token_array_counts_one_token_per_id(body: dict[str, Any]) -> None:
    # counted as the decimal text of its ids (or of the list), 100 ids came to 200-400 tokens: a prompt that
    # fits a tpm cap was refused for good as "too large", and a reply without usage was overcharged
    assert TokenCounter().count_prompt(body) == 100
    assert 100 <= upper_estimate(body) <= 100 + 3  # exact, plus the reply priming


def test_strings_beside_token_arrays_still_count_as_text() -> None:
    counter = TokenCounter()
    assert counter.count_prompt({"input": ["hello world", "hello world"]}) == 4
    assert counter.count_prompt({"input": "hello world"}) == 2
    assert upper_estimate({"input": ["hello world"] * 2}) >= 4


CUSTOM_TOOL = {"type": "custom", "custom": {
    "name": "run_sql", "description": "Run one read-only SQL query.",
    "format": {"type": "grammar", "grammar": {"syntax": "lark",
                                              "definition": 'start: "SELECT " /[a-z_, ]+/ " FROM " /[a-z_]+/'}}}}


def test_custom_tool_definitions_count_in_the_prompt() -> None:
    counter = TokenCounter()
    messages = [{"role": "user", "content": "how many users?"}]
    bare = counter.count_prompt({"messages": messages})
    with_tool = counter.count_prompt({"messages": messages, "tools": [CUSTOM_TOOL]})
    spec = CUSTOM_TOOL["custom"]
    grammar = spec["format"]["grammar"]["definition"]  # type: ignore[index]
    assert with_tool - bare >= counter.count_text(grammar) + counter.count_text(spec["description"])  # type: ignore[arg-type]


def test_custom_tool_call_inputs_count_like_function_arguments() -> None:
    counter = TokenCounter()
    sql = "SELECT count(*) FROM users WHERE created_at > now() - interval '7 days'"
    call = {"id": "call_1", "type": "custom", "custom": {"name": "run_sql", "input": sql}}
    plain = [{"role": "user", "content": "q"}, {"role": "assistant", "content": None}]
    called = [{"role": "user", "content": "q"}, {"role": "assistant", "content": None, "tool_calls": [call]}]
    assert counter.count_messages(called) - counter.count_messages(plain) == (
        counter.count_text("run_sql") + counter.count_text(sql))
    body = {"messages": called, "tools": [CUSTOM_TOOL]}
    assert upper_estimate(body) >= counter.count_prompt(body)  # the reservation still errs high


def test_an_answer_with_a_custom_tool_call_counts_its_input() -> None:
    from aigw.accounting.tokens import answer_text

    call = {"id": "c", "type": "custom", "custom": {"name": "shell", "input": "ls -la /tmp"}}
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "tool_calls": [call]}}]}
    assert answer_text(body) == ("ls -la /tmp", "")


def test_a_legacy_completions_suffix_counts_in_the_prompt() -> None:
    # insert mode: the upstream reads (and bills) the text after the gap as prompt; it counted for nothing, so a
    # long suffix went past tpm and the budget's reservation, and a call without usage was billed the prompt alone
    counter = TokenCounter()
    suffix = "def helper(x):\n    return x * 2\n" * 40
    bare = {"prompt": "def main():\n", "max_tokens": 16}
    body = {**bare, "suffix": suffix}
    assert counter.count_prompt(body) == counter.count_prompt(bare) + counter.count_text(suffix)
    assert upper_estimate(body) >= counter.count_prompt(body)
    assert upper_estimate(body) - upper_estimate(bare) >= counter.count_text(suffix)
    assert counter.count_prompt({**bare, "suffix": None}) == counter.count_prompt(bare)  # null: no suffix


def test_an_answer_that_refuses_counts_its_refusal() -> None:
    from aigw.accounting.tokens import answer_text

    # OpenAI bills a refusal as completion tokens: a reply without usage was billed no output for it
    refusal = "I'm sorry, but I can't help with that request."
    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "refusal": refusal}}]}
    assert answer_text(body) == (refusal, "")


@pytest.mark.parametrize("assistant", [
    {"role": "assistant", "content": [{"type": "refusal", "refusal": "REFUSAL"}]},  # a refusal content part
    {"role": "assistant", "content": None, "refusal": "REFUSAL"},  # the message's own refusal field
])
def test_a_refusal_in_the_history_counts_in_the_prompt(assistant: dict[str, Any]) -> None:
    # sent on (and billed) as the assistant turn's text, it counted for nothing: a long one went past tpm
    # and the budget's reservation, and a call without usage was billed less than the upstream charged
    counter = TokenCounter()
    refusal = "I can't help with writing that, but here is what I can do instead. " * 50
    assistant = {k: (v.replace("REFUSAL", refusal) if isinstance(v, str) else v) for k, v in assistant.items()}
    if isinstance(assistant["content"], list):
        assistant["content"] = [{"type": "refusal", "refusal": refusal}]
    user = {"role": "user", "content": "write it"}
    bare = {"messages": [user, {"role": "assistant", "content": None}, user]}
    body = {"messages": [user, assistant, user]}
    assert counter.count_prompt(body) - counter.count_prompt(bare) == counter.count_text(refusal)
    assert upper_estimate(body) - upper_estimate(bare) >= counter.count_text(refusal)


def test_a_response_formats_schema_counts_in_the_local_count() -> None:
    # the reservation counts it (the model reads the schema, the upstream bills it) but the local count did not:
    # a call without usage was billed less, and a prompt the tokenizer counts for tpm came out short
    counter = TokenCounter()
    schema = {"type": "object", "properties": {f"field_{i}": {"type": "string", "description": "a field of the "
                                                              "answer the model must fill in"} for i in range(40)}}
    fmt = {"type": "json_schema", "json_schema": {"name": "answer", "strict": True, "schema": schema}}
    bare = {"messages": [{"role": "user", "content": "fill it in"}]}
    body = {**bare, "response_format": fmt}
    added = counter.count_prompt(body) - counter.count_prompt(bare)
    assert added >= counter.count_text(json.dumps(schema, separators=(",", ":")))
    assert upper_estimate(body) >= counter.count_prompt(body)
    assert counter.count_prompt({**bare, "response_format": {"type": "json_object"}}) == counter.count_prompt(bare)


LEGACY_CALL = {"name": "lookup_orders", "arguments": '{"customer": "c_123", "since": "2026-01-01", "status": "open"}'}


def test_a_legacy_function_call_in_the_history_counts_in_the_prompt() -> None:
    # the functions API (``functions``, already counted) answers with ``function_call``, sent back in the history
    counter = TokenCounter()
    user = {"role": "user", "content": "my orders?"}
    bare = {"messages": [user, {"role": "assistant", "content": None}]}
    body = {"messages": [user, {"role": "assistant", "content": None, "function_call": LEGACY_CALL}]}
    added = counter.count_text(LEGACY_CALL["name"]) + counter.count_text(LEGACY_CALL["arguments"])
    assert counter.count_prompt(body) - counter.count_prompt(bare) == added
    assert upper_estimate(body) - upper_estimate(bare) >= added


def test_an_answer_with_a_legacy_function_call_counts_its_arguments() -> None:
    from aigw.accounting.tokens import answer_text

    body = {"choices": [{"index": 0, "message": {"role": "assistant", "content": None, "function_call": LEGACY_CALL}}]}
    assert answer_text(body) == (LEGACY_CALL["arguments"], "")


@pytest.mark.parametrize("field", ["reasoning_content", "reasoning"])
def test_an_answers_reasoning_counts_under_either_name(field: str) -> None:
    from aigw.accounting.tokens import answer_text

    # OpenRouter, Groq and newer vLLM name it ``reasoning`` (billed as output): it counted for nothing
    message = {"role": "assistant", "content": "42", field: "Six times seven."}
    assert answer_text({"choices": [{"index": 0, "message": message}]}) == ("42", "Six times seven.")
    both = {**message, "reasoning_content": "Six times seven.", "reasoning": "Six times seven."}
    assert answer_text({"choices": [{"index": 0, "message": both}]}) == ("42", "Six times seven.")  # once


def test_a_participants_name_counts_in_the_reservation_estimate() -> None:
    # the local count bills it (as OpenAI does): the estimate, which must never be below it, left it out
    counter = TokenCounter()
    body = {"messages": [{"role": "user", "name": "Quartermaster_Ferdinand_von_Zeppelin_Hohenlohe_Ingelfingen",
                          "content": "hi"}]}
    assert upper_estimate(body) >= counter.count_prompt(body)
