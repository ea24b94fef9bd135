"""A request refused because every deployment's breaker is open (no upstream called) takes nothing from the key's
rpm: as "every deployment full" and "too large for every deployment", it goes back. Before, a client retrying
against a model whose upstream was down used up its own rate limit on 503s."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from aigw.cli.admin_client import AdminClient
from tests.fakes import openai_faults as oai
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.tenancy_support import MASTER, chat_body, gateway_config, setup_key
from tests.support.gateway import running_gateway


def test_an_open_breakers_refusals_take_no_request_from_the_keys_rpm(tmp_path: Path) -> None:
    fake = FakeOpenAI("sk-up").start()
    fake.faults.always(oai.server_error(500))
    config = gateway_config(tmp_path / "gw.db", routing={"*": {"num_retries": 0}},
                            circuit_breaker={"failures": 1, "cooldown_s": 60})
    config["models"] = [{"name": "down", "provider": "openai", "model": "gpt-4o-mini", "api_base": fake.base_url,
                         "api_key": "sk-up"}]
    try:
        with running_gateway(config) as gw:
            key = setup_key(AdminClient(gw.url, MASTER), "breaker-rpm", rpm=3)
            client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
            with pytest.raises(openai.APIStatusError) as first:
                client.chat.completions.create(**chat_body(model="down"))
            assert first.value.status_code == 502  # it reached the upstream: it counts, and opens the breaker
            for _ in range(4):  # never called: each goes back, so none is a 429 for the key's own rpm of 3
                with pytest.raises(openai.APIStatusError) as refused:
                    client.chat.completions.create(**chat_body(model="down"))
                assert refused.value.status_code == 503
                assert refused.value.response.headers["x-ratelimit-remaining-requests"] == "1"
            assert fake.traffic.requests == 1
    finally:
        fake.stop()
