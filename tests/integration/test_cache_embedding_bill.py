"""The semantic cache's embedding call through a priced deployment is billed to the caller (SQLite, PostgreSQL).

A tenant's questions each cost an upstream embedding before the cache can look for a paraphrase: that call
gets a ledger row of its own, settles into the key's budget and shows in /admin/spend, as no extra request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest

from aigw.cli.admin_client import AdminClient
from aigw.pipeline.tenancy import SERVICE
from aigw.stores.base import Limits, RequestQuery, Scope
from aigw.stores.database import open_database
from tests.fakes.openai_upstream import FakeOpenAI
from tests.integration.tenancy_support import MASTER, PRICED_MOCK, chat_body, gateway_on, key_spend, setup_key
from tests.support.gateway import RunningGateway
from tests.support.services import postgres_dsn

EMBED_PER_MTOK = 100.0  # dear enough that one embedding shows to the nano-dollar beside a chat call
SEMANTIC = {"mode": "semantic", "timeout_ms": 1000,
            "semantic": {"threshold": 0.99, "embedding_model": "vec", "embed_timeout_ms": 3000}}
ASKED = ("What is the capital of France?", "How do I bake sourdough bread?")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI(None).start()
    yield fake
    fake.stop()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(request: pytest.FixtureRequest, upstream: FakeOpenAI,
       tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    if request.param == "postgres":
        postgres_dsn()  # skips when PostgreSQL is not there
    vec = {"name": "vec", "provider": "openai_compatible", "model": "text-embedding-3-small",
           "api_base": upstream.base_url, "modes": ["embeddings"], "prices": {"input_per_mtok": EMBED_PER_MTOK}}
    with gateway_on(request.param, tmp_path_factory.mktemp("embed-bill"), models=[PRICED_MOCK, vec],
                    cache=SEMANTIC, routing={"*": {"num_retries": 0}}) as g:
        yield g


def _ask(gw: RunningGateway, key: str, text: str) -> str:
    raw = openai.OpenAI(base_url=gw.v1, api_key=key, max_retries=0).chat.completions.with_raw_response.create(
        **chat_body(text))
    gw.call(gw.app.state["pipeline"].stage("cache").flush())
    return raw.headers["x-aigw-cache"]


def _ledger(gw: RunningGateway, key_id: str, expect: int) -> list[dict[str, Any]]:
    """The key's ledger rows, oldest first, once ``expect`` of them are written (off the request path)."""
    async def read() -> list[dict[str, Any]]:
        db = open_database(gw.app.state["config"].database_url)
        await db.open()
        try:
            return await db.requests(RequestQuery(key_id=key_id))
        finally:
            await db.close()

    deadline = time.monotonic() + 10
    while len(rows := asyncio.run(read())) < expect and time.monotonic() < deadline:
        time.sleep(0.05)
    return sorted(rows, key=lambda r: r["id"])


def test_each_embedding_is_a_ledger_row_in_the_budget_and_the_spend_report(gw: RunningGateway) -> None:
    admin = AdminClient(gw.url, MASTER)
    key = setup_key(admin, "embed-co", budget_usd=50.0, budget_period="daily")
    assert [_ask(gw, key["key"], text) for text in (ASKED[0], ASKED[0], ASKED[1])] == ["miss", "hit", "miss"]
    rows = _ledger(gw, key["id"], 5)
    chats = [r for r in rows if r["endpoint"] == "chat"]
    embeds = [r for r in rows if r["endpoint"] == "cache_embedding"]
    assert len(chats) == 3 and len(embeds) == 2  # an exact hit embeds nothing
    for chat, embed in zip((c for c in chats if not c["cache_hit"]), embeds, strict=True):
        assert embed["id"] == chat["id"] + ".1" and embed["request_id"] == chat["request_id"] + ".1"
        assert (embed["model"], embed["provider"], embed["usage_source"], embed["status"]) == \
            ("vec", "openai_compatible", "provider", 200)
        assert embed["deployment_id"].startswith("vec/") and embed["key_id"] == chat["key_id"]
        assert embed["prompt_tokens"] > 0 and embed["completion_tokens"] == 0
        assert embed["cost_usd"] == pytest.approx(embed["prompt_tokens"] * EMBED_PER_MTOK / 1e6, abs=1e-12)
    total = sum(r["cost_usd"] for r in rows)
    embedded = sum(r["cost_usd"] for r in embeds)

    spent = gw.call(gw.app.state["deps"].services[SERVICE].budgets.spent(
        Scope("key", key["id"], Limits(budget_usd=50.0, budget_period="daily")), time.time()))
    assert spent / 1e9 == pytest.approx(total, abs=1e-9)  # answers and embeddings, settled into the budget

    row = key_spend(admin, key["id"], requests=3)
    assert row["requests"] == 3 and row["cost_usd"] == pytest.approx(total, abs=1e-9)
    by_model = {r["model"]: r for r in admin.get("/admin/spend", group_by="model", tenant="embed-co")["data"]}
    assert (by_model["vec"]["requests"], by_model["mock"]["requests"]) == (0, 3)
    assert by_model["vec"]["cost_usd"] == pytest.approx(embedded, abs=1e-9)
    assert by_model["vec"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in embeds)
    report = admin.get("/admin/spend", group_by="tenant", tenant="embed-co")
    assert report["total_cost_nano"] == round(total * 1e9) and report["data"][0]["requests"] == 3


