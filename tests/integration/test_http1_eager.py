"""aigw's own server as clients meet it over real sockets: requests answered at once, pipelined, or long."""

from __future__ import annotations

import time
from pathlib import Path

import openai

from aigw.cli.admin_client import AdminClient
from tests.integration.tenancy_support import MASTER, PRICED_MOCK, chat_body, gateway_config, setup_key
from tests.integration.test_client_gone import VERY_SLOW, _leave_early
from tests.support.gateway import running_gateway


def test_a_client_gone_after_sending_a_long_prompt_frees_its_slot_and_is_a_499(tmp_path: Path) -> None:
    """A body over the server's 64 KiB buffer paused reading; the client leaving must still be heard."""
    config = gateway_config(tmp_path / "gw.db")
    config["models"] = [PRICED_MOCK, VERY_SLOW]
    with running_gateway(config) as gw:
        admin = AdminClient(gw.url, MASTER)
        key = setup_key(admin, "long-prompt-co", max_parallel=1)
        port = int(gw.url.rsplit(":", 1)[1])
        _leave_early(port, key["key"], {**chat_body("long " * 14_000), "model": "very-slow"})  # ~70 kB
        started = time.monotonic()
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        client.chat.completions.create(**chat_body("next"))  # the one slot is free again
        assert time.monotonic() - started < 2  # not after the 3 s the abandoned call would have taken
        deadline = time.monotonic() + 5
        while True:
            rows = admin.get("/admin/spend", group_by="key", key=key["id"])["data"]
            if rows and rows[0]["requests"] >= 2:
                break
            assert time.monotonic() < deadline, rows
            time.sleep(0.05)
        assert (rows[0]["requests"], rows[0]["errors"]) == (2, 1)  # the abandoned call, as a 499
