"""The cache with real virtual keys (issue 4): tenant isolation, a key's own setting, the ledger's view."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from click.testing import CliRunner

from aigw.cli.admin_client import AdminClient, AdminError
from aigw.cli.main import cli
from tests.integration.tenancy_support import MASTER, gateway_config, setup_key
from tests.support.gateway import RunningGateway, running_gateway


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    db: Path = tmp_path_factory.mktemp("cache-tenancy") / "gw.db"
    with running_gateway(gateway_config(db, cache={"mode": "exact"})) as g:
        yield g


@pytest.fixture(scope="module")
def keys(gw: RunningGateway) -> dict[str, dict[str, Any]]:
    admin = AdminClient(gw.url, MASTER)
    return {
        "acme": setup_key(admin, "cache-acme"),
        "acme-2": setup_key(admin, "cache-acme"),
        "globex": setup_key(admin, "cache-globex"),
        "acme-nocache": setup_key(admin, "cache-acme", metadata={"cache": {"mode": "off"}}),
    }


def ask(gw: RunningGateway, key: dict[str, Any], text: str) -> str | None:
    raw = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0).chat.completions.with_raw_response.create(
        model="mock", messages=[{"role": "user", "content": text}], max_tokens=20)
    gw.call(gw.app.state["pipeline"].stage("cache").flush())
    header: str | None = raw.headers.get("x-aigw-cache")
    return header


def test_tenants_never_share_an_entry(gw: RunningGateway, keys: dict[str, dict[str, Any]]) -> None:
    assert ask(gw, keys["acme"], "our roadmap") == "miss"
    assert ask(gw, keys["globex"], "our roadmap") == "miss"
    assert ask(gw, keys["acme-2"], "our roadmap") == "hit"  # same tenant, other key
    assert ask(gw, keys["globex"], "our roadmap") == "hit"


def test_a_key_can_switch_its_cache_off(gw: RunningGateway, keys: dict[str, dict[str, Any]]) -> None:
    ask(gw, keys["acme"], "shared answer")
    assert ask(gw, keys["acme-nocache"], "shared answer") is None


def test_the_ledger_records_a_hit_at_cost_zero_with_the_saving(
        gw: RunningGateway, keys: dict[str, dict[str, Any]]) -> None:
    key = setup_key(AdminClient(gw.url, MASTER), "cache-ledger")
    assert ask(gw, key, "what does this cost") == "miss"
    assert ask(gw, key, "what does this cost") == "hit"
    admin = AdminClient(gw.url, MASTER)
    for _ in range(100):  # the ledger writes in the background, every 50 ms here
        rows = admin.get("/admin/spend", group_by="key", key=key["id"])["data"]
        if rows and rows[0]["requests"] == 2:
            break
        time.sleep(0.05)
    row = rows[0]
    assert row["requests"] == 2 and row["cache_hits"] == 1
    assert row["cost_usd"] > 0 and row["cost_saved_usd"] == pytest.approx(row["cost_usd"])  # one paid, one saved


def purge(gw: RunningGateway, key: str, tenant: str = "", model: str = "") -> Any:
    return AdminClient(gw.url, key).request("DELETE", "/admin/cache", query={"tenant": tenant, "model": model})


def test_a_tenant_admin_purges_its_own_tenant_only(gw: RunningGateway, keys: dict[str, dict[str, Any]]) -> None:
    admin = setup_key(AdminClient(gw.url, MASTER), "cache-acme", role="tenant_admin")
    ask(gw, keys["acme"], "purge me")
    ask(gw, keys["globex"], "purge me")
    out = purge(gw, admin["key"])
    assert out["object"] == "cache.purge" and out["tenant"] == admin["tenant_id"] and out["deleted"] >= 1
    assert out["by_backend"]["memory"] == out["deleted"]
    assert ask(gw, keys["acme"], "purge me") == "miss"
    assert ask(gw, keys["globex"], "purge me") == "hit"
    with pytest.raises(AdminError) as other:  # another tenant, by name or id: as if it did not exist
        purge(gw, admin["key"], tenant="cache-globex")
    assert other.value.status == 404
    with pytest.raises(AdminError) as plain:  # a key that is no admin may not purge at all
        purge(gw, keys["acme"]["key"])
    assert plain.value.status == 403


def test_the_master_key_purges_one_tenant_by_name_or_everyone(gw: RunningGateway,
                                                              keys: dict[str, dict[str, Any]]) -> None:
    ask(gw, keys["acme"], "master purge")
    ask(gw, keys["globex"], "master purge")
    assert purge(gw, MASTER, tenant="cache-globex")["deleted"] >= 1
    assert ask(gw, keys["globex"], "master purge") == "miss"
    assert ask(gw, keys["acme"], "master purge") == "hit"
    with pytest.raises(AdminError) as unknown:
        purge(gw, MASTER, tenant="no-such-tenant")
    assert unknown.value.status == 404
    result = CliRunner().invoke(cli, ["cache", "purge"], env={"AIGW_URL": gw.url, "AIGW_MASTER_KEY": MASTER})
    assert result.exit_code == 0 and "of every tenant, every model (memory: " in result.output, result.output
    assert ask(gw, keys["acme"], "master purge") == "miss" and ask(gw, keys["globex"], "master purge") == "miss"


def test_a_purge_can_name_a_model(gw: RunningGateway, keys: dict[str, dict[str, Any]]) -> None:
    def ask_model(model: str) -> str | None:
        raw = openai.OpenAI(base_url=gw.v1, api_key=keys["acme"]["key"], max_retries=0).chat.completions \
            .with_raw_response.create(model=model, messages=[{"role": "user", "content": "which model"}])
        gw.call(gw.app.state["pipeline"].stage("cache").flush())
        return raw.headers.get("x-aigw-cache")

    ask_model("mock")
    ask_model("mock-large")
    out = purge(gw, MASTER, tenant="cache-acme", model="mock-large")
    assert out["model"] == "mock-large" and out["deleted"] == 1
    assert ask_model("mock-large") == "miss" and ask_model("mock") == "hit"
    with pytest.raises(AdminError) as unknown:
        purge(gw, MASTER, model="no-such-model")
    assert unknown.value.status == 404
    result = CliRunner().invoke(cli, ["cache", "purge", "--model", "mock", "--json"],
                                env={"AIGW_URL": gw.url, "AIGW_MASTER_KEY": MASTER})
    assert result.exit_code == 0 and '"model": "mock"' in result.output, result.output
    assert ask_model("mock") == "miss"


@pytest.mark.parametrize("query", ["?tenant=", "?model=", "?tenant=&model=mock", "?tenant=cache-acme&model=",
                                   "?tenant=%20", "?tenant=&tenant=cache-acme"])
def test_an_empty_tenant_or_model_is_a_400_and_purges_nothing(gw: RunningGateway, keys: dict[str, dict[str, Any]],
                                                              query: str) -> None:
    ask(gw, keys["acme"], "keep me")
    ask(gw, keys["globex"], "keep me")
    req = urllib.request.Request(f"{gw.url}/admin/cache{query}", method="DELETE",
                                 headers={"authorization": f"Bearer {MASTER}"})
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    body = json.loads(info.value.read())
    assert info.value.code == 400 and body["error"]["type"] == "invalid_request_error"
    assert body["error"]["param"] in ("tenant", "model") and "empty" in body["error"]["message"]
    assert ask(gw, keys["acme"], "keep me") == "hit" and ask(gw, keys["globex"], "keep me") == "hit"


def test_a_hit_gives_its_token_estimate_back(gw: RunningGateway) -> None:
    """Tokens per minute count what upstreams processed: a hit used none, so each hit leaves the key's
    token quota where it found it (it still counts as a request)."""
    key = setup_key(AdminClient(gw.url, MASTER), "cache-tpm", tpm=100_000, rpm=1000)
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)

    def remaining() -> tuple[str | None, int, int]:
        raw = client.chat.completions.with_raw_response.create(
            model="mock", messages=[{"role": "user", "content": "tokens of a hit"}], max_tokens=20)
        gw.call(gw.app.state["pipeline"].stage("cache").flush())
        h = raw.headers
        return h.get("x-aigw-cache"), int(h["x-ratelimit-remaining-tokens"]), int(h["x-ratelimit-remaining-requests"])

    assert remaining()[0] == "miss"
    first, second, third = remaining(), remaining(), remaining()
    assert first[0] == second[0] == third[0] == "hit"
    assert first[1] == second[1] == third[1]  # the hits' estimates came back
    assert first[2] - 1 == second[2] == third[2] + 1  # each hit is still a request


@pytest.mark.parametrize("deployments", [1, 2])
def test_cache_hits_never_use_or_wait_for_a_deployments_rpm(tmp_path: Path, deployments: int) -> None:
    """A deployment's caps count the calls it gets: answers from the cache are not refused when it is full."""
    models = [{"name": "capped", "provider": "mock", "rpm": 2} for _ in range(deployments)]
    with running_gateway(gateway_config(tmp_path / "gw.db", cache={"mode": "exact"}, models=models)) as gw:
        client = openai.OpenAI(base_url=gw.v1, api_key=MASTER, max_retries=0)
        seen = []
        for _ in range(6):
            raw = client.chat.completions.with_raw_response.create(
                model="capped", messages=[{"role": "user", "content": "the same question"}], max_tokens=20)
            seen.append(raw.headers.get("x-aigw-cache"))
            gw.call(gw.app.state["pipeline"].stage("cache").flush())
        assert seen == ["miss"] + ["hit"] * 5
        for i in range(2 * deployments - 1):  # the first call used one of the deployments' calls: the rest are left
            client.chat.completions.create(model="capped", messages=[{"role": "user", "content": f"new {i}"}])
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="capped", messages=[{"role": "user", "content": "one too many"}])