def test_the_local_embedding_model_adds_no_row(tmp_path: Path) -> None:
    from aigw.providers.local_embed import local_embedder_available

    if not local_embedder_available():
        pytest.skip("the semantic extra is not installed")
    local = {**SEMANTIC, "semantic": {**SEMANTIC["semantic"], "embedding_model": "local"}}  # type: ignore[dict-item]
    with gateway_on("sqlite", tmp_path, cache=local) as g:
        admin = AdminClient(g.url, MASTER)
        key = setup_key(admin, "local-co")
        assert _ask(g, key["key"], ASKED[0]) == "miss"
        key_spend(admin, key["id"])
        assert [r["endpoint"] for r in _ledger(g, key["id"], 1)] == ["chat"]




def test_an_embedding_cut_by_the_caches_timeout_is_billed_as_its_prompt(upstream: FakeOpenAI, tmp_path: Path) -> None:
    """The cache stops waiting after ``embed_timeout_ms`` and answers from upstream (exact matching only), but the
    embedding deployment had the request and may bill it: a row of its own, its prompt counted locally."""
    from tests.fakes.faults import Fault

    vec = {"name": "vec", "provider": "openai_compatible", "model": "text-embedding-3-small",
           "api_base": upstream.base_url, "modes": ["embeddings"], "prices": {"input_per_mtok": EMBED_PER_MTOK}}
    hasty = {**SEMANTIC, "semantic": {**SEMANTIC["semantic"], "embed_timeout_ms": 300}}  # type: ignore[dict-item]
    with gateway_on("sqlite", tmp_path, models=[PRICED_MOCK, vec], cache=hasty,
                    routing={"*": {"num_retries": 0}}) as g:
        admin = AdminClient(g.url, MASTER)
        key = setup_key(admin, "hasty-co", budget_usd=50.0, budget_period="daily")
        upstream.faults.push(Fault(delay_headers=3.0, only="/embeddings"))
        started = time.monotonic()
        assert _ask(g, key["key"], ASKED[1]) == "miss"
        assert time.monotonic() - started < 2.5  # the answer did not wait for the embedding
        rows = _ledger(g, key["id"], 2)
        chat, embed = rows
        assert (chat["endpoint"], chat["status"], embed["endpoint"]) == ("chat", 200, "cache_embedding")
        assert (embed["status"], embed["usage_source"], embed["model"]) == (504, "local", "vec")
        assert embed["id"] == chat["id"] + ".1" and embed["prompt_tokens"] > 0
        assert embed["cost_usd"] == pytest.approx(embed["prompt_tokens"] * EMBED_PER_MTOK / 1e6, abs=1e-12)
        spent = g.call(g.app.state["deps"].services[SERVICE].budgets.spent(
            Scope("key", key["id"], Limits(budget_usd=50.0, budget_period="daily")), time.time()))
        assert spent / 1e9 == pytest.approx(chat["cost_usd"] + embed["cost_usd"], abs=1e-9)
