"""Edge validation of OpenAI-shaped requests, and the legacy completions translation."""

from __future__ import annotations

from typing import Any

import pytest

from aigw import errors
from aigw.schema import legacy
from aigw.schema.openai import last_user_text, validate_chat, validate_completion, validate_embeddings
from aigw.types import JSON


def test_a_valid_body_comes_back_unchanged_with_unknown_fields() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "vendor_extension": {"x": 1}}
    assert validate_chat(body) is body and body["vendor_extension"] == {"x": 1}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": [{"role": "user", "content": [{"type": "video"}]}]}, "messages[0].content"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "tools": [{"type": "function"}]},
         "tools[0].function"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "n": "two"}, "n"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": ["json_object"]}},
         "response_format.type"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {"type": {"a": 1}}},
         "response_format.type"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}], "response_format": {}}, "response_format.type"),
        ({"model": "m", "messages": [{"role": "user", "content": "x"}],
          "response_format": {"type": "json_schema", "json_schema": "x"}}, "response_format.json_schema"),
    ],
)
def test_invalid_bodies_name_the_field(body: dict[str, object], param: str) -> None:
    with pytest.raises(errors.InvalidRequest) as exc:
        validate_chat(body)
    assert exc.value.param is not None and exc.value.param.startswith(param)


ASK = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize("extra", [
    {"tools": [{"type": "custom", "custom": {"name": "shell"}}]},
    {"tools": [{"type": "custom", "custom": {"name": "shell", "description": "Run it.", "format": {"type": "text"}}}]},
    {"tools": [{"type": "custom", "custom": {"name": "sql", "format": {"type": "grammar", "grammar": {
        "definition": "start: /SELECT .+/", "syntax": "lark"}}}}],
     "tool_choice": {"type": "custom", "custom": {"name": "sql"}}},
    {"tools": [{"type": "custom", "custom": {"name": "n", "format": {"type": "grammar", "grammar": {
        "definition": "\\d+", "syntax": "regex"}}}}, {"type": "function", "function": {"name": "f"}}],
     "tool_choice": {"type": "allowed_tools", "allowed_tools": {"mode": "auto", "tools": [
         {"type": "custom", "custom": {"name": "n"}}]}}},
    {"messages": [*ASK, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "c", "type": "custom", "custom": {"name": "shell", "input": "ls -la"}},
        {"id": "d", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]},
], ids=["bare", "text", "lark", "regex-allowed", "calls"])
def test_custom_tools_and_their_calls_are_accepted_unchanged(extra: dict[str, object]) -> None:
    body = {"model": "m", "messages": ASK, **extra}
    assert validate_chat(body) is body


@pytest.mark.parametrize(("extra", "param", "says"), [
    ({"tools": [{"type": "custom", "custom": {}}]}, "tools[0].custom.name", "Missing required parameter"),
    ({"tools": [{"type": "custom", "custom": {"name": ""}}]}, "tools[0].custom.name", "at least 1"),
    ({"tools": [{"type": "custom"}]}, "tools[0].custom", "Missing required parameter"),
    ({"tools": [{"type": "custom", "custom": {"name": "x", "format": {"type": "json"}}}]},
     "tools[0].custom.format", "'text' or 'grammar'"),
    ({"tools": [{"type": "custom", "custom": {"name": "x", "format": {"type": "grammar"}}}]},
     "tools[0].custom.format.grammar", "Missing required parameter"),
    ({"tools": [{"type": "custom", "custom": {"name": "x", "format": {"type": "grammar", "grammar": {
        "definition": "a", "syntax": "pcre"}}}}]}, "tools[0].custom.format.grammar.syntax", "'lark' and 'regex'"),
    ({"tools": [{"type": "mystery"}]}, "tools[0]", "'function' or 'custom'"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "custom", "custom": {"name": "x"}}]}]}, "messages[1].tool_calls[0].custom.input",
     "Missing required parameter"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [
        {"id": "c", "type": "custom", "custom": {"name": "x", "input": ["a"]}}]}]},
     "messages[1].tool_calls[0].custom.input", "expected a string"),
])
def test_malformed_custom_tools_name_the_field(extra: dict[str, object], param: str, says: str) -> None:
    with pytest.raises(errors.InvalidRequest) as exc:
        validate_chat({"model": "m", "messages": ASK, **extra})
    assert exc.value.param == param and says in exc.value.message


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": "5"}, "max_tokens"),
        ({"n": True}, "n"),
        ({"temperature": True}, "temperature"),
        ({"temperature": "1"}, "temperature"),
        ({"logprobs": 0}, "logprobs"),
        ({"top_logprobs": True}, "top_logprobs"),
        ({"stream": 1}, "stream"),
        ({"stream": True, "stream_options": {"include_usage": "yes"}}, "stream_options.include_usage"),
        ({"reasoning_effort": ["high"]}, "reasoning_effort"),  # a list or an object was a 500 (unhashable)
        ({"reasoning_effort": {"effort": "high"}}, "reasoning_effort"),
        ({"reasoning_effort": 2}, "reasoning_effort"),
        ({"reasoning_effort": True}, "reasoning_effort"),
    ],
)
def test_json_types_are_strict_as_openai_checks_them(extra: dict[str, object], param: str) -> None:
    # the body goes upstream as sent: `true` is not read as 1, nor "5" as 5, only to fail there (or not at all)
    with pytest.raises(errors.InvalidRequest) as exc:
        validate_chat({"model": "m", "messages": [{"role": "user", "content": "x"}], **extra})
    assert exc.value.param == param


