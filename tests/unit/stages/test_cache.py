"""The cache stage as a client sees it: hit or miss, controls, scope, streams, accounting."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from aigw import errors
from aigw.errors import GuardrailBlocked
from aigw.pipeline.context import Completed, RequestContext, Result, Streaming
from aigw.stores.cache_memory import MemoryCacheStore
from aigw.types import JSON, SystemClock
from tests.unit.stages.cache_harness import Harness
from tests.unit.stages.guardrail_harness import Harness as Guarded
from tests.unit.stages.guardrail_harness import chat, config


async def test_second_identical_request_is_a_hit_and_never_reaches_upstream() -> None:
    h = Harness({"mode": "exact"})
    first = await h.ask()
    second = await h.ask()
    assert (first.cache, second.cache) == ("miss", "hit")
    assert second.body == first.body
    assert h.upstream.calls == 1
    assert second.ctx.response_headers["x-aigw-cache-match"] == "exact"


async def test_a_hit_is_accounted_as_free_with_the_saved_usage() -> None:
    h = Harness({"mode": "exact"})
    first = await h.ask()
    second = await h.ask()
    assert second.ctx.handled_by == "cache"
    assert second.ctx.usage == first.body["usage"]  # type: ignore[index]
    assert second.ctx.state["cache_saved_usage"] == first.body["usage"]  # type: ignore[index]
    assert second.ctx.state["cache_hit"]["deployment"] == "mock#0"
    assert first.ctx.handled_by == "" and first.ctx.state["cache_result"] == "miss"


class NoUsage:
    """The harness's upstream, but reporting no usage (an Ollama-like server streaming without stream_options)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    async def handle(self, ctx: RequestContext) -> Result:
        result = await self.inner.handle(ctx)
        if isinstance(result, Completed):
            return Completed({k: v for k, v in result.body.items() if k != "usage"})
        return Streaming(_without_usage(result.chunks))


async def _without_usage(chunks: AsyncIterator[JSON]) -> AsyncIterator[JSON]:
    async for chunk in chunks:
        if chunk.get("choices"):
            yield {k: v for k, v in chunk.items() if k != "usage"}


@pytest.mark.parametrize("stream", [False, True])
async def test_a_hit_on_an_answer_that_reported_no_usage_still_prices_the_saving(stream: bool) -> None:
    h = Harness({"mode": "exact"})
    h.pipeline.terminal = NoUsage(h.upstream)
    first = await h.ask("Tell me a story about a lighthouse", stream=stream)
    assert first.ctx.usage is None
    second = await h.ask("Tell me a story about a lighthouse")
    assert second.cache == "hit" and second.body is not None and "usage" not in second.body  # the body as it came
    usage = second.ctx.usage
    assert usage is not None and usage["prompt_tokens"] > 5 and usage["completion_tokens"] > 0  # counted here


async def test_answer_shaping_fields_split_the_key_and_transport_fields_do_not() -> None:
    h = Harness({"mode": "exact"})
    await h.ask(extra={"temperature": 0.2})
    assert (await h.ask(extra={"temperature": 0.7})).cache == "miss"
    assert (await h.ask(extra={"temperature": 0.2, "seed": 7})).cache == "miss"
    assert (await h.ask(extra={"temperature": 0.2, "user": "someone-else"})).cache == "hit"
    assert (await h.ask(model="other", extra={"temperature": 0.2})).cache == "miss"


async def test_tenants_never_share_entries() -> None:
    h = Harness({"mode": "exact"})
    await h.ask(tenant="acme")
    assert (await h.ask(tenant="globex")).cache == "miss"
    assert (await h.ask(tenant="acme")).cache == "hit"
    assert h.upstream.calls == 2


async def test_key_scope_keeps_keys_of_one_tenant_apart() -> None:
    h = Harness({"mode": "exact", "scope": "key"})
    await h.ask(key="k1")
    assert (await h.ask(key="k2")).cache == "miss"
    assert (await h.ask(key="k1")).cache == "hit"
    shared = Harness({"mode": "exact"})  # default scope: the tenant's keys share
    await shared.ask(key="k1")
    assert (await shared.ask(key="k2")).cache == "hit"


