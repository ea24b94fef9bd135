"""What the retry headers make the official SDKs do: wait as long as the refusal says, no more, no less."""

from __future__ import annotations

import anthropic
import httpx2
import openai
import pytest

from aigw import errors
from aigw.http.retry_headers import retry_headers


def _sdk_waits(err: errors.GatewayError) -> tuple[float, float]:
    """How long the openai and anthropic SDKs sleep before retrying a 429 sent with ``err``'s headers."""
    headers = httpx2.Headers([(k.decode(), v.decode()) for k, v in retry_headers(err, 429)])
    oai = openai.OpenAI(api_key="sk-x", base_url="http://127.0.0.1:9", max_retries=2)
    claude = anthropic.Anthropic(api_key="sk-x", base_url="http://127.0.0.1:9", max_retries=2)
    opts_o = openai._models.FinalRequestOptions(method="post", url="/x")
    opts_a = anthropic._models.FinalRequestOptions(method="post", url="/x")
    return (oai._calculate_retry_timeout(2, opts_o, headers), claude._calculate_retry_timeout(2, opts_a, headers))


@pytest.mark.parametrize(("wait", "ms"), [(0.174, "174"), (2.3631, "2364"), (59.3, "59300")])
def test_both_sdks_wait_the_refusals_own_wait_not_the_next_whole_second(wait: float, ms: str) -> None:
    # only `retry-after: 1` went out for a wait of 174 ms (OpenAI's own "try again in 174ms"): both SDKs slept a whole
    # second, up to 5x longer than needed; retry-after-ms (read first by both) says it to the millisecond
    headers = dict(retry_headers(errors.RateLimited("full", retry_after=wait), 429))
    assert headers[b"retry-after-ms"] == ms.encode()
    assert int(headers[b"retry-after"]) >= wait  # for clients that read whole seconds only: never too early
    for slept in _sdk_waits(errors.RateLimited("full", retry_after=wait)):
        assert wait <= slept <= wait + 0.001


def test_an_error_without_a_wait_sends_neither_header() -> None:
    headers = dict(retry_headers(errors.BudgetExceeded("spent"), 429))
    assert b"retry-after" not in headers and b"retry-after-ms" not in headers
    assert headers[b"x-should-retry"] == b"false"
