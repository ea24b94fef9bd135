"""What an SDK sees on the refusals that are not a key's, project's or tenant's own rate limit: every
deployment of a model at its own caps, and a prompt too large for a tokens-per-minute cap. The same
x-ratelimit-* (and, on /v1/messages, anthropic-ratelimit-*) figures as any other refusal, in memory and with
the rate windows in Redis."""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from aigw.cli.admin_client import AdminClient
from aigw.durations import parse_go_duration
from tests.integration.tenancy_support import MASTER, PRICED_MOCK, chat_body, gateway_config, setup_key
from tests.support.gateway import RunningGateway, running_gateway

# two deployments of `capped`, each with its own rpm: the one called first frees first
CAPPED = [{"name": "capped", "provider": "mock", "id": "cap-one", "rpm": 1},
          {"name": "capped", "provider": "mock", "id": "cap-three", "rpm": 3}]
RPM = {"cap-one": 1, "cap-three": 3}
# two deployments of `narrow`, each with a tpm no long prompt fits: the larger one's figures go into the 429
NARROW = [{"name": "narrow", "provider": "mock", "id": "narrow-400", "tpm": 400},
          {"name": "narrow", "provider": "mock", "id": "narrow-800", "tpm": 800}]


@pytest.fixture(params=["memory", "redis"])
def gw(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RunningGateway]:
    cfg = gateway_config(tmp_path / "gw.db", models=[PRICED_MOCK, *CAPPED, *NARROW])
    if request.param == "redis":
        url, prefix = request.getfixturevalue("redis_isolated")
        cfg.update(redis_url=url, redis_prefix=prefix)
    with running_gateway(cfg) as g:
        yield g


def _seconds_until(rfc3339: str) -> float:
    return (dt.datetime.fromisoformat(rfc3339.replace("Z", "+00:00")) - dt.datetime.now(dt.UTC)).total_seconds()


def test_every_deployment_full_carries_the_figures_of_the_one_that_frees_first(gw: RunningGateway) -> None:
    key = setup_key(AdminClient(gw.url, MASTER), "full-hdr-co")  # no limits of its own: the figures are the caps'
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
    first = client.chat.completions.with_raw_response.create(**chat_body(model="capped"))
    frees_first = first.headers["x-aigw-deployment"]  # its count leaves the window a second before the others
    time.sleep(1.1)
    for _ in range(3):  # the rest of the four requests the two deployments take in a minute
        client.chat.completions.create(**chat_body(model="capped"))
    with pytest.raises(openai.RateLimitError, match="Every deployment of `capped`") as err:
        client.chat.completions.create(**chat_body(model="capped"))
    assert err.value.status_code == 429 and err.value.type == "rate_limit_error"
    h = err.value.response.headers
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == (str(RPM[frees_first]), "0")
    reset = parse_go_duration(h["x-ratelimit-reset-requests"])
    assert reset is not None and 55 < reset < 59.5  # its first call, ~1.1 s older than the others, leaves then
    assert int(h["retry-after"]) == math.ceil(reset)  # Retry-After is the reset, rounded up
    assert "x-ratelimit-limit-tokens" not in h  # no tpm cap anywhere: nothing to say about tokens
    # the Anthropic endpoint says the same under Anthropic's names
    claude = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=0)
    with pytest.raises(anthropic.RateLimitError) as refused:
        claude.messages.create(model="capped", max_tokens=20, messages=[{"role": "user", "content": "hi"}])
    assert refused.value.status_code == 429
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index, call-overload]
    a = refused.value.response.headers
    assert (a["anthropic-ratelimit-requests-limit"], a["anthropic-ratelimit-requests-remaining"]) == (
        str(RPM[frees_first]), "0")
    assert 54 < _seconds_until(a["anthropic-ratelimit-requests-reset"]) <= int(a["retry-after"]) + 1


def test_every_deployment_full_on_tokens_says_so_in_the_token_figures(tmp_path: Path) -> None:
    models = [PRICED_MOCK, {"name": "capped", "provider": "mock", "id": "cap-tpm", "tpm": 2000}]
    with running_gateway(gateway_config(tmp_path / "gw.db", models=models)) as gw:
        key = setup_key(AdminClient(gw.url, MASTER), "full-tpm-co", rpm=50)
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        ask: dict[str, Any] = chat_body("word " * 300, model="capped", max_tokens=1000)
        with pytest.raises(openai.RateLimitError, match="Every deployment") as err:
            for _ in range(10):  # ~1,300 tokens estimated each: the second is over the deployment's tpm
                client.chat.completions.create(**ask)
        h = err.value.response.headers
        assert (h["x-ratelimit-limit-tokens"], h["x-ratelimit-remaining-tokens"]) == ("2000", "0")
        reset = parse_go_duration(h["x-ratelimit-reset-tokens"])
        assert reset is not None and 0 < reset <= int(h["retry-after"]) == math.ceil(max(1.0, reset))
        assert h["x-ratelimit-limit-requests"] == "50"  # the key's requests figures stay: it has no rpm cap



PROSE = ("The quarterly report shows that revenue grew in every region, led by strong demand for the new product "
         "line, while costs, including logistics and marketing, rose more slowly than expected. ")