async def test_ttl_expiry_and_per_request_ttl() -> None:
    h = Harness({"mode": "exact", "ttl_s": 60})
    await h.ask("a")
    await h.ask("b", headers={"x-aigw-cache": "ttl=5"})
    h.clock.t += 10
    assert (await h.ask("a")).cache == "hit"
    assert (await h.ask("b")).cache == "miss"
    h.clock.t += 61
    assert (await h.ask("a")).cache == "miss"


async def test_per_request_ttl_is_capped_by_max_ttl() -> None:
    h = Harness({"mode": "exact", "max_ttl_s": 100})
    await h.ask(extra={"cache": {"ttl_s": 100000}})
    h.clock.t += 101
    assert (await h.ask()).cache == "miss"


async def test_no_store_is_honoured_from_header_and_body() -> None:
    h = Harness({"mode": "exact"})
    await h.ask("a", headers={"x-aigw-cache": "no-store"})
    await h.ask("b", extra={"cache": {"no_store": True}})
    assert (await h.ask("a")).cache == "miss"
    assert (await h.ask("b")).cache == "miss"
    assert h.upstream.calls == 4


async def test_no_cache_skips_the_lookup_but_refreshes_the_entry() -> None:
    h = Harness({"mode": "exact"})
    await h.ask()
    fresh = await h.ask(headers={"x-aigw-cache": "no-cache"})
    assert fresh.cache == "miss" and h.upstream.calls == 2
    assert (await h.ask()).cache == "hit"


async def test_the_body_cache_object_cannot_undo_the_header() -> None:
    h = Harness({"mode": "exact"})
    await h.ask("a", headers={"x-aigw-cache": "no-store"}, extra={"cache": {"no_store": False}})
    assert (await h.ask("a")).cache == "miss"  # not stored: the header's no-store held
    again = await h.ask("a", headers={"x-aigw-cache": "no-cache"}, extra={"cache": {"no_cache": False}})
    assert again.cache == "miss" and h.upstream.calls == 3  # not looked up: the header's no-cache held
    await h.ask("b", headers={"x-aigw-cache": "ttl=5"}, extra={"cache": {"ttl_s": 600}})
    h.clock.t += 10
    assert (await h.ask("b")).cache == "miss"  # the shorter TTL held


async def test_the_body_cache_object_never_goes_upstream_or_into_the_key() -> None:
    h = Harness({"mode": "exact"})
    first = await h.ask(extra={"cache": {"ttl_s": 30}})
    assert "cache" not in first.ctx.body
    assert (await h.ask()).cache == "hit"


@pytest.mark.parametrize(("headers", "extra"), [
    ({"x-aigw-cache": "forever"}, None),
    ({"x-aigw-cache": "ttl=soon"}, None),
    (None, {"cache": {"ttl_s": -1}}),
    (None, {"cache": {"no_store": "yes"}}),
    (None, {"cache": {"colour": "blue"}}),
    (None, {"cache": 5}),
])
async def test_bad_controls_are_a_clear_400(headers: dict[str, str] | None, extra: dict | None) -> None:
    h = Harness({"mode": "exact"})
    with pytest.raises(errors.InvalidRequest) as info:
        await h.ask(headers=headers, extra=extra)
    assert "cache" in info.value.message and h.upstream.calls == 0


async def test_mode_off_per_model_and_per_key() -> None:
    h = Harness({"mode": "exact"}, routing={"other": {"cache": {"mode": "off"}}})
    await h.ask(model="other")
    assert (await h.ask(model="other")).cache is None
    await h.ask(principal_extra={"cache": {"mode": "off"}})
    assert (await h.ask(principal_extra={"cache": {"mode": "off"}})).cache is None
    assert h.upstream.calls == 4


