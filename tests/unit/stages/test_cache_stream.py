"""Streams and stored bodies: assembled once finished, replayed as a well-formed chunk sequence."""

from __future__ import annotations

from aigw.pipeline.stages.cache_stream import StreamAssembler, storable
from aigw.schema.replay import replay_chunks
from aigw.types import JSON

HEAD: JSON = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 5, "model": "m"}


def chunk(delta: JSON, finish: str | None = None, index: int = 0) -> JSON:
    return {**HEAD, "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}]}


def assemble(chunks: list[JSON]) -> JSON | None:
    a = StreamAssembler()
    for c in chunks:
        a.feed(c)
    return a.body()


def test_text_stream_becomes_a_completion_and_back() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    body = assemble([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hel"}), chunk({"content": "lo"}),
                     chunk({}, "stop"), {**HEAD, "choices": [], "usage": usage}])
    assert body is not None
    assert body["object"] == "chat.completion" and body["usage"] == usage
    assert body["choices"] == [{"index": 0, "message": {"role": "assistant", "content": "Hello", "refusal": None},
                                "logprobs": None, "finish_reason": "stop"}]
    again = assemble(replay_chunks(body))
    assert again == body


def test_tool_calls_and_several_choices_survive_the_round_trip() -> None:
    chunks = [
        chunk({"role": "assistant", "content": ""}, index=0),
        chunk({"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                               "function": {"name": "f", "arguments": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\":"}}]}),
        chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}),
        chunk({"content": "other"}, index=1),
        chunk({}, "tool_calls"),
        chunk({}, "stop", index=1),
    ]
    body = assemble(chunks)
    assert body is not None
    call = body["choices"][0]["message"]["tool_calls"][0]
    assert call == {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
    assert body["choices"][0]["message"]["content"] is None
    assert body["choices"][1]["message"]["content"] == "other"
    assert assemble(replay_chunks(body)) == body


def test_a_legacy_function_call_survives_the_round_trip() -> None:
    body = assemble([chunk({"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": ""}}),
                     chunk({"function_call": {"arguments": "{\"a\":"}}), chunk({"function_call": {"arguments": "1}"}}),
                     chunk({}, "function_call")])
    assert body is not None and storable(body)
    message = body["choices"][0]["message"]
    assert message["function_call"] == {"name": "f", "arguments": "{\"a\":1}"} and message["content"] is None
    replayed = replay_chunks(body)
    assert [c["choices"][0]["delta"].get("function_call") for c in replayed] == [
        None, {"name": "f", "arguments": "{\"a\":1}"}, None]
    assert replayed[0]["choices"][0]["delta"]["content"] is None  # as a live stream of a call begins
    assert assemble(replayed) == body


def test_fields_the_assembler_does_not_know_are_carried_through_both_ways() -> None:
    citation = {"type": "url_citation", "url_citation": {"start_index": 0, "end_index": 2, "url": "https://x.test"}}
    body = assemble([chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"}),
                     chunk({"annotations": [citation]}),
                     chunk({"audio": {"id": "audio_1", "transcript": "Hi"}}),
                     chunk({"audio": {"id": "audio_1", "data": "AAA", "transcript": " there"}}),
                     chunk({"audio": {"data": "BBB", "expires_at": 99}}), chunk({}, "stop")])
    assert body is not None
    message = body["choices"][0]["message"]
    assert message["annotations"] == [citation]
    assert message["audio"] == {"id": "audio_1", "transcript": "Hi there", "data": "AAABBB", "expires_at": 99}
    replayed = replay_chunks(body)
    assert {"annotations": [citation], "audio": message["audio"]} in [c["choices"][0]["delta"] for c in replayed]
    assert assemble(replayed) == body
    plain: JSON = {**HEAD, "object": "chat.completion", "choices": [{"index": 0, "finish_reason": "stop", "message": {
        "role": "assistant", "content": "x", "refusal": None, "annotations": []}}]}
    assert all("annotations" not in c["choices"][0]["delta"] for c in replay_chunks(plain))  # nothing to say


def test_content_is_null_when_the_stream_sent_none_as_a_plain_answer_has_it() -> None:
    refusal = assemble([chunk({"role": "assistant", "content": "", "refusal": None}), chunk({"refusal": "No."}),
                        chunk({}, "stop")])
    assert refusal is not None
    assert refusal["choices"][0]["message"] == {"role": "assistant", "content": None, "refusal": "No."}
    assert assemble(replay_chunks(refusal)) == refusal
    silent = assemble([chunk({"role": "assistant"}), chunk({}, "length")])
    assert silent is not None and silent["choices"][0]["message"]["content"] is None
    empty = assemble([chunk({"role": "assistant", "content": ""}), chunk({}, "stop")])
    assert empty is not None and empty["choices"][0]["message"]["content"] == ""  # an empty answer stays one


def test_unfinished_stream_gives_nothing_to_store() -> None:
    assert assemble([chunk({"content": "Hel"})]) is None
    assert assemble([chunk({"content": "a"}, "stop"), chunk({"content": "b"}, index=1)]) is None
    assert assemble([]) is None


def test_anthropic_thinking_signatures_are_not_stored_but_stop_reasons_replay() -> None:
    assert assemble([chunk({"reasoning_content": "hmm"}), chunk({"_anthropic": {"signature": "s"}}),
                     chunk({}, "stop")]) is None
    final = {**chunk({}, "stop"), "_anthropic": {"stop_reason": "stop_sequence", "stop_sequence": "END"}}
    body = assemble([chunk({"content": "x"}), final])
    assert body is not None and body["_anthropic"]["stop_reason"] == "stop_sequence"
    replayed = replay_chunks(body)
    assert replayed[-1]["_anthropic"]["stop_sequence"] == "END"


