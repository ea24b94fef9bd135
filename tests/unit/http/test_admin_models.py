"""How the admin API reads times and shows records (aigw.http.admin_models)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from aigw.http.admin_models import (
    KeyIn,
    KeyPatch,
    ProjectIn,
    ProjectPatch,
    TenantIn,
    TenantPatch,
    iso,
    key_out,
    parse_time,
)
from aigw.stores.base import ApiKey


@pytest.mark.parametrize("stored, shown", [(1e20, "9999-12-31T23:59:59Z"), (1798761600000, "9999-12-31T23:59:59Z"),
                                           (-1e20, "1970-01-01T00:00:00Z"), (float("inf"), "9999-12-31T23:59:59Z"),
                                           (float("nan"), None), (None, None), (0, "1970-01-01T00:00:00Z")])
def test_a_stored_time_out_of_range_still_shows(stored: float | None, shown: str | None) -> None:
    """Rows saved before expiry was range-checked must not turn every listing into a 500."""
    assert iso(stored) == shown
    key = ApiKey(id="key_1", tenant_id="t", project_id="p", key_hash="h", prefix="sk-aigw-abcd",
                 expires_at=stored, created_at=1_800_000_000.0)
    assert key_out(key)["expires_at"] == shown


@pytest.mark.parametrize("raw, parsed", [("2027-01-01", 1798761600.0), ("2027-01-01T01:00:00+01:00", 1798761600.0),
                                         ("2027-01-01T00:00:00Z", 1798761600.0), (1798761600, 1798761600.0),
                                         (0, 0.0), ("", None), (None, None)])
def test_times_from_1970_to_9999_are_read(raw: object, parsed: float | None) -> None:
    assert parse_time(raw) == parsed


@pytest.mark.parametrize("raw, says", [(1798761600000, "not milliseconds"), (-1, "out of range"),
                                       (10**400, "out of range"), (float("nan"), "out of range"),
                                       ("9999-12-31T23:59:59-01:00", "out of range"), (True, "epoch seconds"),
                                       ({}, "epoch seconds"), ([], "epoch seconds"), ("soon", "ISO 8601")])
def test_anything_else_is_refused(raw: object, says: str) -> None:
    with pytest.raises(ValueError, match=says):
        parse_time(raw)


@pytest.mark.parametrize("cache, says", [
    ({"mode": "bogus"}, "cache.mode: Input should be 'off', 'exact' or 'semantic'"),
    ({"ttl": 5}, "cache.ttl: unknown key; did you mean 'ttl_s'?"),
    ({"max_entries": 5}, "max_entries may only be set in the global cache"),
    ("off", "cache: must be a mapping"),
])
def test_a_keys_cache_setting_that_cannot_apply_is_refused_when_written(cache: object, says: str) -> None:
    """The cache ignores such a setting at request time (logged once); accepted here, the admin never knew."""
    for body in ({"project": "web", "metadata": {"cache": cache}}, {"metadata": {"cache": cache}}):
        with pytest.raises(ValidationError, match=says.replace("(", r"\(").replace("?", r"\?")):
            (KeyIn if "project" in body else KeyPatch).model_validate(body)


def test_a_valid_cache_setting_and_other_metadata_are_kept() -> None:
    body = KeyIn.model_validate({"project": "web", "metadata": {"cache": {"mode": "off"}, "team": "x"}})
    assert body.metadata == {"cache": {"mode": "off"}, "team": "x"}
    assert TenantIn.model_validate({"name": "t", "metadata": {"cache": "free-form"}}).metadata  # keys only


@pytest.mark.parametrize("name, says", [("acme ", "start or end with whitespace"), (" acme", "start or end with"),
                                        ("acme\t", "start or end with whitespace"), ("ac\nme", "control character"),
                                        ("ac\rme", "control character"), ("ac\u200bme", "invisible")])
def test_a_name_that_looks_like_another_or_breaks_a_table_is_refused(name: str, says: str) -> None:
    """``acme `` next to ``acme``: two tenants no table tells apart, and ``{"tenant": "acme "}`` put a project in
    the wrong one; a line break split every table row it was shown in."""
    for model, body in ((TenantIn, {}), (TenantPatch, {}), (ProjectIn, {"tenant": "acme"}), (ProjectPatch, {}),
                        (KeyIn, {"project": "web"}), (KeyPatch, {})):
        with pytest.raises(ValidationError) as info:
            model.model_validate({**body, "name": name})
        assert says in str(info.value), model


def test_names_with_inner_spaces_or_other_scripts_are_kept() -> None:
    for name in ("acme corp", "eu/web", "Zürich", "東京"):
        assert TenantIn.model_validate({"name": name}).name == name
    assert KeyIn.model_validate({"project": "web", "name": ""}).name == ""  # an unnamed key: fine


@pytest.mark.parametrize("models", [[""], ["mock "], [" mock"], ["mock", "\tmock-large"], ["mo\nck"]])
def test_a_model_name_no_call_can_ask_for_is_refused(models: list[str]) -> None:
    """``["mock "]`` made a key every call of which was a 403 "may not use model `mock`", the table showing
    ``mock``; ``[""]`` a key for no model at all, where ``[]`` says so plainly."""
    for model, body in ((KeyIn, {"project": "web"}), (KeyPatch, {})):
        with pytest.raises(ValidationError) as info:
            model.model_validate({**body, "models": models})
        assert "models." in str(info.value)


def test_model_lists_as_sent_are_kept() -> None:
    assert KeyIn.model_validate({"project": "web", "models": ["mock", "openai/gpt-4o"]}).models == ["mock",
                                                                                                    "openai/gpt-4o"]
    assert KeyPatch.model_validate({"models": []}).models == []
    assert KeyPatch.model_validate({"models": None}).models is None
