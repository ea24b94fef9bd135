"""Policy resolution (global <- model <- key) and the request's own controls."""

from __future__ import annotations

import pytest

from aigw import errors
from aigw.config.cache import CacheConfig
from aigw.pipeline.context import Principal, RequestContext
from aigw.pipeline.stages.cache_policy import Policies, merge, read_controls
from aigw.types import JSON


def ctx(body: JSON | None = None, headers: dict[str, str] | None = None, extra: JSON | None = None,
        model: str = "m") -> RequestContext:
    return RequestContext(request_id="r", api="openai", endpoint="chat", body=body or {"messages": []},
                          model=model, headers=headers or {}, principal=Principal(extra=extra or {}))


def test_override_sets_only_the_fields_it_names() -> None:
    base = CacheConfig(mode="exact", ttl_s=100, semantic={"threshold": 0.9, "max_turns": 3})  # type: ignore[arg-type]
    merged = merge(base, CacheConfig.model_validate({"ttl_s": 5, "semantic": {"threshold": 0.97}}))
    assert (merged.mode, merged.ttl_s) == ("exact", 5)
    assert (merged.semantic.threshold, merged.semantic.max_turns) == (0.97, 3)


def test_model_then_key_override() -> None:
    policies = Policies(CacheConfig(ttl_s=100), {"m": CacheConfig.model_validate({"ttl_s": 10})})
    assert policies.for_request(ctx()).ttl_s == 10
    assert policies.for_request(ctx(model="x")).ttl_s == 100
    assert policies.for_request(ctx(extra={"cache": {"ttl_s": 3}})).ttl_s == 3
    assert policies.for_request(ctx(extra={"cache": {"mode": "off"}}, model="x")).mode == "off"
    assert policies.for_request(ctx(extra={"metadata": {"cache": {"ttl_s": 7}}})).ttl_s == 7  # issue 4's keys


def test_a_key_may_not_resize_the_shared_store(caplog: pytest.LogCaptureFixture) -> None:
    policies = Policies(CacheConfig(max_entries=50), {})
    asking = RequestContext(request_id="r", api="openai", endpoint="chat", body={"messages": []}, model="m",
                            principal=Principal(key_id="key_9", tenant_id="ten_9",
                                                extra={"cache": {"max_entries": 10**9, "ttl_s": 1}}))
    assert policies.for_request(asking).ttl_s == 3600
    assert "key key_9, tenant ten_9" in caplog.text  # the operator can find the key to fix


def test_an_ignored_key_setting_is_logged_with_the_fields_at_fault(caplog: pytest.LogCaptureFixture) -> None:
    policies = Policies(CacheConfig(ttl_s=100), {})
    bad = {"metadata": {"cache": {"ttl": 5, "semantic": {"threshold": 1.5}}}}
    assert policies.for_request(ctx(extra=bad)).ttl_s == 100
    assert "cache.ttl: unknown key; did you mean 'ttl_s'?" in caplog.text  # not "1 validation error for ..."
    assert "cache.semantic.threshold: Input should be less than or equal to 1" in caplog.text
    policies.for_request(ctx(extra={"cache": "off"}))
    assert "cache: must be a mapping" in caplog.text


def test_header_directives() -> None:
    c = read_controls(ctx(headers={"x-aigw-cache": "no-store, ttl=30"}))
    assert (c.no_cache, c.no_store, c.ttl_s) == (False, True, 30.0)
    assert read_controls(ctx(headers={"x-aigw-cache": "No-Cache"})).no_cache


def test_body_object_is_taken_out_of_openai_and_anthropic_bodies() -> None:
    openai_ctx = ctx({"messages": [], "cache": {"no_cache": True, "ttl": 9}})
    c = read_controls(openai_ctx)
    assert c.no_cache and c.ttl_s == 9 and "cache" not in openai_ctx.body
    anthropic_ctx = ctx({"messages": [], "_anthropic": {"cache": "no-store"}})
    assert read_controls(anthropic_ctx).no_store and "_anthropic" not in anthropic_ctx.body
    kept = ctx({"messages": [], "_anthropic": {"cache": {"semantic": False}, "top_k": 2}})
    assert read_controls(kept).semantic is False and kept.body["_anthropic"] == {"top_k": 2}


def test_header_and_body_add_up_and_the_body_never_undoes_the_header() -> None:
    def controls(header: str, body: object) -> tuple[bool, bool, float | None, bool]:
        c = read_controls(ctx({"messages": [], "cache": body}, headers={"x-aigw-cache": header}))
        return c.no_cache, c.no_store, c.ttl_s, c.semantic
    assert controls("no-store", {"no_store": False}) == (False, True, None, True)
    assert controls("no-cache", {"no_cache": False, "semantic": True}) == (True, False, None, True)
    assert controls("ttl=30", {"ttl_s": 60, "no_store": True}) == (False, True, 30.0, True)
    assert controls("ttl=60", {"ttl_s": 30, "semantic": False}) == (False, False, 30.0, False)
    assert controls("ttl=60, ttl=20", "ttl=40") == (False, False, 20.0, True)


@pytest.mark.parametrize("value", ["ttl=0", "ttl=nan", "sometimes", "ttl=", "ttl=inf", "ttl=1e309"])
def test_bad_header_is_a_400_naming_the_header(value: str) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        read_controls(ctx(headers={"x-aigw-cache": value}))
    assert info.value.param == "x-aigw-cache"


@pytest.mark.parametrize("value", ["5", 1e309, True, 0, -1])
def test_a_body_ttl_must_be_a_positive_finite_number(value: object) -> None:
    with pytest.raises(errors.InvalidRequest) as info:
        read_controls(ctx({"messages": [], "cache": {"ttl_s": value}}))
    assert info.value.param == "cache.ttl_s"
