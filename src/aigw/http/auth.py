"""Who is calling: the master key, or a virtual key through ``KeyLookup``.

Without a master key the gateway is open: a caller with no key, or a secret it does not know, is let in as
the master key's caller. A virtual key it knows is still that key's caller, and one it knows but cannot use
now (revoked, expired, disabled, rotated past its grace) is refused with its reason, as with a master key.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from aigw import errors
from aigw.http.key_filter import THROTTLED
from aigw.pipeline.context import Principal
from aigw.stores.keygen import well_formed

if TYPE_CHECKING:
    from aigw.observability.metrics import RouteGroup

KeyLookup = Callable[[str], Awaitable[Principal | None]]
CachedKeyLookup = Callable[[str], Principal | None]  # answers from memory only; None = ask ``KeyLookup``
KeyRefusal = Callable[[str], str | None]  # why a known key was refused (revoked, expired, ...); None = unknown
# (route group, status, reason): e.g. ``Metrics.auth_failed``
Refusals = Callable[["RouteGroup", int, str], None]

def refusal_reason(err: errors.GatewayError) -> str:
    """Why a caller was refused, for ``aigw_auth_failures_total``: an ``AuthError``'s reason, ``not_allowed``
    (403), ``throttled`` (unknown keys past their read budget, 503); "" for what is no refusal of a caller."""
    if isinstance(err, errors.AuthError):
        return err.reason
    if isinstance(err, errors.PermissionDenied):
        return "not_allowed"
    return "throttled" if err.code == THROTTLED else ""


def presented_key(headers: dict[str, str]) -> str:
    """The key from ``Authorization: Bearer`` or ``x-api-key`` (the Anthropic SDK's header)."""
    auth = headers.get("authorization")
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            return value.strip()
    return headers.get("x-api-key", "").strip()


class Authenticator:
    def __init__(self, master_key: str, lookup: KeyLookup | None = None,
                 cached: CachedKeyLookup | None = None, why_refused: KeyRefusal | None = None) -> None:
        self._master = master_key.encode()
        self._why_refused = why_refused
        self._lookup = lookup
        self._cached = cached
        self._master_principal = Principal(key_id="master", key_prefix="master", is_admin=True)
        self.on_refused: Refusals | None = None  # set by app.py when metrics are on

    def refused(self, group: RouteGroup, status: int, err: errors.GatewayError) -> None:
        """A route outside the pipeline answered ``err`` with ``status``: a refused caller (401, 403, or a 503
        ``key_lookups_throttled``) is reported under ``group`` with its reason, so that someone guessing the
        master key or an admin key shows. Called on error paths only: a caller let in pays nothing for it.
        (Inference routes are counted by ``Flow``'s own ``refused``.)"""
        if self.on_refused is not None and (reason := refusal_reason(err)):
            self.on_refused(group, status, reason)

    @property
    def open(self) -> bool:
        """No master key: callers with no key or one the gateway does not know are let in (only allowed on loopback
        or with --insecure)."""
        return not self._master

    def known(self, headers: dict[str, str]) -> Principal | None:
        """The caller, when memory alone can tell (the master key, a virtual key the key cache holds and
        that is usable now), with no coroutine; None means "ask ``authenticate``", never "refused"."""
        key = presented_key(headers)
        if key:
            if self._master and hmac.compare_digest(key.encode(), self._master):
                return self._master_principal
            if self._cached is not None:
                return self._cached(key)
        return None

    async def authenticate(self, headers: dict[str, str]) -> Principal:
        principal = self.known(headers)
        if principal is not None:
            return principal
        key = presented_key(headers)
        if key and self._lookup is not None and (principal := await self._lookup(key)) is not None:
            return principal
        if not key:
            if self.open:
                return self._master_principal
            raise errors.AuthError("Missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
                                   reason="missing")
        # A key the gateway knows and cannot use (revoked, expired, disabled, rotated past its grace) is refused
        # open or not: the key cache read just above holds its entry, so this costs no database read. An open
        # gateway lets in the rest, secrets it does not know included, as the caller without a key.
        why = self._why_refused(key) if self._why_refused is not None else None
        if why is None and self.open:
            return self._master_principal
        if why is not None:
            raise errors.AuthError(why, reason="refused")
        raise errors.AuthError("Invalid API key.", reason="unknown" if well_formed(key) else "malformed")

    async def require_admin(self, headers: dict[str, str]) -> Principal:
        principal = await self.authenticate(headers)
        if not principal.is_admin:
            raise errors.PermissionDenied("This endpoint needs the master key or an admin key.")
        return principal
