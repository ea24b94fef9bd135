"""The in-process semantic index: threshold, buckets, bounds and expiry."""

from __future__ import annotations

import numpy as np
import pytest

from aigw.pipeline.stages.cache_keys import word_order_mark
from aigw.stores.cache_base import swapped
from aigw.stores.semantic_memory import MemorySemanticIndex
from tests.support.clock import ManualClock


def unit(*values: float) -> np.ndarray:
    v = np.asarray(values, dtype=np.float32)
    return v / np.linalg.norm(v)


def at_angle(cos: float) -> np.ndarray:
    """A unit vector whose similarity with (1, 0, 0) is ``cos``."""
    return unit(cos, float(np.sqrt(1 - cos * cos)), 0.0)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


async def test_match_above_threshold_and_none_below(clock: ManualClock) -> None:
    index = MemorySemanticIndex(max_entries=100, max_per_bucket=10, clock=clock)
    await index.add("t1:ctx", unit(1, 0, 0), "entry-a", ttl_s=60)
    hit = await index.search("t1:ctx", at_angle(0.95), threshold=0.92)
    assert hit is not None and hit.entry_id == "entry-a" and hit.score == pytest.approx(0.95, abs=1e-4)
    assert await index.search("t1:ctx", at_angle(0.90), threshold=0.92) is None


async def test_best_match_wins_and_buckets_never_mix(clock: ManualClock) -> None:
    index = MemorySemanticIndex(max_entries=100, max_per_bucket=10, clock=clock)
    await index.add("t1:ctx", at_angle(0.93), "close", 60)
    await index.add("t1:ctx", at_angle(0.99), "closer", 60)
    await index.add("t2:ctx", unit(1, 0, 0), "other-tenant", 60)
    hit = await index.search("t1:ctx", unit(1, 0, 0), threshold=0.9)
    assert hit is not None and hit.entry_id == "closer"
    assert await index.search("t3:ctx", unit(1, 0, 0), threshold=0.5) is None


async def test_expired_vectors_do_not_match(clock: ManualClock) -> None:
    index = MemorySemanticIndex(max_entries=100, max_per_bucket=10, clock=clock)
    await index.add("b", unit(1, 0, 0), "old", ttl_s=10)
    clock.t += 11
    assert await index.search("b", unit(1, 0, 0), threshold=0.5) is None
    await index.add("b", at_angle(0.97), "new", ttl_s=10)
    assert index.size == 1  # the expired one was pruned on add
    hit = await index.search("b", unit(1, 0, 0), threshold=0.5)
    assert hit is not None and hit.entry_id == "new"


async def test_bounded_per_bucket_and_in_total(clock: ManualClock) -> None:
    index = MemorySemanticIndex(max_entries=5, max_per_bucket=3, clock=clock)
    for i in range(4):
        await index.add("a", unit(1, i, 0), f"a{i}", 60)
    assert await index.search("a", unit(1, 0, 0), threshold=0.999) is None  # a0 was pushed out
    for i in range(3):
        await index.add("b", unit(0, 1, i), f"b{i}", 60)
    assert index.size == 5
    assert await index.search("b", unit(0, 1, 0), threshold=0.999) is not None


async def test_a_purge_drops_a_tenants_buckets_only(clock: ManualClock) -> None:
    index = MemorySemanticIndex(max_entries=100, max_per_bucket=10, clock=clock)
    await index.add("t1:aaaa.ctx:local", unit(1, 0, 0), "t1:a", ttl_s=60)
    await index.add("t1/k/key_1:aaaa.ctx:local", unit(1, 0, 0), "t1/k/key_1:b", ttl_s=60)
    await index.add("t2:aaaa.ctx:local", unit(1, 0, 0), "t2:c", ttl_s=60)
    assert await index.purge(["t1:*", "t1/*"]) == 2
    assert await index.search("t1:aaaa.ctx:local", unit(1, 0, 0), 0.9) is None
    assert await index.search("t2:aaaa.ctx:local", unit(1, 0, 0), 0.9) is not None
    assert index.size == 1
    assert await index.purge(None) == 1 and index.size == 0


