"""The local embedder behind ``embedding_model: local``: offline, small, and semantically useful."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from aigw.providers.local_embed import DIMS, LocalEmbedder, local_embedder_available

pytestmark = pytest.mark.skipif(not local_embedder_available(),
                                reason="the semantic extra is not installed (pip install 'aigw[semantic]')")


@pytest.fixture(scope="module")
def embedder() -> LocalEmbedder:
    e = LocalEmbedder()
    e.load()
    return e


def test_loads_and_embeds_with_no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the local embedder tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    fresh = LocalEmbedder()
    vectors = fresh.encode(["offline please"])
    assert vectors.shape == (1, DIMS)


def test_paraphrases_are_close_and_unrelated_questions_are_not(embedder: LocalEmbedder) -> None:
    v = embedder.encode(["What is the capital of France?", "Which city is the capital of France?",
                         "How do I bake sourdough bread?"])
    assert float(v[0] @ v[1]) > 0.9
    assert float(v[0] @ v[2]) < 0.4


def test_vectors_are_unit_length_and_batching_changes_nothing(embedder: LocalEmbedder) -> None:
    texts = ["short", "a much longer sentence that needs padding in a batch with the short one"]
    batch = embedder.encode(texts)
    single = [embedder.encode([t])[0] for t in texts]
    for row, alone in zip(batch, single, strict=True):
        assert abs(float(row @ row) - 1.0) < 1e-4
        assert float(row @ alone) > 0.9999


async def test_async_embed_and_openai_shape(embedder: LocalEmbedder) -> None:
    from aigw.providers.base import CallOptions

    vector = await embedder.embed("hello")
    assert vector.shape == (DIMS,)
    body = await embedder.embeddings({"input": ["a", "b"]}, CallOptions())
    assert [d["index"] for d in body["data"]] == [0, 1] and len(body["data"][0]["embedding"]) == DIMS


@pytest.mark.parametrize(("one", "other"), [
    ("ฝรั่งเศสมีเมืองหลวงอะไร", "วิธีอบขนมปัง"),  # Thai: "capital of France?" / "how to bake bread": all [UNK]
    ("🍕🍕🍕", "🚀🌕"),
    ("How do I say 🍕 in French?", "How do I say 🚀 in French?"),
], ids=["thai", "emoji", "emoji-in-english"])
async def test_texts_with_words_the_model_does_not_know_are_not_embedded(
        embedder: LocalEmbedder, one: str, other: str) -> None:
    # unknown words all become [UNK]: these pairs embed to the same vector (similarity 1.0), so a
    # semantic cache would answer one with the other's answer; None = match them exactly only
    same = embedder.encode([one, other])
    assert float(same[0] @ same[1]) > 0.99  # what the model sees
    assert await embedder.embed(one) is None and await embedder.embed(other) is None
    assert await embedder.embed("What is the capital of France?") is not None


async def test_a_text_longer_than_the_model_reads_is_not_embedded(embedder: LocalEmbedder) -> None:
    # the model reads max_tokens; beyond that two turns differ where it never looks
    document = " ".join(["The quick brown fox jumps over the lazy dog near the river bank today."] * 12)
    one, other = document + " Task: translate it into French.", document + " Task: count the word fox."
    same = embedder.encode([one, other])
    assert float(same[0] @ same[1]) > 0.999  # what the model sees
    assert await embedder.embed(one) is None and await embedder.embed(other) is None
    assert await embedder.embed(document[:200]) is not None


async def test_a_word_that_differs_only_in_its_accent_never_gets_the_other_words_answer(
        embedder: LocalEmbedder) -> None:
    from tests.unit.stages.cache_harness import Harness

    # the model strips accents: "años" (years) and "anos" embed alike (1.0), so only the bucket tells them apart
    one, other = "¿Cuántos años tiene tu hermano?", "¿Cuántos anos tiene tu hermano?"
    same = embedder.encode([one, other])
    assert float(same[0] @ same[1]) > 0.999  # what the model sees
    h = Harness({"mode": "semantic", "semantic": {"threshold": 0.92, "embedding_model": "fake-embed"}},
                embedder=embedder)  # type: ignore[arg-type]
    await h.ask(one)
    assert (await h.ask(other)).cache == "miss" and h.upstream.calls == 2


async def test_a_key_that_turns_semantic_on_gets_plain_misses_not_embedder_failures_while_the_model_loads() -> None:
    import asyncio
    import time

    from tests.unit.stages.cache_harness import Harness

    # the global block caches exactly, so nothing loads the model at start-up; a key switches semantic on.
    # Loading takes ~0.5 s, longer than embed_timeout_ms: it used to run inside that timeout, so the first
    # lookups each waited it out and then marked the embedder failed for everyone (health degraded)
    fresh = LocalEmbedder()
    h = Harness({"mode": "exact"}, embedder=fresh)  # type: ignore[arg-type]
    semantic = {"cache": {"mode": "semantic", "semantic": {"threshold": 0.9, "embedding_model": "fake-embed"}}}
    started = time.monotonic()
    first = await h.ask("What is the capital of France?", principal_extra=semantic)
    assert first.cache == "miss" and time.monotonic() - started < 0.2  # not held up by the load
    assert h.stage.stats.embed_errors == 0 and h.stage.guard.problems() == {}
    await asyncio.to_thread(fresh.load)  # returns once the load the first lookup started has finished
    await h.ask("What is the capital of Japan?", principal_extra=semantic)
    hit = await h.ask("Which city is the capital of Japan?", principal_extra=semantic)
    assert hit.cache == "hit" and hit.ctx.response_headers["x-aigw-cache-match"] == "semantic"
    assert h.stage.stats.embed_errors == 0 and h.stage.guard.problems() == {}
