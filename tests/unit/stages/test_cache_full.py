"""A full Redis (``maxmemory`` reached under ``noeviction``) refuses the cache's stores, not its lookups: the
request is answered as usual and at once, the entries Redis holds still hit, stores are skipped for
``retry_after_s`` at a time, /health/ready's cache line is degraded and says why, the log says it once, and
storing resumes by itself once Redis has room. Against a redis-server of the test's own."""

from __future__ import annotations

import logging
import subprocess
import time

import pytest

from aigw.stores.redis.cache import RedisCacheStore
from aigw.stores.redis.client import make_redis
from aigw.stores.redis.pipe import RedisPipe
from tests.support.services import fill_redis, make_room
from tests.unit.stages.cache_harness import Harness


@pytest.mark.parametrize("lean", [True, False])
async def test_a_full_redis_skips_stores_and_keeps_serving_hits(
        own_redis: tuple[str, subprocess.Popen[bytes]], lean: bool, caplog: pytest.LogCaptureFixture) -> None:
    url, _ = own_redis
    redis = make_redis(url)
    store = RedisCacheStore(redis, "aigw-test:", RedisPipe.from_url(url) if lean else None)
    try:
        h = Harness({"mode": "exact", "retry_after_s": 5, "near_ttl_s": 0}, stores={"memory": store})
        assert (await h.ask("stored before")).cache == "miss"
        assert (await h.ask("stored before")).cache == "hit"
        fill_redis(url)
        caplog.set_level(logging.WARNING, "aigw.cache")

        started = time.perf_counter()
        answer = await h.ask("asked when full")  # its store is refused: the answer is not held up for it
        assert answer.cache == "miss" and answer.body is not None and time.perf_counter() - started < 0.5
        assert (await h.ask("stored before")).cache == "hit"  # lookups go on (to Redis: no near copies here)
        assert (await h.ask("stored before")).ctx.state["cache_result"] == "hit"
        status, detail = await h.stage.health()
        assert status == "degraded" and "out of memory" in detail, detail
        assert (await h.ask("asked when full")).cache == "miss"  # its store skipped, not tried again
        assert h.stage.stats.backend_skipped >= 1
        assert len([r for r in caplog.records if "out of memory" in r.getMessage()]) == 1

        make_room(url)
        h.clock.t += 6
        assert (await h.ask("after")).cache == "miss"  # stored again
        assert (await h.ask("after")).cache == "hit"
        assert (await h.stage.health())[0] == "ok"
        assert any("takes writes again" in r.getMessage() for r in caplog.records)
    finally:
        await store.aclose()
        await redis.aclose()
