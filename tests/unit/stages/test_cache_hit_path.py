"""The lean hit path: stored bytes sent as they are, unless something on the way out needs the body."""

from __future__ import annotations

import hashlib

import orjson

from aigw.pipeline.context import Completed, Prerendered, Principal, Replay, RequestContext, Streaming
from aigw.pipeline.pipeline import Pipeline
from aigw.pipeline.stage import Stage
from aigw.pipeline.stages.cache_entry import Decoded, body_of, decode, encode
from aigw.pipeline.stages.cache_keys import exact_key
from aigw.types import JSON
from tests.unit.stages.cache_harness import Harness

BODY: JSON = {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "mock",
              "choices": [{"index": 0, "message": {"role": "assistant", "content": "Paris."},
                           "finish_reason": "stop"}],
              "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}}


# -- the entry's layout ---------------------------------------------------------------------
def test_an_entry_carries_what_a_hit_needs_in_its_header_line() -> None:
    entry = decode(encode(BODY, 1234.5, "mock", "mock#0"))
    assert entry is not None
    assert (entry.at, entry.model, entry.deployment, entry.private) == (1234.5, "mock", "mock#0", False)
    assert entry.usage == BODY["usage"]
    assert entry.body is None  # not decoded on the way: the bytes are what a hit sends
    assert entry.raw == orjson.dumps(BODY)
    assert body_of(entry) == BODY


def test_a_repeated_hit_reuses_its_decoded_entry_but_never_shares_a_body() -> None:
    decoded = Decoded()
    stored = encode(BODY, 1.0, "mock", "mock#0")
    first = decoded(stored)
    assert first is not None and decoded(stored) is first  # the same bytes object: one dict lookup
    assert decoded(bytes(bytearray(stored))) is first  # equal bytes (a Redis read) find it too
    mine = body_of(first)
    assert mine is not None
    mine["choices"][0]["message"]["content"] = "changed by a stage"
    assert body_of(first) == BODY  # the next hit decodes its own


def test_the_decoded_entries_stay_within_their_byte_bound() -> None:
    decoded = Decoded(max_bytes=4096)
    for i in range(50):
        assert decoded(encode({**BODY, "id": f"chatcmpl-{i}"}, 1.0, "m", "d")) is not None
    assert decoded._held <= 4096
    assert decoded(b"not an entry") is None


def test_a_body_with_private_fields_is_flagged() -> None:
    entry = decode(encode({**BODY, "_anthropic": {"stop_sequence": "X"}}, 1.0, "m", "d"))
    assert entry is not None and entry.private


def test_entries_in_the_earlier_layout_are_still_read() -> None:
    entry = decode(orjson.dumps({"body": BODY, "at": 99.0, "model": "mock", "deployment": "mock#0"}))
    assert entry is not None
    assert (entry.at, entry.model, entry.deployment, entry.usage) == (99.0, "mock", "mock#0", BODY["usage"])
    assert entry.body == BODY and entry.raw == b""


def test_unreadable_entries_are_none() -> None:
    for value in (b"", b"not json", b"[1]\n{}", b'{"v":2}\n{}', b'{"v":2,"at":1,"model":"m","deployment":"d",'
                  b'"usage":null,"private":false}\n{"cut', b'{"body": 3}'):
        assert decode(value) is None, value


def test_exact_keys_did_not_change_with_the_one_call_hash() -> None:
    ctx = RequestContext(request_id="r", api="openai", endpoint="chat", model="mock",
                         body={"model": "mock", "messages": [{"role": "user", "content": "hi"}], "user": "u"},
                         principal=Principal(tenant_id="t1"))
    h = hashlib.blake2b(digest_size=16)
    for part in (b"t1", b"chat", b"mock", b'{"messages":[{"content":"hi","role":"user"}],"model":"mock"}'):
        h.update(part)
        h.update(b"\x00")
    tag = hashlib.blake2b(b"mock", digest_size=4).hexdigest()  # the model, in the clear for purges
    assert exact_key(ctx, "tenant") == f"t1:{tag}.{h.hexdigest()}"


# -- the stage and the pipeline ---------------------------------------------------------------
async def test_a_plain_hit_is_the_first_answers_bytes() -> None:
    h = Harness({"mode": "exact"})
    first = await h.ask("Capital of France?")
    ctx = RequestContext(request_id="r2", api="openai", endpoint="chat", model="mock",
                         body={"model": "mock", "messages": [{"role": "user", "content": "Capital of France?"}]},
                         principal=Principal(key_id="k1", tenant_id="t1"))
    result = await h.pipeline.run(ctx)
    assert isinstance(result, Prerendered) and result.raw == orjson.dumps(first.body)
    assert result.body == first.body
    assert ctx.response_headers["x-aigw-cache"] == "hit"
    assert ctx.response_headers["x-aigw-cache-match"] == "exact"
    assert ctx.response_headers["x-aigw-cache-age"] == "0"
    assert first.body is not None
    assert ctx.handled_by == "cache" and ctx.usage == first.body["usage"]
    assert ctx.state["cache_saved_usage"] == ctx.usage
    assert ctx.state["cache_hit"]["deployment"] == "mock#0"
    assert h.upstream.calls == 1


async def test_a_stream_hit_is_a_replay() -> None:
    h = Harness({"mode": "exact"})
    live = await h.ask("Stream it", stream=True)
    replayed = await h.ask("Stream it", stream=True)
    assert replayed.cache == "hit" and replayed.text == live.text
    ctx = RequestContext(request_id="r3", api="openai", endpoint="chat", model="mock", stream=True,
                         body={"model": "mock", "stream": True, "messages": [{"role": "user", "content": "Stream it"}]},
                         principal=Principal(key_id="k1", tenant_id="t1"))
    result = await h.pipeline.run(ctx)
    assert isinstance(result, Replay)
    chunks = [c async for c in result.chunks]
    assert chunks[-1]["usage"] == ctx.usage and chunks[-2]["choices"][0]["finish_reason"] == "stop"


async def test_an_entry_in_the_earlier_layout_is_served() -> None:
    h = Harness({"mode": "exact"})
    first = await h.ask("Old entry")
    key = next(iter(h.memory._items))
    await h.memory.set(key, orjson.dumps({"body": first.body, "at": h.clock.now(), "model": "mock",
                                          "deployment": "mock#0"}), 60)
    again = await h.ask("Old entry")
    assert again.cache == "hit" and again.body == first.body and h.upstream.calls == 1


class Stamp(Stage):
    """A stage before the cache that changes answers on the way out (as PII restoring does)."""

    name = "stamp"

    async def on_response(self, ctx: RequestContext, body: JSON) -> JSON:
        return {**body, "stamped": True}


async def test_a_stage_that_changes_the_body_still_sees_a_hit() -> None:
    h = Harness({"mode": "exact"})
    pipeline = Pipeline([Stamp(), h.stage], h.upstream)
    ctx = RequestContext(request_id="a", api="openai", endpoint="chat", model="mock",
                         body={"model": "mock", "messages": [{"role": "user", "content": "stamp me"}]},
                         principal=Principal(key_id="k1", tenant_id="t1"))
    first = await pipeline.run(ctx)
    await h.stage.flush()
    ctx2 = RequestContext(request_id="b", api="openai", endpoint="chat", model="mock",
                          body={"model": "mock", "messages": [{"role": "user", "content": "stamp me"}]},
                          principal=Principal(key_id="k1", tenant_id="t1"))
    second = await pipeline.run(ctx2)
    assert ctx2.response_headers["x-aigw-cache"] == "hit"
    assert isinstance(second, Completed) and not isinstance(second, Prerendered)
    assert second.body == first.body and second.body["stamped"] is True
    assert h.upstream.calls == 1


def test_setting_the_body_of_a_prerendered_answer_drops_its_bytes() -> None:
    answer = Prerendered(orjson.dumps(BODY))
    assert answer.body == BODY
    answer.body = {"changed": True}
    assert answer.raw is None and answer.body == {"changed": True}


async def test_a_replay_stays_a_replay_through_stream_hooks() -> None:
    class Tap(Stage):
        name = "tap"

        def on_stream(self, ctx, chunks):  # type: ignore[no-untyped-def]
            return chunks

    class Answer(Stage):
        name = "answer"

        async def on_request(self, ctx: RequestContext) -> Replay:
            async def one():  # type: ignore[no-untyped-def]
                yield {"choices": []}
            return Replay(one())

    ctx = RequestContext(request_id="r", api="openai", endpoint="chat", model="m", body={})
    result = await Pipeline([Tap(), Answer()], Harness({"mode": "exact"}).upstream).run(ctx)
    assert isinstance(result, Replay) and isinstance(result, Streaming)
