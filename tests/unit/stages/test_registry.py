"""The stage registry: a ``pipeline:`` list that leaves out a tenancy stage while tenancy is on is said at start-up
(keys' limits or budgets not enforced, or no spend recorded, with no word of it before)."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigw.app import build_app
from aigw.config.models import GatewayConfig


def _app(tmp_path: Path, pipeline: list[str] | None) -> None:
    build_app(GatewayConfig.model_validate({
        "server": {"master_key": "sk-test"}, "database_url": f"sqlite:///{tmp_path}/gw.db",
        "models": [{"name": "m", "provider": "mock"}], "tenancy": {"enabled": True}, "pipeline": pipeline}))


def test_a_pipeline_without_the_budget_stage_says_budgets_are_not_enforced(tmp_path: Path,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    _app(tmp_path, ["observe", "limits", "accounting"])
    said = [r.getMessage() for r in caplog.records if "leaves out" in r.getMessage()]
    assert said == ["tenancy is on but pipeline: leaves out budget (budgets are not enforced)"]


def test_the_default_pipeline_and_one_with_every_tenancy_stage_say_nothing(tmp_path: Path,
                                                                           caplog: pytest.LogCaptureFixture) -> None:
    _app(tmp_path, None)
    _app(tmp_path, ["limits", "budget", "cache", "accounting"])
    assert not [r for r in caplog.records if "leaves out" in r.getMessage()]


def test_an_unknown_stage_is_named_with_its_place_in_the_list(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"pipeline\[1\]: unknown pipeline stage 'limit'; known: observe, limits"):
        _app(tmp_path, ["observe", "limit"])