async def test_per_model_ttl_and_per_key_override() -> None:
    h = Harness({"mode": "exact", "ttl_s": 1000}, routing={"other": {"cache": {"ttl_s": 10}}})
    await h.ask(model="other")
    await h.ask(principal_extra={"cache": {"ttl_s": 20}})
    await h.ask("plain")
    h.clock.t += 30
    assert (await h.ask(model="other")).cache == "miss"
    assert (await h.ask(principal_extra={"cache": {"ttl_s": 20}})).cache == "miss"
    assert (await h.ask("plain")).cache == "hit"


async def test_a_key_may_switch_the_cache_on_when_the_global_block_is_off() -> None:
    h = Harness({"mode": "off"})
    assert (await h.ask()).cache is None
    on = {"cache": {"mode": "exact"}}
    await h.ask(principal_extra=on)
    assert (await h.ask(principal_extra=on)).cache == "hit"


async def test_an_invalid_key_setting_is_ignored_not_fatal() -> None:
    h = Harness({"mode": "exact"})
    bad = {"cache": {"mode": "sometimes", "max_bytes": 5}}
    assert (await h.ask(principal_extra=bad)).cache == "miss"
    assert (await h.ask(principal_extra=bad)).cache == "hit"
    no_such_store = {"cache": {"backend": "redis"}}  # valid, but this gateway has no Redis
    answer = await h.ask(principal_extra=no_such_store)
    assert answer.cache is None and answer.body is not None


async def test_stream_is_stored_once_complete_and_replayed_as_a_stream() -> None:
    h = Harness({"mode": "exact"})
    live = await h.ask(stream=True)
    replayed = await h.ask(stream=True)
    assert (live.cache, replayed.cache) == ("miss", "hit")
    assert replayed.text == live.text and replayed.text.startswith("Mock answer to:")
    assert replayed.chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in replayed.chunks if c["choices"]][-1] == "stop"
    assert replayed.chunks[-1]["usage"] == live.chunks[-1]["usage"]
    plain = await h.ask()
    assert plain.cache == "hit" and plain.text == live.text  # one entry serves both kinds
    assert h.upstream.calls == 1


async def test_a_stream_cut_midway_is_never_stored() -> None:
    h = Harness({"mode": "exact"})
    h.upstream.cut_after = 3
    cut = await h.ask(stream=True)
    assert cut.ctx.error is not None
    h.upstream.cut_after = None
    assert (await h.ask(stream=True)).cache == "miss"
    assert h.stage.stats.not_stored == 1


_HEAD = {"id": "c1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": ""}}
# chunks of shapes the assembler cannot read, which clients and the rest of the gateway pass on
_ODD_STREAMS = {
    "a null choice index": [{**_HEAD, "choices": [{"index": None, "delta": {"role": "assistant", "content": "hi"}}]},
                            {**_HEAD, "choices": [{"index": None, "delta": {}, "finish_reason": "stop"}]}],
    "a null tool call index": [
        {**_HEAD, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [{**_CALL, "index": None}]}}]},
        {**_HEAD, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}],
    "arguments as an object": [
        {**_HEAD, "choices": [{"index": 0, "delta": {"role": "assistant", "tool_calls": [{**_CALL, "index": 0}]}}]},
        {**_HEAD, "choices": [{"index": 0, "delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": {"a": 1}}}]}}]},
        {**_HEAD, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}],
    "content as a list of parts": [  # Mistral's reasoning models
        {**_HEAD, "choices": [{"index": 0, "delta": {"role": "assistant",
                                                     "content": [{"type": "text", "text": "hi"}]}}]},
        {**_HEAD, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}],
}