def test_whole_numbers_still_pass_as_numbers() -> None:
    validate_chat({"model": "m", "messages": [{"role": "user", "content": "x"}], "temperature": 1, "top_p": 1,
                   "presence_penalty": 0, "max_tokens": 5, "n": 1, "logprobs": True, "top_logprobs": 0,
                   "reasoning_effort": "xhigh"})  # an effort's value is the upstream's to judge
    validate_completion({"model": "m", "prompt": [[1, 2]], "max_tokens": 3, "temperature": 0})
    validate_embeddings({"model": "e", "input": [1, 2, 3], "dimensions": 3})
    with pytest.raises(errors.InvalidRequest):
        validate_embeddings({"model": "e", "input": "a", "dimensions": True})


def test_embeddings_and_completions_validation() -> None:
    validate_embeddings({"model": "e", "input": ["a"], "encoding_format": "base64"})
    with pytest.raises(errors.InvalidRequest):
        validate_embeddings({"model": "e", "input": []})
    with pytest.raises(errors.InvalidRequest):
        validate_embeddings({"model": "e", "input": "a", "encoding_format": "hex"})
    with pytest.raises(errors.InvalidRequest):
        validate_completion({"model": "m"})


@pytest.mark.parametrize(("extra", "param"), [
    ({"presence_penalty": 3}, "presence_penalty"), ({"frequency_penalty": -2.5}, "frequency_penalty"),
    ({"logprobs": 2.5}, "logprobs"), ({"logprobs": True}, "logprobs"), ({"logprobs": -1}, "logprobs"),
    ({"best_of": -1}, "best_of"), ({"best_of": "3"}, "best_of"), ({"seed": "x"}, "seed"), ({"user": 5}, "user"),
    ({"logit_bias": [1]}, "logit_bias"), ({"logit_bias": {"50256": "x"}}, "logit_bias.50256"),
    ({"logit_bias": {"50256": 101}}, "logit_bias.50256"),
])
def test_legacy_completion_fields_are_checked_as_openai_checks_them(extra: dict[str, object], param: str) -> None:
    # they went unchecked: `"best_of": "3"` slipped past the translation's refusal (a 200 of one choice), and a
    # penalty of 3 (a 400 on chat) reached a translated provider, which dropped it
    with pytest.raises(errors.InvalidRequest) as exc:
        validate_completion({"model": "m", "prompt": "hi", **extra})
    assert exc.value.param == param


def test_legacy_completion_fields_in_range_pass() -> None:
    validate_completion({"model": "m", "prompt": "hi", "presence_penalty": -2, "frequency_penalty": 2, "logprobs": 5,
                         "best_of": 20, "seed": 7, "user": "u", "logit_bias": {"50256": -100}})
    # what an OpenAI-compatible server (vLLM) takes beyond OpenAI's own bounds is its to judge
    validate_completion({"model": "m", "prompt": "hi", "logprobs": 20, "best_of": 32, "logit_bias": {"1": 2.5}})


@pytest.mark.parametrize("options", ["x", 1, []])
def test_completion_stream_options_must_be_an_object(options: object) -> None:
    # the HTTP layer reads stream_options as an object when streaming: anything else was a 500 there
    with pytest.raises(errors.InvalidRequest) as exc:
        validate_completion({"model": "m", "prompt": "hi", "stream": True, "stream_options": options})
    assert exc.value.param is not None and exc.value.param.startswith("stream_options")
    validate_completion({"model": "m", "prompt": "hi", "stream": True, "stream_options": {"include_usage": True}})


