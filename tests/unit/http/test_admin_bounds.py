"""What a tenant admin may grant: a budget over a window that lies inside one of its own, and no more."""

from __future__ import annotations

import pytest

from aigw import errors
from aigw.http.admin_bounds import check_within
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