@pytest.mark.parametrize("kind", list(_ODD_STREAMS))
async def test_a_stream_the_cache_cannot_read_still_reaches_the_client_whole(kind: str) -> None:
    h = Harness({"mode": "exact"})

    async def odd(body: JSON, call: Any) -> AsyncIterator[JSON]:
        for chunk in _ODD_STREAMS[kind]:
            yield chunk

    h.upstream.provider.stream_chat = odd  # type: ignore[method-assign]
    answer = await h.ask(stream=True)
    assert answer.ctx.error is None and answer.chunks == _ODD_STREAMS[kind]
    assert h.stage.stats.stores + h.stage.stats.not_stored == 1  # stored or not, never a broken stream


async def test_a_stream_the_client_abandoned_is_never_stored() -> None:
    h = Harness({"mode": "exact"})
    ctx_answer = await h.ask("warm-up")  # something unrelated in the cache
    assert ctx_answer.cache == "miss"
    from aigw.pipeline.context import Principal, RequestContext
    body = {"model": "mock", "messages": [{"role": "user", "content": "long one"}], "stream": True,
            "stream_options": {"include_usage": True}}
    ctx = RequestContext(request_id="r", api="openai", endpoint="chat", body=body, model="mock", stream=True,
                         principal=Principal(key_id="k1", tenant_id="t1"))
    result = await h.pipeline.run(ctx)
    chunks = result.chunks  # type: ignore[union-attr]
    await anext(chunks)
    await chunks.aclose()  # type: ignore[attr-defined]
    await h.stage.flush()
    assert (await h.ask("long one", stream=True)).cache == "miss"
    assert h.stage.stats.not_stored == 1


async def test_tool_call_answers_replay_with_their_arguments() -> None:
    h = Harness({"mode": "exact"})
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
    live = await h.ask("weather in Paris?", extra={"tools": tools}, stream=True)
    again = await h.ask("weather in Paris?", extra={"tools": tools})
    assert again.cache == "hit"
    call = again.body["choices"][0]["message"]["tool_calls"][0]  # type: ignore[index]
    args = "".join(c["choices"][0]["delta"]["tool_calls"][0]["function"].get("arguments", "")
                   for c in live.chunks if c["choices"] and c["choices"][0]["delta"].get("tool_calls"))
    assert call["function"] == {"name": "get_weather", "arguments": args}
    assert again.body["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]


async def test_embeddings_are_cached_too() -> None:
    h = Harness({"mode": "exact"})
    first = await h.ask("embed me", endpoint="embeddings")
    second = await h.ask("embed me", endpoint="embeddings")
    assert (first.cache, second.cache) == ("miss", "hit")
    assert second.body == first.body and h.upstream.calls == 1
    assert (await h.ask("embed me", endpoint="embeddings", extra={"dimensions": 8})).cache == "miss"


async def test_an_answer_a_key_let_through_is_not_served_to_keys_whose_output_checks_block_it() -> None:
    # a hit skips the output checks: an answer one key's metadata let through (content: flag) must not
    # reach a key of the same tenant under the configured checks (content: block) from the cache
    cfg = config({"output": {"content": "block", "blocklist": ["forbidden"]}}, cache={"mode": "exact"})
    store = MemoryCacheStore(100, 1_000_000, SystemClock())
    h = Guarded(cfg, services={"cache_stores": {"memory": store}}, stages=["cache", "output"])
    h.upstream.script = ["a forbidden answer", "a forbidden answer"]
    lax = h.ctx(chat("tell me"), extra={"guardrails": {"output": {"content": "flag"}}})
    assert (await h.run(lax))["choices"][0]["message"]["content"] == "a forbidden answer"
    assert lax.response_headers["x-aigw-cache"] == "miss"
    strict = h.ctx(chat("tell me"))
    with pytest.raises(GuardrailBlocked):
        await h.run(strict)
    assert strict.response_headers["x-aigw-cache"] == "miss" and len(h.upstream.bodies) == 2
    again = h.ctx(chat("tell me"), extra={"guardrails": {"output": {"content": "flag"}}})
    await h.run(again)  # the same checks as the first: still shared
    assert again.response_headers["x-aigw-cache"] == "hit" and len(h.upstream.bodies) == 2