def test_last_user_text_reads_text_parts() -> None:
    parts = [{"type": "text", "text": "What is the capital"}, {"type": "image_url", "image_url": {"url": "x"}},
             {"type": "text", "text": "of Peru?"}]
    body = {"messages": [{"role": "user", "content": "first"}, {"role": "assistant", "content": "a"},
                         {"role": "user", "content": parts}]}
    assert last_user_text(body) == "What is the capital\nof Peru?"  # separate pieces: not "capitalof"


def test_completion_prompt_becomes_one_user_message_and_back() -> None:
    chat = legacy.completion_to_chat({"model": "m", "prompt": "Say hi", "max_tokens": 5, "echo": False})
    assert chat == {"model": "m", "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 5}
    resp = legacy.chat_to_completion({"id": "chatcmpl-1", "created": 1, "model": "m", "choices": [
        {"index": 0, "message": {"content": "hi"}, "finish_reason": "stop"}], "usage": {"total_tokens": 3}})
    assert resp["object"] == "text_completion" and resp["choices"][0]["text"] == "hi" and resp["id"] == "cmpl-1"


def test_batched_prompts_cannot_be_translated() -> None:
    with pytest.raises(errors.InvalidRequest):
        legacy.completion_to_chat({"model": "m", "prompt": ["a", "b"]})


@pytest.mark.parametrize(("extra", "param"), [
    ({"echo": True}, "echo"), ({"suffix": "END"}, "suffix"), ({"logprobs": 2}, "logprobs"),
    ({"logprobs": 0}, "logprobs"), ({"best_of": 3}, "best_of"), ({"n": 2, "best_of": 3}, "best_of"),
    ({"max_tokens": 0}, "max_tokens"),  # a chat call makes at least one token: the mock answered in full
])
def test_legacy_fields_a_chat_call_cannot_honour_are_refused_not_dropped(extra: dict[str, object], param: str) -> None:
    # they were dropped: the client got a 200 without the echoed prompt, the suffix or the logprobs it asked for
    with pytest.raises(errors.InvalidRequest) as err:
        legacy.completion_to_chat({"model": "m", "prompt": "Say hi", **extra})
    assert err.value.param == param


@pytest.mark.parametrize("extra", [{"echo": False}, {"suffix": ""}, {"suffix": None}, {"logprobs": None},
                                   {"best_of": 1}, {"n": 2, "best_of": 2}])
def test_legacy_fields_at_their_defaults_still_translate(extra: dict[str, object]) -> None:
    assert legacy.completion_to_chat({"model": "m", "prompt": "Say hi", **extra})["messages"][0]["content"] == "Say hi"


@pytest.mark.parametrize("value", ["", [""], ["a", ""], [[]], [[1], []]],
                         ids=["empty-string", "list-of-empty", "one-empty", "empty-tokens", "one-empty-tokens"])
def test_embeddings_input_without_text_is_refused_as_openai_does(value: object) -> None:
    # OpenAI answers 400 for an empty string or token array; a mock or local embedder would embed nothing
    with pytest.raises(errors.InvalidRequest) as info:
        validate_embeddings({"model": "e", "input": value})
    assert info.value.param == "input"


@pytest.mark.parametrize("value", [None, 5, [1, "a"], [1.5], {"a": 1}])
def test_embeddings_input_of_a_wrong_type_names_input(value: object) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        validate_embeddings({"model": "e", "input": value})
    assert info.value.param == "input" and "input.str" not in str(info.value)


@pytest.mark.parametrize(("extra", "param", "says"), [
    ({"stop": 5}, "stop", "expected a string or an array, but got an integer instead"),
    ({"stop": [1]}, "stop[0]", "expected a string"),
    ({"tool_choice": 1}, "tool_choice", "expected a string or an object"),
    ({"messages": [{"role": "user", "content": 5}]}, "messages[0].content", "expected a string or an array"),
    ({"messages": [{"role": "user", "content": [{"type": "bogus"}]}]}, "messages[0].content[0]", "'text'"),
    ({"messages": [{"role": "user", "content": [{"type": "text"}]}]}, "messages[0].content[0].text",
     "Missing required parameter"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, "messages[0].content[0].image_url",
     "Missing required parameter"),
])
def test_a_field_of_several_types_is_named_as_the_client_wrote_it(extra: dict[str, object], param: str,
                                                                  says: str) -> None:
    # pydantic's union branches leaked into the param ("stop.str", "messages.0.content.0.text.text") and a bad
    # content part was reported as "Input should be a valid string" (the first branch), not what was wrong in it
    with pytest.raises(errors.InvalidRequest) as exc:
        validate_chat({"model": "m", "messages": ASK, **extra})
    assert exc.value.param == param and says in exc.value.message, exc.value.message


@pytest.mark.parametrize(("check", "body", "said"), [
    (validate_chat, {"model": "m", "messages": ASK, "n": "2"},
     "Invalid type for 'n': expected an integer, but got a string instead."),
    (validate_chat, {"model": "m", "messages": ASK, "temperature": "hot"},
     "Invalid type for 'temperature': expected a decimal, but got a string instead."),
    (validate_chat, {"model": "m", "messages": ASK, "max_tokens": 1.5},
     "Invalid type for 'max_tokens': expected an integer, but got a decimal number instead."),
    (validate_chat, {"model": "m", "messages": ASK, "stream": True, "stream_options": 5},
     "Invalid type for 'stream_options': expected an object, but got an integer instead."),
    (validate_embeddings, {"model": "e", "input": "a", "dimensions": "4"},
     "Invalid type for 'dimensions': expected an integer, but got a string instead."),
    (validate_completion, {"model": "m", "prompt": "hi", "echo": "yes"},
     "Invalid type for 'echo': expected a boolean, but got a string instead."),
])
def test_a_value_of_the_wrong_type_is_told_in_openais_words(check: Any, body: JSON, said: str) -> None:
    # pydantic's words went out ("Input should be a valid dictionary or instance of StreamOptions": our class)
    with pytest.raises(errors.InvalidRequest) as exc:
        check(body)
    assert (exc.value.message, exc.value.code) == (said, "invalid_type")


@pytest.mark.parametrize(("check", "body", "said", "code"), [
    (validate_chat, {"model": "m", "messages": ASK, "temperature": 3},
     "Invalid 'temperature': decimal above maximum value. Expected a value <= 2, but got 3 instead.",
     "decimal_above_max_value"),
    (validate_chat, {"model": "m", "messages": ASK, "max_tokens": 0},
     "Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got 0 instead.",
     "integer_below_min_value"),
    (validate_chat, {"model": "m", "messages": []},
     "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty array instead.",
     "empty_array"),
    (validate_embeddings, {"model": "e", "input": "a", "dimensions": 0},
     "Invalid 'dimensions': integer below minimum value. Expected a value >= 1, but got 0 instead.",
     "integer_below_min_value"),
    (validate_completion, {"model": "m", "prompt": "hi", "presence_penalty": -2.5},
     "Invalid 'presence_penalty': decimal below minimum value. Expected a value >= -2, but got -2.5 instead.",
     "decimal_below_min_value"),
])
def test_a_value_out_of_range_is_told_in_openais_words(check: Any, body: JSON, said: str, code: str) -> None:
    # pydantic's words went out ("Invalid value for 'temperature': Input should be less than or equal to 2")
    with pytest.raises(errors.InvalidRequest) as exc:
        check(body)
    assert (exc.value.message, exc.value.code) == (said, code)


@pytest.mark.parametrize(("body", "param"), [
    ({"messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role"),
    ({"messages": [*ASK, {"role": "tool", "content": "12:00"}]}, "messages[1].tool_call_id"),
    ({"messages": [*ASK, {"role": "user"}]}, "messages[1].content"),
    ({"messages": ASK, "stop": ["a", 1]}, "stop[1]"),
    ({"messages": ASK, "tools": [{"type": "function", "function": {"name": ""}}]}, "tools[0].function.name"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}, "messages[0].content[0].text"),
])
def test_an_array_item_is_named_as_openai_names_it(body: JSON, param: str) -> None:
    # OpenAI's param indexes arrays with brackets ("messages[0].role"); ours read "messages.0.role"
    with pytest.raises(errors.InvalidRequest) as exc:
        validate_chat({"model": "m", **body})
    assert exc.value.param == param


@pytest.mark.parametrize(("check", "body", "param", "said"), [
    (validate_chat, {"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "messages[0].role",
     "Invalid value: 'robot'. Supported values are: 'system', 'developer', 'user', 'assistant', 'tool', and "
     "'function'."),
    (validate_embeddings, {"model": "e", "input": "a", "encoding_format": "hex"}, "encoding_format",
     "Invalid value: 'hex'. Supported values are: 'float' and 'base64'."),
])
def test_a_value_not_among_the_supported_ones_is_told_in_openais_words(check: Any, body: JSON, param: str,
                                                                      said: str) -> None:
    with pytest.raises(errors.InvalidRequest) as exc:
        check(body)
    assert (exc.value.param, exc.value.message, exc.value.code) == (param, said, "invalid_value")


def test_an_unsupported_value_is_quoted_short() -> None:
    # the value goes back to the client: a long one (a prompt sent in the wrong field) is cut, not echoed whole
    with pytest.raises(errors.InvalidRequest) as exc:
        validate_embeddings({"model": "e", "input": "a", "encoding_format": "x" * 10_000})
    assert len(exc.value.message) < 200 and exc.value.message.startswith("Invalid value: 'xxx")


def test_a_completion_prompt_of_a_wrong_type_names_prompt() -> None:
    with pytest.raises(errors.InvalidRequest) as exc:
        validate_completion({"model": "m", "prompt": 5})
    assert exc.value.param == "prompt" and exc.value.code == "invalid_type"
    with pytest.raises(errors.InvalidRequest) as exc:  # a list item that is none of the types a list may hold
        validate_completion({"model": "m", "prompt": [1.5]})
    assert exc.value.param == "prompt[0]"
    said = "expected one of a string, an integer, or an array, but got a decimal number instead."
    assert exc.value.message.endswith(said), exc.value.message


@pytest.mark.parametrize(("check", "body", "param"), [
    (validate_chat, {"messages": ASK}, "model"),
    (validate_chat, {"model": "m"}, "messages"),
    (validate_completion, {"model": "m"}, "prompt"),
    (validate_embeddings, {"model": "e"}, "input"),
])
def test_a_missing_field_is_said_to_be_missing_as_openai_says_it(check: Any, body: JSON, param: str) -> None:
    # it read "Invalid value for 'messages': Field required": there was no value to be invalid
    with pytest.raises(errors.InvalidRequest) as exc:
        check(body)
    assert (exc.value.param, exc.value.code) == (param, "missing_required_parameter")
    assert exc.value.message == f"Missing required parameter: '{param}'."


def test_completion_stream_options_without_stream_are_refused_as_for_chat() -> None:
    # OpenAI refuses them on both endpoints; the chat check did, the completions one let them through
    for stream in (None, False):
        with pytest.raises(errors.InvalidRequest) as exc:
            validate_completion({"model": "m", "prompt": "hi", "stream": stream, "stream_options": {}})
        assert exc.value.param == "stream_options"


@pytest.mark.parametrize("choice", ["required", "auto", "none", {"type": "function", "function": {"name": "f"}}])
def test_tool_choice_without_tools_is_refused_as_openai_refuses_it(choice: object) -> None:
    # only the Anthropic translation refused it: the mock (and a lenient server) answered text to "required"
    for tools in ({}, {"tools": []}):
        with pytest.raises(errors.InvalidRequest) as exc:
            validate_chat({"model": "m", "messages": ASK, "tool_choice": choice, **tools})
        assert exc.value.param == "tool_choice" and "only allowed when 'tools' are specified" in exc.value.message
    tool = {"type": "function", "function": {"name": "f"}}
    validate_chat({"model": "m", "messages": ASK, "tool_choice": choice, "tools": [tool]})
    validate_chat({"model": "m", "messages": ASK, "tool_choice": None})


@pytest.mark.parametrize(("message", "param", "code"), [
    ({"role": "user"}, "messages[1].content", "missing_required_parameter"),
    ({"role": "system", "content": None}, "messages[1].content", "invalid_type"),
    ({"role": "developer"}, "messages[1].content", "missing_required_parameter"),
    ({"role": "tool", "content": "12:00"}, "messages[1].tool_call_id", "missing_required_parameter"),
    ({"role": "tool", "tool_call_id": "c1"}, "messages[1].content", "missing_required_parameter"),
])
def test_a_message_missing_what_its_role_needs_is_refused_as_openai_does(message: JSON, param: str,
                                                                         code: str) -> None:
    # they passed: the mock answered a message with no text, Anthropic was sent a tool result for no call
    with pytest.raises(errors.InvalidRequest) as exc:
        validate_chat({"model": "m", "messages": [*ASK, message]})
    assert (exc.value.param, exc.value.code) == (param, code)


def test_an_assistant_message_may_have_no_content() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    validate_chat({"model": "m", "messages": [*ASK, {"role": "assistant", "content": None, "tool_calls": [call]},
                                              {"role": "tool", "tool_call_id": "c1", "content": "ok"}]})
