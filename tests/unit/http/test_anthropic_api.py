"""The Anthropic endpoint's parse step: what it hands the pipeline."""

from __future__ import annotations

import datetime as dt
import time

import pytest

from aigw import errors
from aigw.http.anthropic_api import AnthropicFormat, parse_messages
from aigw.http.flow import _deadline
from aigw.schema.anthropic import PRIVATE_KEY

BODY = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}


def test_the_timeout_field_sets_the_deadline_and_is_not_sent_upstream() -> None:
    # docs/routing.md: body field "timeout", removed before the body goes upstream; on /v1/messages it was
    # kept among the Anthropic-only fields: ignored, and sent to an Anthropic upstream, which refuses it
    parsed = parse_messages({**BODY, "timeout": 2.5})
    assert _deadline({}, parsed.body) == 2.5
    assert "timeout" not in parsed.body and "timeout" not in parsed.body[PRIVATE_KEY]


@pytest.mark.parametrize("bad", ["abc", -1, 0, None, True, []])
def test_a_bad_timeout_is_refused_naming_it(bad: object) -> None:
    parsed = parse_messages({**BODY, "timeout": bad})
    with pytest.raises(errors.InvalidRequest) as info:
        _deadline({}, parsed.body)
    assert info.value.param == "timeout"


def test_rate_limit_resets_become_rfc_3339_times_for_requests_and_tokens() -> None:
    stage = {"x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "9",
             "x-ratelimit-reset-requests": "1m0s", "x-ratelimit-limit-tokens": "1000",
             "x-ratelimit-remaining-tokens": "900", "x-ratelimit-reset-tokens": "20ms"}
    before = time.time()
    got = {k.decode(): v.decode() for k, v in AnthropicFormat().own_headers("req_1", stage)}
    assert (got["anthropic-ratelimit-tokens-limit"], got["anthropic-ratelimit-tokens-remaining"]) == ("1000", "900")
    for kind, wait in (("requests", 60), ("tokens", 0.02)):
        at = dt.datetime.fromisoformat(got[f"anthropic-ratelimit-{kind}-reset"].replace("Z", "+00:00")).timestamp()
        assert before + wait <= at <= time.time() + wait + 1  # rounded up to the second
    assert not any("input-tokens" in k or "output-tokens" in k for k in got)


def test_a_limit_whose_figures_are_unknown_is_sent_alone_not_as_nothing_left() -> None:
    # a prompt too large for a tpm whose store read failed carries x-ratelimit-limit-tokens alone (docs/tenancy.md:
    # "remaining 0" would hold a client-side limiter back from the calls that fit); /v1/messages said remaining 0
    headers = AnthropicFormat().own_headers("req_1", {"x-ratelimit-limit-tokens": "50"})
    got = {k.decode(): v.decode() for k, v in headers}
    assert got["anthropic-ratelimit-tokens-limit"] == "50"
    assert "anthropic-ratelimit-tokens-remaining" not in got and "anthropic-ratelimit-tokens-reset" not in got
