"""Deterministic rules: which request a rule answers, routes or rejects, and config errors that name the field."""

from __future__ import annotations

from typing import Any

import pytest

from aigw.errors import InvalidRequest
from aigw.guardrails.rules import RuleOutcome, RuleSet, last_user_text


def user(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "be nice"}, {"role": "user", "content": text}]


def test_fixed_answer_on_regex_over_the_last_user_message() -> None:
    rules = RuleSet.from_config([{"match": {"regex": "(?i)^ping$"}, "respond": "pong"}])
    assert rules.evaluate("gpt-4o", None, user("PING")) == RuleOutcome("rules[0]", "respond", text="pong")
    assert rules.evaluate("gpt-4o", None, user("ping me later")) is None
    earlier = [{"role": "user", "content": "ping"}, {"role": "assistant", "content": "pong"}, *user("thanks")]
    assert rules.evaluate("gpt-4o", None, earlier) is None  # only the last user message counts


def test_first_matching_rule_wins_and_all_conditions_must_hold() -> None:
    rules = RuleSet.from_config(
        [
            {"name": "cheap-batch", "match": {"model": "gpt-4*", "key_id": ["key_batch", "key_ci"]}, "route": "mini"},
            {"name": "refunds", "match": {"keywords": ["refund", "charge back"]}, "respond": "See /refunds"},
            {"name": "catch-all-gpt4", "match": {"model": "gpt-4*"}, "reject": "gpt-4 is not enabled"},
        ]
    )
    assert rules.evaluate("gpt-4o", "key_ci", user("refund?")) == RuleOutcome("cheap-batch", "route", model="mini")
    assert rules.evaluate("gpt-4o", "key_web", user("I want a REFUND")).rule == "refunds"
    assert rules.evaluate("claude-3", None, user("can you charge\n back this")).rule == "refunds"
    assert rules.evaluate("claude-3", None, user("refunding is a word")) is None  # whole words only
    outcome = rules.evaluate("gpt-4.1", "key_web", user("hello"))
    assert outcome == RuleOutcome("catch-all-gpt4", "reject", text="gpt-4 is not enabled")
    assert rules.evaluate("gpt-3.5", "key_ci", user("hello")) is None


def test_keywords_all_mode_needs_every_keyword() -> None:
    rules = RuleSet.from_config(
        [{"match": {"keywords": ["delete", "account"], "keywords_mode": "all"}, "reject": "no"}]
    )
    assert rules.evaluate("m", None, user("please delete my account")) is not None
    assert rules.evaluate("m", None, user("please delete this file")) is None


def test_templates_fill_known_fields_groups_and_vars_only() -> None:
    rules = RuleSet.from_config(
        [
            {
                "match": {"regex": r"(?i)weather in (?P<city>\w+)"},
                "template": "No weather for {city} on {model} (key {key_id}); see {url}. {{literal}} #{message_count}",
                "vars": {"url": "https://example.com/weather"},
            },
            {"match": {"model": "echo"}, "template": "You said: {last_user_message}"},
        ]
    )
    outcome = rules.evaluate("gpt-4o", "k1", user("What's the weather in Lisbon?"))
    assert outcome is not None
    assert outcome.text == "No weather for Lisbon on gpt-4o (key k1); see https://example.com/weather. {literal} #2"
    echoed = rules.evaluate("echo", None, user("{model.__class__} {0}"))
    assert echoed is not None and echoed.text == "You said: {model.__class__} {0}"  # user text is data, not a template


def test_list_content_and_missing_user_message() -> None:
    rules = RuleSet.from_config(
        [{"match": {"regex": "hello"}, "respond": "hi"}, {"match": {"model": "m"}, "respond": "model rule"}]
    )
    parts = [{"type": "image_url", "image_url": {"url": "x"}}, {"type": "text", "text": "hello there"}]
    assert rules.evaluate("x", None, [{"role": "user", "content": parts}]) is not None
    only_system = [{"role": "system", "content": "hello"}]
    assert last_user_text(only_system) is None
    assert rules.evaluate("x", None, only_system) is None
    assert rules.evaluate("m", None, only_system) == RuleOutcome("rules[1]", "respond", text="model rule")
    assert RuleSet.from_config(None).evaluate("m", None, only_system) is None


@pytest.mark.parametrize(
    ("config", "param", "words"),
    [
        ({"match": {}}, "guardrails.rules", "list"),
        ([["respond"]], "guardrails.rules[0]", "mapping"),
        ([{"match": {"regex": "x"}, "respond": "y", "colour": "red"}], "guardrails.rules[0].colour", "unknown key"),
        ([{"respond": "y"}], "guardrails.rules[0].match", "match"),
        ([{"match": {}, "respond": "y"}], "guardrails.rules[0].match", "match"),
        ([{"match": {"regx": "x"}, "respond": "y"}], "guardrails.rules[0].match.regx", "unknown match key"),
        ([{"match": {"regex": "(unclosed"}, "respond": "y"}], "guardrails.rules[0].match.regex", "invalid regex"),
        ([{"match": {"model": []}, "respond": "y"}], "guardrails.rules[0].match.model", "non-empty"),
        (
            [{"match": {"keywords": ["a"], "keywords_mode": "most"}, "respond": "y"}],
            "guardrails.rules[0].match.keywords_mode",
            "any",
        ),
        ([{"match": {"model": "m"}}], "guardrails.rules[0]", "exactly one"),
        ([{"match": {"model": "m"}, "respond": "a", "route": "b"}], "guardrails.rules[0]", "exactly one"),
        ([{"match": {"model": "m"}, "respond": 5}], "guardrails.rules[0].respond", "string"),
        ([{"match": {"model": "m"}, "template": "{secret}"}], "guardrails.rules[0].template", "'secret'"),
        ([{"match": {"model": "m"}, "template": "{model.__class__}"}], "guardrails.rules[0].template", "brace"),
        ([{"match": {"model": "m"}, "template": "x", "vars": {"a": 1}}], "guardrails.rules[0].vars", "vars"),
        (
            [
                {"name": "a", "match": {"model": "m"}, "respond": "x"},
                {"name": "a", "match": {"model": "n"}, "respond": "y"},
            ],
            "guardrails.rules",
            "duplicate",
        ),
    ],
)
def test_bad_config_names_the_field(config: Any, param: str, words: str) -> None:
    with pytest.raises(InvalidRequest) as exc:
        RuleSet.from_config(config)
    assert exc.value.param == param
    assert words in exc.value.message


def test_config_prefix_is_used_for_overrides() -> None:
    with pytest.raises(InvalidRequest) as exc:
        RuleSet.from_config([{"match": {"regex": "("}, "respond": "x"}], prefix="keys.k1.guardrails.rules")
    assert exc.value.param == "keys.k1.guardrails.rules[0].match.regex"
