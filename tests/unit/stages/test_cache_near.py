"""A shared backend's entries kept near, in this process: a repeated hit skips the round trip,
and never outlives the entry's own TTL or ``near_ttl_s``."""

from __future__ import annotations

from aigw.pipeline.stages.cache_near import NearCache
from tests.support.clock import ManualClock
from tests.unit.stages.cache_harness import Harness


class RemoteStore:
    """A Redis stand-in: a dict that counts round trips, not ``in_process``; can be switched off."""

    name = "memory"

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.gets = 0
        self.down = False

    async def get(self, key: str) -> bytes | None:
        self.gets += 1
        if self.down:
            raise ConnectionError("redis down")
        return self.data.get(key)

    async def set(self, key: str, value: bytes, ttl_s: float) -> None:
        if self.down:
            raise ConnectionError("redis down")
        self.data[key] = value

    async def ping(self) -> None:
        if self.down:
            raise ConnectionError("redis down")


def harness(**cache: object) -> tuple[Harness, RemoteStore]:
    store = RemoteStore()
    return Harness({"mode": "exact", "retry_after_s": 0, **cache}, stores={"memory": store}), store


async def test_a_repeated_hit_is_answered_without_a_round_trip() -> None:
    h, store = harness()
    assert (await h.ask()).cache == "miss"  # asks the store, then writes the answer there and near
    first = await h.ask()
    assert first.cache == "hit" and first.text and store.gets == 1 and h.upstream.calls == 1
    status, detail = await h.stage.health()
    assert status == "ok" and "near_hits=1" in detail


async def test_an_entry_read_from_another_replica_is_kept_near_after_one_read() -> None:
    h, store = harness()
    writer, _ = harness()
    writer.stage.stores = h.stage.stores  # a second replica sharing the same backend
    await writer.ask()
    await h.ask()
    await h.ask()
    assert store.gets == 2 and h.upstream.calls == 0  # the writer's miss, then one read here


async def test_the_near_copy_ends_with_the_entrys_own_ttl() -> None:
    h, store = harness(near_ttl_s=60)
    await h.ask(headers={"x-aigw-cache": "ttl=2"})
    h.clock.t += 3
    store.data.clear()  # as Redis would have expired it
    assert (await h.ask()).cache == "miss" and store.gets == 2


async def test_the_near_copy_lasts_no_longer_than_near_ttl() -> None:
    h, store = harness(near_ttl_s=5)
    await h.ask()
    h.clock.t += 4
    await h.ask()
    assert store.gets == 1
    h.clock.t += 2
    assert (await h.ask()).cache == "hit" and store.gets == 2  # asked Redis again, still there


async def test_near_ttl_zero_asks_the_backend_every_time() -> None:
    h, store = harness(near_ttl_s=0)
    for _ in range(3):
        await h.ask()
    assert store.gets == 3


async def test_tenants_never_share_a_near_copy() -> None:
    h, _ = harness()
    await h.ask(tenant="a")
    other = await h.ask(tenant="b")
    assert other.cache == "miss" and h.upstream.calls == 2


async def test_recent_hits_survive_the_backend_going_down() -> None:
    h, store = harness()
    await h.ask()
    store.down = True
    assert (await h.ask()).cache == "hit"
    assert (await h.ask("a new question")).cache == "miss"  # the rest skips the backend, as before


def test_the_near_cache_stays_within_its_bytes() -> None:
    near = NearCache(ttl_s=5, max_bytes=16 * 1024, clock=ManualClock(1_000_000.0))
    for i in range(100):
        near.put(f"k{i}", b"x" * 900, None)
    assert sum(len(v) for _, v in near._items.values()) <= 16 * 1024
    near.put("big", b"x" * 2000, None)  # over a sixteenth of the bound: not kept
    assert near.get("big") is None and near.get("k99") is not None


def test_a_purge_forgets_the_near_copies_it_names() -> None:
    near = NearCache(ttl_s=5, max_bytes=10_000, clock=ManualClock(1_000_000.0))
    for key in ("t1:a", "t1/k/key_1:b", "t2:c"):
        near.put(key, b"answer", None)
    near.purge(["t1:*", "t1/*"])
    assert near.get("t1:a") is None and near.get("t1/k/key_1:b") is None and near.get("t2:c") == b"answer"
    near.purge(None)
    assert len(near) == 0


def test_a_purge_gives_back_the_room_its_copies_took() -> None:
    near = NearCache(ttl_s=5, max_bytes=1600, clock=ManualClock(1_000_000.0))  # room for 16 answers of 100 bytes
    for i in range(8):
        near.put(f"t1:{i}", b"x" * 100, None)
        near.put(f"t2:{i}", b"x" * 100, None)
    near.purge(["t1:*", "t1/*"])
    for i in range(8):  # fits in what the purge freed: nothing is pushed out
        near.put(f"t3:{i}", b"x" * 100, None)
    assert all(near.get(f"t2:{i}") is not None for i in range(8))