async def test_the_same_words_in_another_order_are_passed_over_for_the_next_best(clock: ManualClock) -> None:
    index = MemorySemanticIndex(max_entries=100, max_per_bucket=10, clock=clock)
    await index.add("b", unit(1, 0, 0), "gold-lead", ttl_s=60, mark=word_order_mark("Is gold heavier than lead?"))
    await index.add("b", at_angle(0.95), "paraphrase", ttl_s=60, mark=word_order_mark("Gold: heavier than lead?"))
    turned = word_order_mark("Is lead heavier than gold?")
    hit = await index.search("b", unit(1, 0, 0), threshold=0.9, mark=turned)
    assert hit is not None and hit.entry_id == "paraphrase"  # the closer one says the words in another order
    same = await index.search("b", unit(1, 0, 0), threshold=0.9, mark=word_order_mark("is gold heavier than lead"))
    assert same is not None and same.entry_id == "gold-lead"


@pytest.mark.parametrize(("one", "other", "expected"), [
    ("Is gold heavier than lead?", "Is lead heavier than gold?", True),  # a swap: another question
    ("Does Alice owe Bob money?", "Does Bob owe Alice money?", True),
    ("How do I reverse a list in Python?", "In Python, how do I reverse a list?", False),  # a block moved
    ("Explain how vaccines work, in simple terms", "In simple terms, explain how vaccines work", False),
    ("Is gold heavier than lead?", "is gold heavier than lead", False),  # the same order
    ("Is gold heavier than lead?", "Is gold lighter than lead?", False),  # another bag: the embedding's call
    ("A recipe for milk chocolate, please", "A recipe for chocolate milk, please", True),  # neighbours swapped
    ("Is a house boat cheaper?", "Is a boat house cheaper?", True),
])
def test_swapped_tells_a_swap_from_a_moved_block(one: str, other: str, expected: bool) -> None:
    assert swapped(word_order_mark(one), word_order_mark(other)) is expected
    assert swapped(word_order_mark(other), word_order_mark(one)) is expected


def test_a_turn_too_long_to_mark_is_never_called_swapped() -> None:
    long_turn = " ".join(f"w{i}" for i in range(300))
    assert word_order_mark(long_turn) == b""
    assert not swapped(b"", word_order_mark("Is gold heavier than lead?"))


async def test_a_discarded_vector_no_longer_matches_and_frees_its_place(clock: ManualClock) -> None:
    index = MemorySemanticIndex(max_entries=100, max_per_bucket=10, clock=clock)
    await index.add("b", unit(1, 0, 0), "best", ttl_s=60)
    await index.add("b", at_angle(0.95), "next", ttl_s=60)
    await index.discard("b", "best")
    await index.discard("b", "unknown")
    hit = await index.search("b", unit(1, 0, 0), threshold=0.9)
    assert hit is not None and hit.entry_id == "next" and index.size == 1


async def test_the_index_stays_within_its_byte_bound_at_large_dimensions(clock: ManualClock) -> None:
    dims = 3072
    one = 2 * dims * 4  # a vector and its copy in the bucket's stacked matrix
    index = MemorySemanticIndex(max_entries=10_000, max_per_bucket=100, clock=clock, max_bytes=10 * one + 4096)
    rng = np.random.default_rng(7)
    vectors = [v / np.linalg.norm(v) for v in rng.standard_normal((30, dims)).astype(np.float32)]
    for i, v in enumerate(vectors):
        await index.add(f"b{i % 3}", v, f"e{i}", ttl_s=60)
    assert index.size == 10 and index.bytes <= index.max_bytes
    assert await index.search("b0", vectors[0], threshold=0.99) is None  # the oldest went first
    found = await index.search("b2", vectors[29], threshold=0.99)
    assert found is not None and found.entry_id == "e29"
    await index.purge(None)
    assert (index.size, index.bytes) == (0, 0)


async def test_a_vector_that_is_not_a_number_matches_nothing(clock: ManualClock) -> None:
    # an embedding that overflowed float32 (inf / inf) is NaN throughout: every comparison with it is false,
    # so it must read as "not similar", never as "not below the threshold" (which served an unrelated answer)
    index = MemorySemanticIndex(max_entries=100, max_per_bucket=10, clock=clock)
    await index.add("t1:ctx", unit(1, 0, 0), "entry-a", ttl_s=60)
    assert await index.search("t1:ctx", np.full(3, np.nan, dtype=np.float32), threshold=0.92) is None
