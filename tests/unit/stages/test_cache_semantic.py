"""Semantic mode in the stage: similar last questions share an answer, but only when safe."""

from __future__ import annotations

import pytest

from aigw.schema.anthropic import messages_request_to_canonical
from aigw.types import JSON
from tests.unit.stages.cache_harness import FakeEmbedder, Harness

BASE = "What is the capital of France?"
CLOSE = "Which city is France's capital?"
FAR = "Tell me about French cheese."
SEMANTIC = {"mode": "semantic", "semantic": {"threshold": 0.92, "embedding_model": "fake-embed"}}
TOOLS = [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object", "properties": {}}}}]


def harness(**semantic: object) -> Harness:
    embedder = FakeEmbedder()
    embedder.at_similarity(CLOSE, BASE, 0.95)
    embedder.at_similarity(FAR, BASE, 0.85)
    cache = {**SEMANTIC, "semantic": {**SEMANTIC["semantic"], **semantic}}  # type: ignore[dict-item]
    return Harness(cache, embedder=embedder)


async def test_similar_question_above_threshold_is_a_semantic_hit() -> None:
    h = harness()
    first = await h.ask(BASE)
    hit = await h.ask(CLOSE)
    assert (first.cache, hit.cache) == ("miss", "hit")
    assert hit.ctx.response_headers["x-aigw-cache-match"] == "semantic"
    assert hit.ctx.response_headers["x-aigw-cache-similarity"] == "0.9500"
    assert hit.text == first.text and h.upstream.calls == 1
    assert hit.ctx.state["cache_result"] == "semantic_hit"
    assert hit.ctx.state["cache_hit"]["similarity"] == 0.95


async def test_below_threshold_is_a_miss() -> None:
    h = harness()
    await h.ask(BASE)
    assert (await h.ask(FAR)).cache == "miss"
    assert h.upstream.calls == 2


async def test_threshold_comes_from_config() -> None:
    h = harness(threshold=0.96)
    await h.ask(BASE)
    assert (await h.ask(CLOSE)).cache == "miss"


async def test_no_semantic_hit_when_tools_are_offered_unless_config_allows() -> None:
    h = harness()
    await h.ask(BASE, extra={"tools": TOOLS})
    assert (await h.ask(CLOSE, extra={"tools": TOOLS})).cache == "miss"
    allowed = harness(with_tools=True)
    await allowed.ask(BASE, extra={"tools": TOOLS})
    assert (await allowed.ask(CLOSE, extra={"tools": TOOLS})).cache == "hit"


async def test_no_semantic_hit_after_tool_results() -> None:
    h = harness()

    def convo(last: str) -> list[JSON]:
        return [{"role": "user", "content": "weather?"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": "{}"}}]},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
                {"role": "user", "content": last}]
    await h.ask(messages=convo(BASE))
    assert (await h.ask(messages=convo(CLOSE))).cache == "miss"
    assert h.embedder.calls == 0  # not even embedded


async def test_long_conversations_match_exactly_only() -> None:
    h = harness(max_turns=2)

    def convo(last: str) -> list[JSON]:
        return [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "and?"}, {"role": "assistant", "content": "yes"},
                {"role": "user", "content": last}]
    await h.ask(messages=convo(BASE))
    assert (await h.ask(messages=convo(CLOSE))).cache == "miss"
    assert (await h.ask(messages=convo(BASE))).cache == "hit"  # exact still works


async def test_everything_but_the_last_turn_must_match() -> None:
    h = harness()
    await h.ask(messages=[{"role": "system", "content": "Answer in French."}, {"role": "user", "content": BASE}])
    other_system = [{"role": "system", "content": "Answer in German."}, {"role": "user", "content": CLOSE}]
    assert (await h.ask(messages=other_system)).cache == "miss"
    assert (await h.ask(CLOSE, extra={"temperature": 1.5})).cache == "miss"


async def test_semantic_matches_never_cross_tenants() -> None:
    h = harness()
    await h.ask(BASE, tenant="acme")
    assert (await h.ask(CLOSE, tenant="globex")).cache == "miss"
    assert (await h.ask(CLOSE, tenant="acme")).cache == "hit"


async def test_request_can_ask_for_exact_matching_only() -> None:
    h = harness()
    await h.ask(BASE)
    assert (await h.ask(CLOSE, extra={"cache": {"semantic": False}})).cache == "miss"


async def test_slow_embedder_means_a_plain_miss() -> None:
    h = harness(embed_timeout_ms=20)
    h.embedder.delay_s = 1.0
    answer = await h.ask(BASE)
    assert answer.cache == "miss" and answer.body is not None
    assert h.stage.stats.embed_errors == 1
    h.embedder.delay_s = 0
    assert (await h.ask(BASE)).cache == "hit"  # the exact entry was still stored


async def test_a_streamed_semantic_hit_replays_as_a_stream() -> None:
    h = harness()
    await h.ask(BASE)
    replay = await h.ask(CLOSE, stream=True)
    assert replay.cache == "hit" and replay.text.startswith("Mock answer to: " + BASE)


async def test_an_embedding_deployment_gives_unit_vectors_through_the_router() -> None:
    import numpy as np

    from aigw.config.models import Deployment
    from aigw.pipeline.stages.cache_semantic import Embedders
    from aigw.providers.mock import MockProvider
    from aigw.routing.router import Router, Target

    d = Deployment(name="mock-embed", provider="mock", modes=["embeddings"], id="e#0")
    embedders = Embedders({}, Router([Target(d, MockProvider(d))]))
    assert embedders.check("mock-embed") == ""
    embedder = embedders.get("mock-embed")
    assert embedder is not None
    a, b, c = [await embedder.embed(t) for t in ("same", "same", "different")]
    assert abs(float(np.linalg.norm(a)) - 1) < 1e-5
    assert float(a @ b) > 0.9999 and float(a @ c) < 0.99
    assert embedders.get("no-such-model") is None


WEB_SEARCH = {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
MCP = {"type": "url", "url": "https://mcp.example.com/sse", "name": "example"}


@pytest.mark.parametrize("anthropic_fields", [
    {"tools": [WEB_SEARCH]},
    {"tools": [WEB_SEARCH], "tool_choice": {"type": "any"}},
    {"mcp_servers": [MCP]},
    {"container": "container_011CZ"},
], ids=["server-tool", "server-tool-choice", "mcp-servers", "container"])
async def test_no_semantic_hit_for_anthropic_server_tools_or_mcp_servers(anthropic_fields: JSON) -> None:
    def extra(text: str) -> JSON:  # the canonical body the /v1/messages endpoint makes of such a request
        body = messages_request_to_canonical({"model": "mock", "max_tokens": 64, **anthropic_fields,
                                              "messages": [{"role": "user", "content": text}]})
        return {k: v for k, v in body.items() if k not in ("model", "messages")}

    h = harness()
    await h.ask(BASE, extra=extra(BASE))
    assert (await h.ask(CLOSE, extra=extra(CLOSE))).cache == "miss"
    assert h.upstream.calls == 2
    assert (await h.ask(BASE, extra=extra(BASE))).cache == "hit"  # exact matches still served


async def test_a_last_turn_of_only_whitespace_matches_exactly_only() -> None:
    # every whitespace-only text embeds to the same vector (no tokens): they must not share answers
    h = harness()
    h.embedder.vectors["   "] = h.embedder.vectors["\n\t"] = h.embedder.vectors[BASE]
    await h.ask("   ")
    answer = await h.ask("\n\t")
    assert answer.cache == "miss" and h.upstream.calls == 2
    assert h.embedder.calls == 0


async def test_a_text_the_embedder_cannot_embed_is_a_plain_miss_not_an_error() -> None:
    class Refusing(FakeEmbedder):
        async def embed(self, text: str) -> None:  # type: ignore[override]
            self.calls += 1
            return None

    h = Harness(SEMANTIC, embedder=Refusing())
    first, second = await h.ask(BASE), await h.ask(CLOSE)
    assert (first.cache, second.cache) == ("miss", "miss") and h.embedder.calls == 2
    assert second.ctx.state["cache_result"] == "miss" and h.stage.stats.embed_errors == 0
    assert (await h.stage.health())[0] == "ok"
    assert (await h.ask(BASE)).cache == "hit"  # still stored for exact matches


async def test_a_text_the_embedding_deployment_refuses_does_not_turn_semantic_matching_off() -> None:
    import numpy as np

    from aigw import errors
    from aigw.pipeline.stages.cache_semantic import DeploymentEmbedder
    from aigw.routing.attempts import Served

    vectors = {BASE: [1.0, 0.0, 0.0], CLOSE: [0.95, 0.31, 0.0], "x " * 5000: [0.0, 0.0, 1.0]}

    class Router:  # an embedding deployment with a context window: a long text is a 400, not an outage
        async def complete(self, request: object) -> tuple[JSON, Served]:
            text = request.body["input"][0]  # type: ignore[attr-defined]
            if len(text) > 1000:
                raise errors.ContextLengthExceeded("maximum context length is 8192 tokens")
            return {"data": [{"embedding": np.asarray(vectors[text])}]}, Served(model="emb")

    h = Harness(SEMANTIC, embedder=DeploymentEmbedder(Router(), "emb"))  # type: ignore[arg-type]
    assert (await h.ask(BASE)).cache == "miss"
    assert (await h.ask("x " * 5000)).ctx.state["cache_result"] == "miss"  # one client's long prompt
    close = await h.ask(CLOSE)  # everyone else's paraphrase still matches
    assert close.cache == "hit" and close.ctx.response_headers["x-aigw-cache-match"] == "semantic"
    assert h.stage.stats.embed_errors == 0 and (await h.stage.health())[0] == "ok"


@pytest.mark.parametrize("odd", [[0.0, 0.0, 0.0], [1e309, 0.0, 0.0]], ids=["zero", "infinite"])
async def test_a_vector_that_cannot_be_compared_is_a_miss_for_that_text_only(odd: list[float]) -> None:
    # the deployment answered, but with a vector no cosine can be taken of: all zeros, or a value past what a
    # float holds (inf / inf: a NaN unit vector, which was stored in the index). A fact about that text, as a text the
    # deployment refuses: the zero vector used to count as an embedder failure, which turned semantic
    # matching off for every tenant for retry_after_s
    import numpy as np

    from aigw.pipeline.stages.cache_semantic import DeploymentEmbedder
    from aigw.routing.attempts import Served

    vectors = {BASE: [1.0, 0.0, 0.0], CLOSE: [0.95, 0.31, 0.0], "odd one": odd}

    class Router:
        async def complete(self, request: object) -> tuple[JSON, Served]:
            text = request.body["input"][0]  # type: ignore[attr-defined]
            return {"data": [{"embedding": np.asarray(vectors[text])}]}, Served(model="emb")

    h = Harness(SEMANTIC, embedder=DeploymentEmbedder(Router(), "emb"))  # type: ignore[arg-type]
    assert (await h.ask(BASE)).cache == "miss"
    odd_one = await h.ask("odd one")
    assert odd_one.ctx.state["cache_result"] == "miss"
    assert h.stage.indexes["memory"].size == 1  # BASE's vector only: nothing stored for it
    close = await h.ask(CLOSE)
    assert close.cache == "hit" and close.ctx.response_headers["x-aigw-cache-match"] == "semantic"
    assert h.stage.stats.embed_errors == 0 and (await h.stage.health())[0] == "ok"
    assert (await h.ask("odd one")).cache == "hit"  # stored for exact matches


async def test_questions_that_differ_in_a_literal_never_share_an_answer() -> None:
    # the local model scores these 0.99: no threshold keeps them apart, their numbers do
    order, other_order = "What is the status of order 1234?", "What is the status of order 1235?"
    h = harness()
    h.embedder.at_similarity(other_order, order, 0.99)
    h.embedder.at_similarity("Tell me the status of order 1234", order, 0.95)
    assert (await h.ask(order)).cache == "miss"
    assert (await h.ask(other_order)).cache == "miss"
    assert h.upstream.calls == 2
    assert (await h.ask("Tell me the status of order 1234")).cache == "hit"  # same literal: still a paraphrase


async def test_a_negated_question_never_gets_the_plain_questions_answer() -> None:
    safe, unsafe = "Is it safe to eat raw eggs?", "Is it not safe to eat raw eggs?"
    h = harness()
    h.embedder.at_similarity(unsafe, safe, 0.99)  # what the local model scores
    await h.ask(safe)
    assert (await h.ask(unsafe)).cache == "miss"


async def test_the_same_words_in_another_order_never_get_each_others_answer() -> None:
    first, turned = "Is gold heavier than lead?", "Is lead heavier than gold?"
    h = harness()
    h.embedder.at_similarity(turned, first, 0.99)  # what the local model scores
    await h.ask(first)
    assert (await h.ask(turned)).cache == "miss"
    h.embedder.at_similarity("is gold heavier than lead", first, 0.99)
    assert (await h.ask("is gold heavier than lead")).cache == "hit"  # the same words in the same order
    celsius, fahrenheit = "Convert 20 degrees Celsius to Fahrenheit", "Convert 20 degrees Fahrenheit to Celsius"
    h.embedder.at_similarity(fahrenheit, celsius, 0.99)
    await h.ask(celsius)
    assert (await h.ask(fahrenheit)).cache == "miss"


async def test_a_moved_clause_is_still_the_same_question() -> None:
    # the same words with one block moved: a paraphrase, not a swap, so the similar answer is served
    asked, moved = "How do I reverse a list in Python?", "In Python, how do I reverse a list?"
    h = harness()
    h.embedder.at_similarity(moved, asked, 0.97)
    await h.ask(asked)
    assert (await h.ask(moved)).cache == "hit"


async def test_vectors_of_another_dimension_are_a_miss_not_a_broken_cache() -> None:
    # the embedding deployment changed (another model, another size): old vectors cannot be compared with new
    # ones; the lookup is a miss, the memory backend is not marked as failing (exact hits go on), and the
    # bucket fills again with vectors of the new size
    h = harness()
    await h.ask(BASE)
    h.embedder.dims = 16
    h.embedder.vectors.clear()
    h.embedder.at_similarity(CLOSE, "What's France's capital city?", 0.95)
    assert (await h.ask(CLOSE)).cache == "miss"
    assert (await h.ask(BASE)).cache == "hit"  # an exact hit: the backend still works
    assert h.stage.stats.backend_errors == 0 and (await h.stage.health())[0] == "ok"
    again = await h.ask("What's France's capital city?")
    assert again.cache == "hit" and again.ctx.response_headers["x-aigw-cache-match"] == "semantic"


async def test_an_embedding_deployment_never_falls_back_to_another_embedding_model() -> None:
    # another model's vectors live in another space (of the same size or not): a semantic bucket must not mix
    # them, so the embedding call stays on the configured model and a failure there is an embedder failure
    from aigw import errors
    from aigw.config.models import Deployment, ModelRouting
    from aigw.pipeline.stages.cache_semantic import DeploymentEmbedder
    from aigw.providers.mock import MockProvider
    from aigw.routing.router import Router, Target

    primary = Deployment(name="emb-a", provider="mock", modes=["embeddings"], id="a#0",
                         mock={"fail_rate": 1.0, "fail_kind": "unavailable"})
    other = Deployment(name="emb-b", provider="mock", modes=["embeddings"], id="b#0")
    router = Router([Target(primary, MockProvider(primary)), Target(other, MockProvider(other))],
                    routing={"emb-a": ModelRouting(fallbacks=["emb-b"], num_retries=0)})
    with pytest.raises(errors.GatewayError):
        await DeploymentEmbedder(router, "emb-a").embed(BASE)


async def test_a_match_whose_answer_was_evicted_gives_way_to_the_next_best() -> None:
    import numpy as np

    from aigw.stores.cache_memory import MemoryCacheStore

    embedder = FakeEmbedder()
    first, second = "How do I reverse a list?", "Reversing a list, how?"
    embedder.vectors[BASE] = np.eye(8, dtype=np.float32)[0]
    embedder.vectors[first] = np.array([0.97, 0.2431, 0, 0, 0, 0, 0, 0], dtype=np.float32)  # 0.97 to BASE
    embedder.vectors[second] = np.array([0.95, -0.3122, 0, 0, 0, 0, 0, 0], dtype=np.float32)  # 0.95; 0.85 to first
    h = Harness(SEMANTIC, embedder=embedder, stores={"memory": MemoryCacheStore(1, 10_000_000)})
    await h.ask(first)
    assert (await h.ask(second)).cache == "miss"  # stored: the store's bound (1 entry) evicted the first answer
    hit = await h.ask(BASE)  # the closest vector's answer is gone: the next best answers
    assert hit.cache == "hit" and hit.ctx.response_headers["x-aigw-cache-similarity"] == "0.9500"
    assert h.upstream.calls == 2


@pytest.mark.parametrize("controls", [{"headers": {"x-aigw-cache": "no-cache, no-store"}},
                                      {"extra": {"cache": {"no_cache": True, "no_store": True}}}])
async def test_a_request_that_neither_looks_up_nor_stores_is_not_embedded(controls: dict) -> None:
    h = harness()
    await h.ask(BASE)
    calls = h.embedder.calls
    assert (await h.ask(CLOSE, **controls)).cache == "miss"  # type: ignore[arg-type]
    assert h.embedder.calls == calls  # the vector would serve nothing: a deployment's call would be billed for it
    assert (await h.ask(CLOSE)).cache == "hit"  # and the fresh answer was not stored under it


async def test_one_embedding_model_failing_leaves_the_others_semantic_matching_on() -> None:
    # model "mock" embeds with a deployment that is down; model "other" with another embedder: its semantic
    # hits must go on (they were switched off with the first, every embedder being one guarded name)
    working = FakeEmbedder()
    working.at_similarity(CLOSE, BASE, 0.95)
    other = {**SEMANTIC, "semantic": {**SEMANTIC["semantic"], "embedding_model": "other-embed"}}
    h = Harness({**SEMANTIC, "semantic": {**SEMANTIC["semantic"], "embed_timeout_ms": 20}},
                routing={"other": {"cache": other}}, more_embedders={"other-embed": working})
    h.embedder.delay_s = 1.0
    for i in range(3):  # enough timeouts in a row to mark an embedder as failing
        assert (await h.ask(f"question {i}")).cache == "miss"
    await h.ask(BASE, model="other")
    hit = await h.ask(CLOSE, model="other")
    assert hit.cache == "hit" and hit.ctx.response_headers["x-aigw-cache-match"] == "semantic"
