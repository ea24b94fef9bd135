"""Budgets when Redis loses its data: the counters start again from the ledger, without a restart."""

from __future__ import annotations

import time
from pathlib import Path

import openai
import pytest
import redis as redis_sync

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, chat_body, gateway_config, setup_key, wait_ledger_rows
from tests.support.gateway import running_gateway
from tests.support.servers import free_port
from tests.support.services import start_own_redis, stop_own_redis


def _spend_until_refused(client: openai.OpenAI, limit: int = 40) -> int:
    for done in range(limit):
        try:
            client.chat.completions.create(**chat_body("spend", max_tokens=20))
        except openai.RateLimitError as err:
            assert err.code == "budget_exceeded"
            return done
    raise AssertionError(f"no budget refusal in {limit} calls")


def test_a_redis_that_comes_back_empty_is_seeded_again_from_the_ledger(tmp_path: Path) -> None:
    port = free_port()
    redis = start_own_redis(port)
    try:
        config = gateway_config(tmp_path / "gw.db", redis_url=f"redis://127.0.0.1:{port}/0",
                                redis_prefix="aigw-test:loss:")
        with running_gateway(config) as gw:
            key = setup_key(AdminClient(gw.url, MASTER), "loss-co", budget_usd=0.2, budget_period="daily")
            client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
            answered = _spend_until_refused(client)
            assert answered > 0
            # the ledger has every call of the budget before Redis loses the counters
            assert wait_ledger_rows(tmp_path / "gw.db", key["id"], answered, "status = 200") == answered
            stop_own_redis(redis)  # its counters are gone with it
            redis = start_own_redis(port)
            marks = redis_sync.Redis(port=port)
            deadline = time.monotonic() + 5
            while not marks.exists("aigw-test:loss:bg-seeded"):  # seeded again, within SEED_CHECK_S
                assert time.monotonic() < deadline, "the budget counters were not seeded again"
                time.sleep(0.05)
            marks.close()
            for _ in range(5):  # and the budget holds, though no gateway restarted
                with pytest.raises(openai.RateLimitError) as refused:
                    client.chat.completions.create(**chat_body("spend", max_tokens=20))
                assert refused.value.code == "budget_exceeded"
    finally:
        stop_own_redis(redis)


def test_calls_in_flight_when_redis_lost_its_data_count_once_they_end(tmp_path: Path) -> None:
    """Their leases went with Redis, so their settles find none: their cost reaches the counters from the
    ledger (seeded again once they have ended), or the budget is overrun by every call that was in flight. On
    every replica: the one that did not notice the loss itself (another seeded Redis again first) too."""
    from concurrent.futures import ThreadPoolExecutor

    port = free_port()
    redis = start_own_redis(port)
    try:
        config = gateway_config(tmp_path / "gw.db", redis_url=f"redis://127.0.0.1:{port}/0",
                                redis_prefix="aigw-test:loss-flight:")
        for name, chunk_ms in (("mock-long", 100), ("mock-longer", 300)):
            config["models"].append({"name": name, "provider": "mock", "mock": {"stream_chunk_ms": chunk_ms},
                                     "prices": {"input_per_mtok": 1000.0, "output_per_mtok": 2000.0}})
        with running_gateway(config) as gw, running_gateway(config) as other:
            key = setup_key(AdminClient(gw.url, MASTER), "flight-co", budget_usd=0.3, budget_period="daily")
            clients = [openai.OpenAI(base_url=g.v1, api_key=key["key"], max_retries=0) for g in (gw, other)]

            def long_call(i: int) -> None:
                # on the first replica ~0.5 s ($0.016 each), on the other ~6 s ($0.046 each): the other's end
                # after the first has noticed the loss, seeded Redis again and caught up with its own calls
                body = {**chat_body("in flight", max_tokens=5), "model": "mock-long"} if i % 2 == 0 else \
                    {**chat_body("in flight", max_tokens=20), "model": "mock-longer"}
                for _chunk in clients[i % 2].chat.completions.create(**body, stream=True):
                    pass

            with ThreadPoolExecutor(8) as pool:
                calls = [pool.submit(long_call, i) for i in range(8)]
                time.sleep(0.3)  # reserved: their leases are in Redis
                stop_own_redis(redis)  # the counters and the leases are gone with it
                redis = start_own_redis(port)
                for c in calls:
                    c.result()
            # $0.25 of $0.30 settled: room for one more call of ~$0.046, not for five
            assert wait_ledger_rows(tmp_path / "gw.db", key["id"], 8, "status = 200") == 8
            time.sleep(2.0)  # the rows are written; the counters catch up within three checks (1.5 s)
            assert _spend_until_refused(clients[0]) <= 2
    finally:
        stop_own_redis(redis)
