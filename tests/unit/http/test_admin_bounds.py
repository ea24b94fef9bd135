"""What a tenant admin may grant: a budget over a window that lies inside one of its own, and no more."""

from __future__ import annotations

import pytest

from aigw import errors
from aigw.http.admin_bounds import check_within, guarded_metadata
from aigw.http.admin_models import MAX_METADATA_BYTES
from aigw.pipeline.context import Principal
from aigw.stores.base import PERIODS, ApiKey, Limits, Period


def _key(budget: float | None, period: Period = "monthly") -> ApiKey:
    return ApiKey(id="k", tenant_id="t", project_id="p", key_hash="h", prefix="sk-aigw-xxxx",
                  limits=Limits(budget_usd=budget, budget_period=period))


@pytest.mark.parametrize("own", PERIODS)
@pytest.mark.parametrize("asked", PERIODS)
def test_a_budget_window_must_lie_inside_one_of_the_admins_own(own: Period, asked: Period) -> None:
    # a week can straddle two months, so neither of weekly and monthly lies inside the other
    refused = {("weekly", "daily"), ("weekly", "monthly"), ("monthly", "daily"), ("monthly", "weekly"),
               ("total", "daily"), ("total", "weekly"), ("total", "monthly")}
    if (own, asked) not in refused:
        check_within(_key(10, own), _key(10, asked))
        return
    with pytest.raises(errors.PermissionDenied) as err:
        check_within(_key(10, own), _key(10, asked))
    assert err.value.param == "budget_period"


def test_an_admin_without_a_budget_grants_any_and_one_with_a_budget_no_more() -> None:
    check_within(_key(None), _key(None))
    with pytest.raises(errors.PermissionDenied) as err:
        check_within(_key(10), _key(None))
    assert err.value.param == "budget_usd" and "10 USD (monthly)" in str(err.value)
    check_within(_key(10), _key(None, "daily"), fields={"rpm"})  # a change that does not touch the budget


def test_a_tenant_admins_metadata_keeps_the_masters_guardrails_within_the_size_limit() -> None:
    tenant_admin = Principal(key_id="k-admin", tenant_id="t", is_admin=True)
    saved = {"guardrails": {"pii": {"mode": "block"}}, "team": "a"}
    assert guarded_metadata(saved, {"team": "b"}, tenant_admin) == {"team": "b", "guardrails": saved["guardrails"]}
    with pytest.raises(errors.PermissionDenied) as denied:
        guarded_metadata(saved, {"guardrails": None}, tenant_admin)
    assert denied.value.param == "metadata.guardrails"
    assert guarded_metadata(saved, {"guardrails": {}}, Principal(key_id="master", is_admin=True)) == {"guardrails": {}}
    big = {"guardrails": {"rules": "x" * (MAX_METADATA_BYTES // 2)}}
    with pytest.raises(errors.InvalidRequest) as err:  # fits alone, not with the master's entry kept
        guarded_metadata(big, {"note": "y" * (MAX_METADATA_BYTES // 2 + 100)}, tenant_admin)
    assert err.value.param == "metadata"
