"""Bad input to the admin API, as an operator sees it: a 400 (or 404, 409) naming the field, nothing stored,
and every listing still answering afterwards. Run on SQLite and on PostgreSQL, whose text type refuses NUL
and which raises its own errors for duplicate names."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import openai
import pytest

from aigw.cli.admin_client import AdminClient, AdminError
from tests.integration.tenancy_support import MASTER, gateway_on, setup_key
from tests.support.gateway import RunningGateway


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def gw(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningGateway]:
    with gateway_on(request.param, tmp_path_factory.mktemp("admin-input")) as g:
        yield g


@pytest.fixture
def admin(gw: RunningGateway) -> AdminClient:
    return AdminClient(gw.url, MASTER)


def refused(call: Callable[[], Any], status: int, param: str | None, says: str = "") -> dict[str, Any]:
    """The OpenAI-style error body of a call the API must refuse."""
    with pytest.raises(AdminError) as err:
        call()
    assert err.value.status == status, err.value.message
    body: dict[str, Any] = err.value.body["error"]
    assert body["param"] == param, body
    assert says in body["message"], body
    return body


def test_an_expiry_that_is_not_a_time_from_1970_to_9999_is_refused_and_nothing_is_stored(
        admin: AdminClient) -> None:
    first = setup_key(admin, "expiry-co")
    project = first["project_id"]
    for bad in (1798761600000, 1e20, -1e20, True, {}, [], "next tuesday", "10000-01-01"):
        body = refused(lambda bad=bad: admin.post("/admin/keys", {"project": project, "expires_at": bad}),
                       400, "expires_at")
        assert body["type"] == "invalid_request_error"
        refused(lambda bad=bad: admin.patch(f"/admin/keys/{first['id']}", {"expires_at": bad}), 400, "expires_at")
    assert "milliseconds" in refused(lambda: admin.post("/admin/keys", {"project": project,
                                                                         "expires_at": 1798761600000}),
                                     400, "expires_at")["message"]
    # listings still answer, with the one key made above, unchanged
    assert [k["id"] for k in admin.get("/admin/keys", project=project)["data"]] == [first["id"]]
    assert admin.get(f"/admin/keys/{first['id']}")["expires_at"] is None
    tenant_admin = AdminClient(admin.url, setup_key(admin, "expiry-co", role="tenant_admin")["key"])
    assert len(tenant_admin.get("/admin/keys")["data"]) == 2
    # the forms clients send still work
    for good, shown in (("2099-01-01T00:00:00Z", "2099-01-01T00:00:00Z"), (4102444800, "2100-01-01T00:00:00Z"),
                        ("9999-12-31", "9999-12-31T00:00:00Z"), ("", None), (None, None)):
        assert admin.post("/admin/keys", {"project": project, "expires_at": good})["expires_at"] == shown
    for none in ("", None):  # no expiry, on purpose (docs/tenancy.md): a PATCH with either removes one
        admin.patch(f"/admin/keys/{first['id']}", {"expires_at": "2099-01-01T00:00:00Z"})
        assert admin.patch(f"/admin/keys/{first['id']}", {"expires_at": none})["expires_at"] is None


def test_a_new_key_cannot_expire_in_the_past_but_a_patch_may_end_one_now(admin: AdminClient) -> None:
    first = setup_key(admin, "past-co")
    for past in (time.time() - 10, "2020-01-01", 0):
        refused(lambda past=past: admin.post("/admin/keys", {"project": first["project_id"], "expires_at": past}),
                400, "expires_at", "expires_at is in the past")
    assert len(admin.get("/admin/keys", project=first["project_id"])["data"]) == 1
    ended = admin.patch(f"/admin/keys/{first['id']}", {"expires_at": "2020-01-01T00:00:00Z"})
    assert ended["expires_at"] == "2020-01-01T00:00:00Z"


def test_limits_out_of_range_or_of_the_wrong_type_are_refused(admin: AdminClient) -> None:
    for field, bad in (("budget_usd", 1e308), ("budget_usd", 1e9 + 1), ("budget_usd", "Infinity"),
                       ("budget_usd", True), ("budget_usd", "5"), ("rpm", 2**53 + 1), ("rpm", True), ("rpm", "5"),
                       ("rpm", 5.5), ("tpm", True), ("max_parallel", "2"), ("budget_period", 1)):
        refused(lambda field=field, bad=bad: admin.post("/admin/tenants", {"name": "v3", field: bad}), 400, field)
    refused(lambda: admin.get("/admin/tenants/v3"), 404, None)  # nothing was stored
    t = admin.post("/admin/tenants", {"name": "v3", "budget_usd": 5, "rpm": 2**53, "tpm": 1})  # ints for floats
    assert (t["budget_usd"], t["rpm"]) == (5.0, 2**53)
    assert admin.post("/admin/tenants", {"name": "v3-max", "budget_usd": 1e9})["budget_usd"] == 1e9
    for field, bad in (("enabled", "no"), ("enabled", 0), ("rpm", True), ("budget_usd", 1e308)):
        refused(lambda field=field, bad=bad: admin.patch(f"/admin/tenants/{t['id']}", {field: bad}), 400, field)
    assert admin.get(f"/admin/tenants/{t['id']}") == t  # unchanged
    key = setup_key(admin, "v3")
    for bad in (True, "60", 1e308):
        refused(lambda bad=bad: admin.post(f"/admin/keys/{key['id']}/rotate", {"grace_s": bad}), 400, "grace_s")
    assert admin.get(f"/admin/keys/{key['id']}")["prefix"] == key["prefix"]  # not rotated
    assert admin.post(f"/admin/keys/{key['id']}/rotate", {"grace_s": 60})["previous_key_until"]


def test_clearing_a_budget_and_its_period_resets_the_period_to_the_default(admin: AdminClient) -> None:
    t = admin.post("/admin/tenants", {"name": "period-co", "budget_usd": 5, "budget_period": "daily"})
    cleared = admin.patch(f"/admin/tenants/{t['id']}", {"budget_usd": None, "budget_period": None})
    assert (cleared["budget_usd"], cleared["budget_period"]) == (None, "monthly")
    kept = admin.patch(f"/admin/tenants/{t['id']}", {"budget_period": "weekly"})
    assert admin.patch(f"/admin/tenants/{t['id']}", {"rpm": 5})["budget_period"] == kept["budget_period"] == "weekly"


def test_renaming_to_a_taken_name_is_a_409_and_changes_nothing(admin: AdminClient) -> None:
    acme = admin.post("/admin/tenants", {"name": "ren-acme"})
    beta = admin.post("/admin/tenants", {"name": "ren-beta"})
    body = refused(lambda: admin.patch(f"/admin/tenants/{beta['id']}", {"name": "ren-acme"}), 409, "name",
                   "A tenant named `ren-acme` exists already.")
    assert body["code"] == "already_exists"
    assert admin.get(f"/admin/tenants/{beta['id']}")["name"] == "ren-beta"
    assert admin.patch(f"/admin/tenants/{acme['id']}", {"name": "ren-acme"})["name"] == "ren-acme"  # its own name
    web = admin.post("/admin/projects", {"name": "web", "tenant": beta["id"]})
    admin.post("/admin/projects", {"name": "api", "tenant": beta["id"]})
    admin.post("/admin/projects", {"name": "app", "tenant": acme["id"]})
    body = refused(lambda: admin.patch(f"/admin/projects/{web['id']}", {"name": "api"}), 409, "name",
                   "Tenant `ren-beta` has a project `api` already.")
    assert body["code"] == "already_exists"
    assert admin.get(f"/admin/projects/{web['id']}")["name"] == "web"
    assert admin.patch(f"/admin/projects/{web['id']}", {"name": "app"})["name"] == "app"  # another tenant's name


def test_concurrent_creates_of_one_name_make_one_and_refuse_the_rest_with_409(admin: AdminClient) -> None:
    def create(_: int) -> int:
        try:
            admin.post("/admin/tenants", {"name": "race-co"})
            return 201
        except AdminError as err:
            return err.status

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(create, range(16))) == [201] + [409] * 15
    tenant = admin.get("/admin/tenants/race-co")

    def create_project(_: int) -> int:
        try:
            admin.post("/admin/projects", {"name": "p", "tenant": tenant["id"]})
            return 201
        except AdminError as err:
            return err.status

    with ThreadPoolExecutor(8) as pool:
        assert sorted(pool.map(create_project, range(16))) == [201] + [409] * 15


def test_a_list_limit_that_is_not_ascii_digits_is_a_400(admin: AdminClient) -> None:
    for path in ("/admin/tenants", "/admin/projects", "/admin/keys"):
        for bad in ("\u00b2", "\u0663", "1.5", "-1"):
            refused(lambda path=path, bad=bad: admin.get(path, limit=bad), 400, "limit")


def _every_name_refused(admin: AdminClient, key: dict[str, Any], tenant: str, bad: str) -> None:
    """``bad`` as the name of a new or renamed tenant, project and key: a 400 naming ``name`` each time."""
    refused(lambda: admin.post("/admin/tenants", {"name": bad}), 400, "name")
    refused(lambda: admin.patch(f"/admin/tenants/{key['tenant_id']}", {"name": bad}), 400, "name")
    refused(lambda: admin.post("/admin/projects", {"name": bad, "tenant": tenant}), 400, "name")
    refused(lambda: admin.patch(f"/admin/projects/{key['project_id']}", {"name": bad}), 400, "name")
    refused(lambda: admin.post("/admin/keys", {"project": key["project_id"], "name": bad}), 400, "name")
    refused(lambda: admin.patch(f"/admin/keys/{key['id']}", {"name": bad}), 400, "name")


def test_nul_in_a_name_is_a_400_and_in_an_id_a_404(admin: AdminClient) -> None:
    key = setup_key(admin, "nul-co")
    _every_name_refused(admin, key, "nul-co", "a\x00b")
    for path in ("/admin/tenants/a%00b", "/admin/projects/a%00b", "/admin/keys/a%00b"):
        refused(lambda path=path: admin.get(path), 404, None)
    refused(lambda: admin.post("/admin/projects", {"name": "x", "tenant": "a\x00b"}), 404, None)
    refused(lambda: admin.post("/admin/keys", {"project": "a\x00b"}), 404, None)
    for path, query in (("/admin/keys", {"project": "a\x00b"}), ("/admin/projects", {"tenant": "a\x00b"}),
                        ("/admin/tenants", {"after": "a\x00b"}), ("/admin/spend", {"key": "a\x00b"})):
        refused(lambda path=path, query=query: admin.get(path, **query), 404, None)
    assert admin.get(f"/admin/tenants/{key['tenant_id']}")["name"] == "nul-co"
    assert len(admin.get("/admin/keys", tenant="nul-co")["data"]) == 1


def test_names_of_whitespace_only_are_refused(admin: AdminClient) -> None:
    key = setup_key(admin, "blank-co")
    for blank in (" \t ", "  ", "\n"):
        _every_name_refused(admin, key, "blank-co", blank)
    assert admin.post("/admin/keys", {"project": key["project_id"], "name": ""})["name"] == ""  # unnamed: fine
    assert [p["name"] for p in admin.get("/admin/projects", tenant="blank-co")["data"]] == ["web"]


def test_names_with_a_slash_at_either_end_are_refused(admin: AdminClient) -> None:
    key = setup_key(admin, "slash-co")
    refused(lambda: admin.post("/admin/tenants", {"name": "slash-co/"}), 400, "name")  # /admin/tenants/slash-co/
    refused(lambda: admin.post("/admin/projects", {"name": "/web", "tenant": "slash-co"}), 400, "name")
    refused(lambda: admin.patch(f"/admin/projects/{key['project_id']}", {"name": "web/"}), 400, "name")
    assert admin.post("/admin/projects", {"name": "eu/web", "tenant": "slash-co"})["name"] == "eu/web"


def test_metadata_that_cannot_be_stored_as_json_is_a_400(admin: AdminClient) -> None:
    key = setup_key(admin, "deep-co")
    deep: dict[str, Any] = {}
    for _ in range(300):
        deep = {"a": deep}
    refused(lambda: admin.post("/admin/tenants", {"name": "deep-2", "metadata": deep}), 400, "metadata")
    refused(lambda: admin.get("/admin/tenants/deep-2"), 404, None)
    refused(lambda: admin.patch(f"/admin/tenants/{key['tenant_id']}", {"metadata": deep}), 400, "metadata")
    refused(lambda: admin.post("/admin/keys", {"project": key["project_id"], "metadata": deep}), 400, "metadata")
    refused(lambda: admin.patch(f"/admin/keys/{key['id']}", {"metadata": deep}), 400, "metadata")
    refused(lambda: admin.post("/admin/keys", {"project": key["project_id"], "metadata": {"big": "x" * 20_000}}),
            400, "metadata")
    assert admin.get(f"/admin/keys/{key['id']}")["metadata"] == {}
    assert len(admin.get("/admin/keys", tenant="deep-co")["data"]) == 1
    fine = {"team": "search", "tags": ["a", "b"], "nested": {"x": {"y": 1}}}
    assert admin.patch(f"/admin/keys/{key['id']}", {"metadata": fine})["metadata"] == fine


def test_a_project_name_two_tenants_share_is_ambiguous_for_the_master_key(admin: AdminClient) -> None:
    one = setup_key(admin, "amb-one", project="shared")
    setup_key(admin, "amb-two", project="shared")
    body = refused(lambda: admin.post("/admin/keys", {"project": "shared"}), 409, "project", "ambiguous")
    assert body["code"] == "ambiguous_name"
    assert len(admin.get("/admin/keys", project=one["project_id"])["data"]) == 1  # nothing stored
    refused(lambda: admin.get("/admin/keys", project="shared"), 409, "project", "ambiguous")
    refused(lambda: admin.get("/admin/spend", project="shared"), 409, "project", "ambiguous")
    # naming the tenant, or the project by id, settles it
    assert [k["id"] for k in admin.get("/admin/keys", tenant="amb-one", project="shared")["data"]] == [one["id"]]
    assert admin.get("/admin/spend", tenant="amb-one", project="shared")["object"] == "spend_report"
    assert admin.post("/admin/keys", {"project": one["project_id"]})["project_id"] == one["project_id"]
    tenant_admin = AdminClient(admin.url, setup_key(admin, "amb-one", project="shared", role="tenant_admin")["key"])
    assert tenant_admin.post("/admin/keys", {"project": "shared"})["project_id"] == one["project_id"]
    refused(lambda: admin.post("/admin/keys", {"project": "nothing-here"}), 404, None, "No project `nothing-here`")


def test_spend_dates_must_be_whole_days_in_order(admin: AdminClient) -> None:
    for field, bad in (("since", "2026-11-30xyz"), ("until", "2026-11-30T00:00:00Z"), ("since", "20261130"),
                       ("until", "2026-02-30")):
        refused(lambda field=field, bad=bad: admin.get("/admin/spend", **{field: bad}), 400, field)
    refused(lambda: admin.get("/admin/spend", since="2026-12-01", until="2026-11-30"), 400, "since",
            "after until")
    report = admin.get("/admin/spend", since="2026-11-30", until="2026-11-30")
    assert (report["since"], report["until"]) == ("2026-11-30", "2026-11-30")


def test_a_model_name_holding_nul_is_billed_and_holds_up_no_row_after_it(gw: RunningGateway, admin: AdminClient,
                                                                          request: pytest.FixtureRequest) -> None:
    """PostgreSQL text cannot hold NUL: the ledger's and the request log's batch with such a row failed on every
    retry, at the front of the queue, so no later row was written. Now NUL is kept as U+FFFD there."""
    key = setup_key(admin, "nul-model-co")
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="gpt\x00evil", messages=[{"role": "user", "content": "hi"}])
    client.chat.completions.create(model="mock", messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    deadline = time.monotonic() + 10  # the ledger writes off the request path: wait for its rows, bounded
    while True:
        rows = admin.get("/admin/spend", group_by="model", key=key["id"])["data"]
        if sum(r["requests"] for r in rows) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    held = "gpt\ufffdevil" if request.node.callspec.params["gw"] == "postgres" else "gpt\x00evil"
    assert sorted((r["model"], r["requests"]) for r in rows) == [(held, 1), ("mock", 1)]
    [asked] = admin.get("/admin/spend", group_by="key", key=key["id"], model="gpt\x00evil")["data"]
    assert asked["requests"] == 1 and asked["errors"] == 1  # the name as the client sent it finds its row
    logged = admin.get("/admin/requests", key_id=key["id"])["data"]  # read after a flush of the request log
    assert sorted(r["model"] for r in logged) == sorted([held, "mock"])


def test_a_keys_models_are_stored_once_each_in_the_order_given(admin: AdminClient) -> None:
    """``"models": ["mock", "mock"]`` (or ``keys create --models mock,mock``) was stored and shown twice."""
    first = setup_key(admin, "models-co")
    made = admin.post("/admin/keys", {"project": first["project_id"], "models": ["mock-large", "mock", "mock-large"]})
    assert made["models"] == ["mock-large", "mock"]
    assert admin.get(f"/admin/keys/{made['id']}")["models"] == ["mock-large", "mock"]
    changed = admin.patch(f"/admin/keys/{made['id']}", {"models": ["mock", "mock", "mock-large", "mock"]})
    assert changed["models"] == admin.get(f"/admin/keys/{made['id']}")["models"] == ["mock", "mock-large"]
    for bad, param in ((["mock", ""], "models.1"), ([""], "models.0"), (["mock", 5], "models.1"),
                       ([None], "models.0"), (["mock", ["mock"]], "models.1"), ("mock", "models")):
        refused(lambda bad=bad: admin.post("/admin/keys", {"project": first["project_id"], "models": bad}), 400, param)
        refused(lambda bad=bad: admin.patch(f"/admin/keys/{made['id']}", {"models": bad}), 400, param)
    assert admin.get(f"/admin/keys/{made['id']}")["models"] == ["mock", "mock-large"]
    assert len(admin.get("/admin/keys", project=first["project_id"])["data"]) == 2


def test_a_guardrails_entry_in_metadata_that_cannot_apply_is_refused_when_written(admin: AdminClient) -> None:
    """``"metadata": {"guardrails": {"pii": {"mode": "blok"}}}`` on a tenant, project or key answered 200; every
    call then ignored the block (one warning in the server log): the PII block the admin meant was never applied."""
    key = setup_key(admin, "policy-co")
    paths = {"tenant": f"/admin/tenants/{key['tenant_id']}", "project": f"/admin/projects/{key['project_id']}",
             "key": f"/admin/keys/{key['id']}"}
    bad_regex = {"rules": [{"name": "r", "match": {"regex": "("}, "reject": "no"}]}
    for bad, says in (({"pii": {"mode": "blok"}}, "guardrails.pii.mode"), ({"pi": {"mode": "block"}}, "guardrails.pi"),
                      ({"rules": {"name": "r"}}, "guardrails.rules"), ("block", "guardrails"),
                      (bad_regex, "guardrails.rules[0].match.regex")):
        for path in paths.values():
            body = refused(lambda path=path, bad=bad: admin.patch(path, {"metadata": {"guardrails": bad}}), 400,
                           "metadata", says)
            assert body["type"] == "invalid_request_error"
        refused(lambda bad=bad: admin.post("/admin/tenants", {"name": "policy-new", "metadata": {"guardrails": bad}}),
                400, "metadata", says)
        refused(lambda bad=bad: admin.post("/admin/projects", {"name": "p2", "tenant": key["tenant_id"],
                                                               "metadata": {"guardrails": bad}}), 400, "metadata", says)
        refused(lambda bad=bad: admin.post("/admin/keys", {"project": key["project_id"],
                                                           "metadata": {"guardrails": bad}}), 400, "metadata", says)
    assert all(admin.get(path)["metadata"] == {} for path in paths.values())  # nothing was stored
    good = {"guardrails": {"pii": {"mode": "block"}, "rules": [{"name": "r", "match": {"model": "mock"},
                                                                "reject": "no"}]}}
    assert all(admin.patch(path, {"metadata": good})["metadata"] == good for path in paths.values())


def test_null_for_a_name_a_switch_or_metadata_in_a_patch_is_refused_not_ignored(admin: AdminClient) -> None:
    """``PATCH {"metadata": null}`` answered 200 and kept the metadata (a caller clearing it was told it had), as
    did ``"name": null`` and ``"enabled": null``: null clears a limit, so it read as "removed" and was not."""
    key = setup_key(admin, "null-co", metadata={"team": "a"})
    paths = {f"/admin/tenants/{key['tenant_id']}", f"/admin/projects/{key['project_id']}", f"/admin/keys/{key['id']}"}
    for path in paths:
        admin.patch(path, {"metadata": {"team": "a"}})
        before = admin.get(path)
        for field in ("metadata", "name", "enabled"):
            refused(lambda path=path, field=field: admin.patch(path, {field: None}), 400, field, "null")
        assert admin.get(path) == before
        assert admin.patch(path, {"metadata": {}})["metadata"] == {}  # what clears it