def test_a_prompt_too_large_for_the_tpm_says_what_the_level_has_left_and_sdks_do_not_retry(
        gw: RunningGateway) -> None:
    key = setup_key(AdminClient(gw.url, MASTER), "too-large-hdr-co", rpm=5, tpm=1000)
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=2)
    client.chat.completions.create(**chat_body())  # some tokens and one request in the key's windows
    with pytest.raises(openai.RateLimitError, match="Request too large for key on tokens per minute") as err:
        client.chat.completions.create(**chat_body(PROSE * 40))  # ~1,400 tokens by the tokenizer too
    assert err.value.status_code == 429 and err.value.code == "rate_limit_exceeded"
    h = err.value.response.headers
    assert h["x-should-retry"] == "false" and "retry-after" not in h  # no wait lets it through
    assert h["x-ratelimit-limit-tokens"] == "1000"
    assert 900 < int(h["x-ratelimit-remaining-tokens"]) < 1000  # what the window has left, not 0: smaller calls fit
    reset = parse_go_duration(h["x-ratelimit-reset-tokens"])
    assert reset is not None and 55 < reset <= 60  # the first call's tokens leave the window then
    # the requests as they stand: the first call's (the refusals, one each, took none: the SDK did not retry)
    assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("5", "4")
    claude = anthropic.Anthropic(base_url=gw.url, api_key=key["key"], max_retries=2)
    with pytest.raises(anthropic.RateLimitError) as refused:
        claude.messages.create(model="mock", max_tokens=20, messages=[{"role": "user", "content": PROSE * 40}])
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index, call-overload]
    a = refused.value.response.headers
    assert a["x-should-retry"] == "false" and "retry-after" not in a
    assert a["anthropic-ratelimit-tokens-limit"] == "1000"
    assert 900 < int(a["anthropic-ratelimit-tokens-remaining"]) < 1000
    assert 54 < _seconds_until(a["anthropic-ratelimit-tokens-reset"]) <= 61
    assert (a["anthropic-ratelimit-requests-limit"], a["anthropic-ratelimit-requests-remaining"]) == ("5", "4")
    client.chat.completions.create(**chat_body("a short one"))  # and the key still works


def test_a_prompt_too_large_for_every_deployment_says_what_the_largest_has_left(gw: RunningGateway) -> None:
    key = setup_key(AdminClient(gw.url, MASTER), "narrow-hdr-co", rpm=5)  # the key has no tpm: the caps do
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=2)
    client.chat.completions.create(**chat_body("a short one", model="narrow", max_tokens=20))  # some tokens used
    with pytest.raises(openai.RateLimitError, match="too large for the deployments of `narrow`") as err:
        client.chat.completions.create(**chat_body(PROSE * 40, model="narrow"))  # ~1,400 tokens: fits neither
    h = err.value.response.headers
    assert h["x-should-retry"] == "false" and "retry-after" not in h  # no wait lets it through
    assert h["x-ratelimit-limit-tokens"] == "800"  # the largest cap, as it stands (the short call may be in it)
    assert 700 < int(h["x-ratelimit-remaining-tokens"]) <= 800
    reset = parse_go_duration(h["x-ratelimit-reset-tokens"])
    assert reset is not None and (reset == 0 or 55 < reset <= 60)
    assert h["x-ratelimit-limit-requests"] == "5"  # the requests figures stay the key's



def test_every_deployment_full_after_a_failed_attempt_still_carries_the_deployments_figures(
        tmp_path: Path) -> None:
    # `flaky` fails; its fallback's one deployment has had its request of the minute. A call was made, so the
    # request stays counted in the key's window; the refusal still says which deployment frees when
    flaky = {"name": "flaky", "provider": "mock", "fail_rate": 1.0, "mock": {"fail_kind": "upstream_error"}}
    spare = {"name": "spare", "provider": "mock", "id": "spare-one", "rpm": 1}
    cfg = gateway_config(tmp_path / "gw.db", models=[PRICED_MOCK, flaky, spare], circuit_breaker={"enabled": False},
                         routing={"*": {"num_retries": 0}, "flaky": {"num_retries": 0, "fallbacks": ["spare"]}})
    with running_gateway(cfg) as gw:
        key = setup_key(AdminClient(gw.url, MASTER), "full-after-fail-co", rpm=50)
        client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
        client.chat.completions.create(**chat_body(model="spare"))
        with pytest.raises(openai.RateLimitError, match="Every deployment of `spare`") as err:
            client.chat.completions.create(**chat_body(model="flaky"))
        h = err.value.response.headers
        assert (h["x-ratelimit-limit-requests"], h["x-ratelimit-remaining-requests"]) == ("1", "0")
        reset = parse_go_duration(h["x-ratelimit-reset-requests"])
        assert reset is not None and 55 < reset <= 60 and int(h["retry-after"]) == math.ceil(reset)
        after = client.chat.completions.with_raw_response.create(**chat_body())
        assert after.headers["x-ratelimit-remaining-requests"] == "47"  # all three count: each reached an upstream


def test_a_prompt_too_large_for_every_deployment_takes_no_request_from_the_keys_rpm(gw: RunningGateway) -> None:
    # no deployment was called and none ever could be: as for the key's own "too large" (which takes nothing) and
    # "every deployment full" (given back), the request goes back out of the key's rpm window
    key = setup_key(AdminClient(gw.url, MASTER), "narrow-rpm-co", rpm=3)
    client = openai.OpenAI(base_url=gw.v1, api_key=key["key"], max_retries=0)
    for _ in range(3):
        with pytest.raises(openai.RateLimitError, match="too large for the deployments of `narrow`"):
            client.chat.completions.create(**chat_body(PROSE * 40, model="narrow"))
    ok = client.chat.completions.with_raw_response.create(**chat_body("a short one", model="narrow", max_tokens=20))
    assert ok.headers["x-ratelimit-remaining-requests"] == "2"  # this call alone is in the window
