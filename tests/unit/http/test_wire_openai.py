"""Errors in OpenAI's wire format: what a client reads never carries a secret from config."""

from __future__ import annotations

import orjson
import pytest

from aigw import errors
from aigw.http.wire_openai import error_body, error_frame
from aigw.observability.logging import SCRUBBER, protect_secrets

UPSTREAM_KEY = "gsk_upstreamKEY0123456789"  # a provider key in no shape the upstream-error scrub knows


@pytest.fixture
def known_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SCRUBBER, "_secrets", [])  # the secret set is process-wide: give it back after
    protect_secrets([UPSTREAM_KEY])


def test_an_upstream_message_quoting_the_deployments_key_reaches_the_client_without_it(known_key: None) -> None:
    err = errors.InvalidRequest(f"Invalid header value: Bearer {UPSTREAM_KEY} (org org-1)",
                                detail=f'{{"error": "bad key {UPSTREAM_KEY}"}}')
    body = orjson.dumps(error_body(err, debug=True)).decode()
    assert UPSTREAM_KEY not in body
    assert "Invalid header value: Bearer [REDACTED] (org org-1)" in body  # the rest of the message stays
    assert UPSTREAM_KEY not in error_frame(err).decode()


def test_a_message_without_secrets_is_left_alone(known_key: None) -> None:
    err = errors.NotFound("The model `task-classifier-large-v2-finetuned` does not exist")
    assert error_body(err)["error"]["message"] == "The model `task-classifier-large-v2-finetuned` does not exist"


@pytest.mark.parametrize("err", [
    errors.AuthError("upstream rejected the credentials configured for this deployment", status=502,
                     code="upstream_auth"),
    errors.UpstreamModelNotFound("upstream model not found", code="upstream_model_not_found"),
    errors.UpstreamError("upstream returned HTTP 500"),
])
def test_an_upstreams_failure_at_5xx_has_a_server_side_type(err: errors.GatewayError) -> None:
    """An OpenAI SDK reads ``authentication_error`` as its own key being wrong: a 502 says the upstream failed."""
    assert error_body(err)["error"]["type"] == "api_error"
    assert error_body(errors.AuthError("Incorrect API key provided"))["error"]["type"] == "authentication_error"