def test_storable_only_finished_answers() -> None:
    ok: JSON = {"choices": [{"finish_reason": "stop", "message": {}}]}
    assert storable(ok)
    assert not storable({"choices": [{"finish_reason": "content_filter"}]})
    assert not storable({"choices": []})
    assert not storable({**ok, "_anthropic": {"thinking": [{"type": "thinking"}]}})


def _completion_chunk(index: int, text: str, finish: str | None = None) -> JSON:
    return {"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m",
            "choices": [{"index": index, "text": text, "logprobs": None, "finish_reason": finish}]}


def test_a_legacy_completion_stream_is_assembled_and_replayed_as_the_same_answer() -> None:
    live = [_completion_chunk(0, "Once "), _completion_chunk(1, "Twice "), _completion_chunk(0, "upon"),
            _completion_chunk(1, "more", "length"), _completion_chunk(0, "", "stop"),
            {"id": "cmpl-1", "object": "text_completion", "created": 7, "model": "m", "choices": [],
             "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}}]
    assembler = StreamAssembler(completion=True)
    for chunk in live:
        assembler.feed(chunk)
    body = assembler.body()
    assert body is not None and body["object"] == "text_completion"
    assert [(c["text"], c["finish_reason"]) for c in body["choices"]] == [("Once upon", "stop"),
                                                                         ("Twice more", "length")]
    assert storable(body)
    again = StreamAssembler(completion=True)
    replayed = replay_chunks(body)
    assert all(c["object"] == "text_completion" for c in replayed) and replayed[-1]["usage"]["total_tokens"] == 7
    for chunk in replayed:
        again.feed(chunk)
    assert again.body() == body


def test_a_cut_legacy_completion_stream_is_not_an_answer() -> None:
    assembler = StreamAssembler(completion=True)
    assembler.feed(_completion_chunk(0, "Once upon"))
    assert assembler.body() is None


def test_a_live_streams_message_start_usage_is_not_stored() -> None:
    """The first chunk of an Anthropic upstream's stream carries its message_start counts (for Anthropic
    clients); the stored body has the final usage instead, and no private part made of them alone."""
    usage = {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    first = {**chunk({"role": "assistant", "content": ""}), "_anthropic": {"start_usage": {"prompt_tokens": 3}}}
    body = assemble([first, chunk({"content": "Hi"}, "stop"), {**HEAD, "choices": [], "usage": usage}])
    assert body is not None and "_anthropic" not in body and body["usage"] == usage


def test_a_custom_tool_call_stream_is_stored_and_replayed_intact() -> None:
    sql = "SELECT name FROM users WHERE id = 7"
    chunks = [
        chunk({"role": "assistant", "content": None}),
        chunk({"tool_calls": [{"index": 0, "id": "call_sql", "type": "custom",
                               "custom": {"name": "run_sql", "input": ""}}]}),
        chunk({"tool_calls": [{"index": 0, "custom": {"input": sql[:12]}}]}),
        chunk({"tool_calls": [{"index": 0, "custom": {"input": sql[12:]}}]}),
        chunk({"tool_calls": [{"index": 1, "id": "call_f", "type": "function",
                               "function": {"name": "f", "arguments": "{}"}}]}),
        chunk({}, "tool_calls"),
    ]
    body = assemble(chunks)
    assert body is not None and storable(body)
    message = body["choices"][0]["message"]
    assert message["tool_calls"] == [
        {"id": "call_sql", "type": "custom", "custom": {"name": "run_sql", "input": sql}},
        {"id": "call_f", "type": "function", "function": {"name": "f", "arguments": "{}"}},
    ]
    assert message["content"] is None
    replayed = replay_chunks(body)
    whole = {"index": 0, "id": "call_sql", "type": "custom", "custom": {"name": "run_sql", "input": sql}}
    assert {"tool_calls": [whole]} in [c["choices"][0]["delta"] for c in replayed]
    assert assemble(replayed) == body


def test_logprobs_are_joined_over_the_chunks_even_after_a_null_list() -> None:
    def token(text: str) -> JSON:
        return {"token": text, "logprob": -0.1, "bytes": list(text.encode()), "top_logprobs": []}

    def with_logprobs(delta: JSON, logprobs: JSON | None, finish: str | None = None) -> JSON:
        return {**HEAD, "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}]}

    body = assemble([
        with_logprobs({"role": "assistant", "content": ""}, {"content": None, "refusal": None}),  # a role chunk
        with_logprobs({"content": "Hel"}, {"content": [token("Hel")], "refusal": None}),
        with_logprobs({"content": "lo"}, {"content": [token("lo")], "refusal": None}),
        with_logprobs({}, None, "stop"),
    ])
    assert body is not None
    assert body["choices"][0]["logprobs"] == {"content": [token("Hel"), token("lo")], "refusal": None}


def test_the_service_tier_and_fingerprint_of_a_stream_are_kept_and_replayed() -> None:
    head = {**HEAD, "service_tier": "default", "system_fingerprint": "fp_1"}  # on every live chunk (OpenAI)
    deltas = (({"role": "assistant", "content": ""}, None), ({"content": "Hi"}, None), ({}, "stop"))
    chunks = [{**head, "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]}
              for delta, finish in deltas]
    body = assemble(chunks)
    assert body is not None
    assert (body.get("service_tier"), body.get("system_fingerprint")) == ("default", "fp_1")  # as the plain answer
    assert all(c["service_tier"] == "default" and c["system_fingerprint"] == "fp_1" for c in replay_chunks(body))
