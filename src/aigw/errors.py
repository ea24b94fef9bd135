"""One error tree for the whole gateway.

Every failure that can reach a client is a ``GatewayError`` with a *kind*.
Providers normalise upstream failures into these kinds at their edge; the HTTP
layer renders them once, in the wire format the client spoke.

    GatewayError                       kind               status  retryable
    ├── InvalidRequest                 bad_request        400
    ├── AuthError                      auth               401
    ├── PermissionDenied               permission_denied  403
    ├── NotFound                       not_found          404
    ├── PayloadTooLarge                payload_too_large  413
    ├── RateLimited                    rate_limited       429     yes (retry_after)
    │   ├── DeploymentsFull            rate_limited       429     yes (every deployment at its caps)
    │   └── TooLargeForLimit           rate_limited       429     no (no wait lets it through)
    ├── QuotaExceeded                  quota_exceeded     429     no (another deployment may answer)
    ├── BudgetExceeded                 budget_exceeded    429
    ├── ContextLengthExceeded          context_length_exceeded 400
    ├── ContentPolicy                  content_policy     400
    ├── GuardrailBlocked               guardrail_blocked  400
    ├── UpstreamTimeout                timeout            504     yes
    ├── Unavailable                    unavailable        503     yes
    ├── UpstreamError                  upstream_error     502     yes
    └── UpstreamModelNotFound          upstream_model_not_found 502  no (another deployment may answer)

An upstream error with ``reached_upstream`` set means the upstream took the call before it failed (it
answered 200 and the answer broke off, or the request was sent before the connection broke): it may bill the
prompt, so the gateway does too. An error status the upstream answered never sets it.

Messages never carry prompts or keys; raw upstream bodies are kept in
``detail`` and only shown when debug mode asks for them.

Outside the tree, never seen by a client: ``StartupError``, a start-up step that
failed for a reason its message explains (logged as one line, not a traceback).
"""

from __future__ import annotations

from typing import Any, ClassVar


class GatewayError(Exception):
    """Base of every error a client can see."""

    kind: ClassVar[str] = "upstream_error"
    status: ClassVar[int] = 500
    retryable: ClassVar[bool] = False
    reached_upstream: bool = False  # set on the instance by a provider adapter (see the module docstring)
    # set on the instance by the router: an adapter refused the request before calling its upstream (its
    # provider cannot take it: ``routing.retry.unfit``); a sibling deployment or a fallback may
    unfit: bool = False

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        retry_after: float | None = None,
        status: int | None = None,
        detail: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after
        self.detail = detail
        if status is not None:
            self.status = status  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status={self.status})"


class InvalidRequest(GatewayError):
    kind = "bad_request"
    status = 400


class AuthError(GatewayError):
    """``reason`` says why, for ``aigw_auth_failures_total`` (never shown to the client): ``missing`` (no key),
    ``malformed`` (not the shape of any key the gateway makes), ``unknown`` or ``refused`` (a key it knows
    and cannot use now)."""

    kind = "auth"
    status = 401

    def __init__(self, message: str, *, reason: str = "unknown", **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.reason = reason


class PermissionDenied(GatewayError):
    kind = "permission_denied"
    status = 403


class NotFound(GatewayError):
    kind = "not_found"
    status = 404


class PayloadTooLarge(GatewayError):
    kind = "payload_too_large"
    status = 413


class RateLimited(GatewayError):
    kind = "rate_limited"
    status = 429
    retryable = True
    # what a gateway limit ran out of, "requests" or "tokens", set on the instance by the limits stage: the
    # error ``type`` of OpenAI's own rate-limit 429s (None: an upstream's, or a kind of its own)
    ran_out: str | None = None


class DeploymentsFull(RateLimited):
    """Every deployment a request could use is at its own rpm/tpm caps, and none was called: the
    request goes back out of the caller's own rate windows (a refusal at one level takes nothing from
    the others)."""


class TooLargeForLimit(RateLimited):
    """A request that no wait would let through: its prompt alone is over a tokens-per-minute cap."""

    retryable = False


class QuotaExceeded(GatewayError):
    """The upstream account behind a deployment has no quota or credit left (OpenAI's
    ``insufficient_quota``): waiting will not fix it, so that deployment is not retried,
    but another deployment or a fallback model may still answer."""

    kind = "quota_exceeded"
    status = 429


class BudgetExceeded(GatewayError):
    kind = "budget_exceeded"
    status = 429


class ContextLengthExceeded(GatewayError):
    kind = "context_length_exceeded"
    status = 400


class ContentPolicy(GatewayError):
    kind = "content_policy"
    status = 400


class GuardrailBlocked(GatewayError):
    kind = "guardrail_blocked"
    status = 400


class UpstreamTimeout(GatewayError):
    kind = "timeout"
    status = 504
    retryable = True


class Unavailable(GatewayError):
    kind = "unavailable"
    status = 503
    retryable = True


class UpstreamError(GatewayError):
    kind = "upstream_error"
    status = 502
    retryable = True


class UpstreamModelNotFound(GatewayError):
    """The upstream says the model or deployment a deployment names does not exist (renamed, retired, never
    deployed: OpenAI's ``model_not_found``, Azure's ``DeploymentNotFound``, Anthropic's ``model: ...``): that
    deployment fails every call the same way, so it is not called again, its breaker counts it, and a sibling
    deployment or a fallback model may still answer. The client asked for a model the gateway offers, so it
    is the gateway's upstream that failed (a 502), not the client's request (a 404)."""

    kind = "upstream_model_not_found"
    status = 502


ERROR_BY_KIND: dict[str, type[GatewayError]] = {
    cls.kind: cls
    for cls in (
        InvalidRequest,
        AuthError,
        PermissionDenied,
        NotFound,
        PayloadTooLarge,
        RateLimited,
        QuotaExceeded,
        BudgetExceeded,
        ContextLengthExceeded,
        ContentPolicy,
        GuardrailBlocked,
        UpstreamTimeout,
        Unavailable,
        UpstreamError,
        UpstreamModelNotFound,
    )
}


class StartupError(RuntimeError):
    """The gateway cannot start, for the reason the message gives (e.g. its database does not answer)."""
