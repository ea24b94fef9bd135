"""The legacy functions API rewritten to tools for an Anthropic deployment, and answers back (pure)."""

from __future__ import annotations

from typing import Any

from aigw.providers.anthropic.legacy_functions import (
    chunk_as_function_call,
    functions_as_tools,
    response_as_function_call,
    uses_functions,
)
from aigw.providers.anthropic.translate import to_anthropic_request

FN = {"name": "f", "parameters": {"type": "object"}}


def test_each_function_result_pairs_with_the_call_before_it() -> None:
    call = {"name": "f", "arguments": "{}"}
    rounds = [[{"role": "assistant", "content": None, "function_call": call},
               {"role": "function", "name": "f", "content": str(n)}] for n in (1, 2)]
    body: Any = {"model": "x", "functions": [FN], "function_call": {"name": "f"},
                 "messages": [{"role": "user", "content": "a"}, *rounds[0], *rounds[1]]}
    assert uses_functions(body) and not uses_functions({**body, "tools": [{"type": "function", "function": FN}]})
    req = to_anthropic_request(functions_as_tools(body), "m")
    turns = req["messages"]
    assert [b["id"] for b in turns[1]["content"]] == ["call_fn1"]
    assert [b["id"] for b in turns[3]["content"]] == ["call_fn3"]
    assert turns[2]["content"][0]["tool_use_id"] == "call_fn1" and turns[4]["content"][0]["tool_use_id"] == "call_fn3"
    assert req["tool_choice"] == {"type": "tool", "name": "f", "disable_parallel_tool_use": True}
    assert "functions" not in req and "function_call" not in str(req)


def test_answers_come_back_as_function_call() -> None:
    fn = {"name": "f", "arguments": '{"a": 1}'}
    resp: Any = {"choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
        "role": "assistant", "content": None, "tool_calls": [{"id": "t", "type": "function", "function": fn}]}}]}
    message = response_as_function_call(resp)["choices"][0]
    assert message["finish_reason"] == "function_call" and message["message"]["function_call"] == fn
    assert "tool_calls" not in message["message"]
    chunk: Any = {"choices": [{"index": 0, "finish_reason": None,
                               "delta": {"tool_calls": [{"index": 0, "function": {"arguments": "{}"}}]}}]}
    assert chunk_as_function_call(chunk)["choices"][0]["delta"] == {"function_call": {"arguments": "{}"}}
