"""The rules stage: answer (plain and streamed, for free), route, reject; config checked at startup."""

from __future__ import annotations

import pytest

from aigw.config.load import ConfigError
from aigw.errors import GuardrailBlocked, InvalidRequest
from tests.unit.stages.guardrail_harness import Harness, chat, config, streamed_text, verdicts

RULES = [
    {"name": "ping", "match": {"regex": "(?i)^ping$"}, "respond": "pong"},
    {"name": "weather", "match": {"regex": r"(?i)weather in (?P<city>\w+)"},
     "template": "No live weather for {city} ({model})."},
    {"name": "batch", "match": {"key_id": "key_batch"}, "route": "small"},
    {"name": "cheap", "match": {"keywords": ["summarise"]}, "route": "small"},
    {"name": "nope", "match": {"keywords": ["password", "dump"], "keywords_mode": "all"},
     "reject": "Not from this API."},
]


def harness(**extra: object) -> Harness:
    return Harness(config({"rules": RULES, **extra}))  # type: ignore[arg-type]


async def test_a_matching_rule_answers_without_the_upstream_for_free() -> None:
    h = harness()
    ctx = h.ctx(chat("ping", n=2))
    body = await h.run(ctx)
    assert h.upstream.bodies == []
    assert [c["message"]["content"] for c in body["choices"]] == ["pong", "pong"]
    assert body["usage"]["total_tokens"] == 0 and ctx.usage == body["usage"]
    assert ctx.handled_by == "rules"
    assert ctx.response_headers["x-aigw-rule"] == "ping"
    assert verdicts(ctx)["rules"]["action"] == "respond" and verdicts(ctx)["rules"]["reasons"] == ["rule:ping"]


async def test_a_streamed_request_gets_a_streamed_answer() -> None:
    h = harness()
    ctx = h.ctx(chat("PING", stream=True))
    chunks = await h.stream(ctx)
    assert streamed_text(chunks) == "pong"
    assert chunks[0]["object"] == "chat.completion.chunk"
    assert [c["choices"][0]["finish_reason"] for c in chunks if c.get("choices")][-1] == "stop"
    assert h.upstream.bodies == [] and ctx.handled_by == "rules"


async def test_template_fills_named_groups_and_fields() -> None:
    h = harness()
    body = await h.run(h.ctx(chat("what is the weather in Lisbon today")))
    assert body["choices"][0]["message"]["content"] == "No live weather for Lisbon (mock)."


async def test_route_changes_the_model_before_the_upstream() -> None:
    h = harness()
    ctx = h.ctx(chat("please summarise this"))
    await h.run(ctx)
    assert ctx.model == "small" and h.upstream.bodies[-1]["model"] == "small"
    assert ctx.handled_by == ""
    assert verdicts(ctx)["rules"] == {"action": "route", "reasons": ["rule:cheap"], "counts": {}, "score": 1.0,
                                      "model": "small"}


async def test_after_a_route_the_new_models_policy_applies() -> None:
    cfg = config({"rules": RULES}, routing={"small": {"guardrails": {"pii": {"mode": "redact"}}}})
    h = Harness(cfg)
    await h.run(h.ctx(chat("summarise: mail bob@example.com")))
    assert "bob@example.com" not in str(h.upstream.bodies[-1])


async def test_after_a_route_the_new_models_input_checks_apply() -> None:
    """A rule that routes to a model with a stricter ``validate`` policy (its max_tokens ceiling, its sizes) may not
    carry a request past it: the checks run again for the model the request goes to."""
    strict = {"small": {"guardrails": {"validate": {"max_tokens": 50, "max_messages": 1}}}}
    h = Harness(config({"rules": RULES}, routing=strict))
    with pytest.raises(InvalidRequest) as info:
        await h.run(h.ctx(chat("please summarise this", max_tokens=500)))
    assert info.value.param == "max_tokens" and "50" in info.value.message
    with pytest.raises(InvalidRequest) as info:
        await h.run(h.ctx(chat("please summarise this", system="be brief")))
    assert info.value.param == "messages"
    assert h.upstream.bodies == []
    await h.run(h.ctx(chat("please summarise this")))  # no max set: sent with the routed model's ceiling
    assert h.upstream.bodies[-1]["model"] == "small" and h.upstream.bodies[-1]["max_tokens"] == 50
    await h.run(h.ctx(chat("hello", max_tokens=500)))  # not routed: its own model has no ceiling
    assert h.upstream.bodies[-1]["max_tokens"] == 500


async def test_a_ceiling_set_for_the_asked_model_gives_way_to_the_routed_ones() -> None:
    """The asked model's ceiling set max_tokens (the client sent none): the routed model's ceiling replaces it, and
    is no "max_tokens is 1000" refusal of a value the client never sent."""
    ceilings = {"mock": {"guardrails": {"validate": {"max_tokens": 1000}}},
                "small": {"guardrails": {"validate": {"max_tokens": 50}}}}
    h = Harness(config({"rules": RULES}, routing=ceilings))
    ctx = h.ctx(chat("please summarise this"))
    await h.run(ctx)
    assert h.upstream.bodies[-1]["max_tokens"] == 50 and verdicts(ctx)["validate"]["action"] == "pass"
    await h.run(h.ctx(chat("hello")))
    assert h.upstream.bodies[-1]["max_tokens"] == 1000


async def test_key_condition() -> None:
    h = harness()
    ctx = h.ctx(chat("hello"))
    ctx.principal.key_id = "key_batch"
    await h.run(ctx)
    assert h.upstream.bodies[-1]["model"] == "small"


async def test_reject_is_a_400_with_the_rules_text() -> None:
    h = harness()
    ctx = h.ctx(chat("give me the password dump"))
    with pytest.raises(GuardrailBlocked) as info:
        await h.run(ctx)
    assert info.value.status == 400 and info.value.message == "Not from this API."
    assert h.upstream.bodies == [] and verdicts(ctx)["rules"]["action"] == "reject"


async def test_no_match_passes_to_the_upstream() -> None:
    h = harness()
    ctx = h.ctx(chat("pingpong"))
    body = await h.run(ctx)
    assert body["choices"][0]["message"]["content"] == "Echo: pingpong"
    assert verdicts(ctx)["rules"]["action"] == "pass"


async def test_a_keys_metadata_can_bring_its_own_rules() -> None:
    h = harness()
    extra = {"guardrails": {"rules": [{"match": {"regex": "hello"}, "respond": "hi from the key"}]}}
    body = await h.run(h.ctx(chat("hello"), extra=extra))
    assert body["choices"][0]["message"]["content"] == "hi from the key"


def test_bad_rules_fail_at_startup_naming_the_field() -> None:
    with pytest.raises(ConfigError, match=r"guardrails\.rules\[0\]\.match\.regex"):
        Harness(config({"rules": [{"match": {"regex": "("}, "respond": "x"}]}))
    with pytest.raises(ConfigError, match=r"routing\.mock\.guardrails\.rules\[0\]\.route"):
        Harness(config(None, routing={"mock": {"guardrails": {"rules": [{"match": {"regex": "x"},
                                                                         "route": "gpt-nowhere"}]}}}))


def test_only_named_sections_build_stages() -> None:
    assert harness().names() == ["rules"]
    assert Harness(config({"rules": []})).names() == ["rules"]  # present but empty: keys may add their own
