"""What an admin change does to a tenant, project or key: pure functions of the record, as the store saved it.

The store applies each one under the record's row lock (``TenancyStore.update_*``), to the record as saved at
that moment, not as the call read it before it waited for its body: a change saved meanwhile by another call (a
limit it did not name, the master's guardrails entry, a revoke) stands. Each returns the columns it changed
and raises (a 403, say) to write nothing.
"""

from __future__ import annotations

from aigw import errors
from aigw.http.admin_bounds import KEY_FIELDS, check_within, guarded_metadata, switch
from aigw.http.admin_models import KeyPatch, LimitsIn, ProjectPatch, TenantPatch
from aigw.pipeline.context import Principal
from aigw.stores.base import ApiKey, Project, Tenant


def apply_patch(entity: Tenant | Project, body: TenantPatch | ProjectPatch) -> set[str]:
    """A PATCH changes only the fields it names (tenants and projects share them); the columns it changed."""
    entity.limits = body.limits(entity.limits)
    entity.name = body.name or entity.name
    if body.enabled is not None:
        entity.enabled = body.enabled
    if body.metadata is not None:
        entity.metadata = body.metadata
    return _limits_column(body.model_fields_set) | {column for column, value in (
        ("name", body.name), ("enabled", body.enabled), ("metadata", body.metadata)) if value is not None}


def disable_tenant(t: Tenant) -> set[str]:
    t.enabled = False
    return {"enabled"}


def patch_project(proj: Project, body: ProjectPatch, by: Principal) -> set[str]:
    """``body`` applied for ``by``: a tenant admin's metadata keeps the master's guardrails entry as saved."""
    switched = switch(proj, body.enabled, by) if body.enabled is not None else set()
    metadata = None if body.metadata is None else guarded_metadata(proj.metadata, body.metadata, by)
    columns = apply_patch(proj, body) | switched  # the enabled switch() allowed, set again
    if metadata is not None:
        proj.metadata = metadata
    return columns


def patch_key(k: ApiKey, body: KeyPatch, by: Principal, own: ApiKey | None) -> set[str]:
    """``body`` applied for ``by`` (``own``: a tenant admin's own key, which bounds what it grants)."""
    sent = body.model_fields_set
    if k.revoked_at is not None and (barred := sorted(sent - REVOKED_CHANGEABLE)):
        raise _revoked(barred[0])
    k.limits = body.limits(k.limits)
    k.name = k.name if body.name is None else body.name
    k.allowed_models = body.models if "models" in sent else k.allowed_models
    k.expires_at = body.expires_at if "expires_at" in sent else k.expires_at
    k.metadata = k.metadata if body.metadata is None else guarded_metadata(k.metadata, body.metadata, by)
    switched = switch(k, body.enabled, by) if body.enabled is not None else set()
    if own is not None:
        check_within(own, k, sent & KEY_FIELDS)
    return switched | _limits_column(sent) | {column for field, column, value in (
        ("name", "name", body.name), ("models", "allowed_models", True), ("expires_at", "expires_at", True),
        ("metadata", "metadata", body.metadata),
    ) if field in sent and value is not None}


REVOKED_CHANGEABLE = frozenset({"name", "metadata"})  # a revoked key's label and notes; nothing it would use


def _revoked(field: str) -> errors.InvalidRequest:
    """A revoked key never works again: limits, models, expiry or a switch stored on it would say otherwise."""
    what = "enabled again" if field == "enabled" else f"changed (`{field}`)"
    return errors.InvalidRequest(f"This key is revoked and cannot be {what}: only its name and metadata can "
                                 "change; create a new key.", param=field, code="key_revoked")


def revoke_key(k: ApiKey, now: float) -> set[str]:
    k.revoked_at = k.revoked_at or now
    k.previous_hash = k.previous_until = None  # a revoke ends a secret in grace too: none is shown
    return {"revoked_at", "previous_hash", "previous_until"}


def rotate_key(k: ApiKey, key_hash: str, prefix: str, previous_until: float | None, own: ApiKey | None) -> set[str]:
    """A new secret (``previous_until``: how long the old one keeps working; None: it stops now)."""
    if k.revoked_at is not None:
        raise errors.InvalidRequest("A revoked key cannot be rotated.", code="key_revoked")
    if own is not None:  # a new secret is a key in hand: no broader than its own
        check_within(own, k)
    k.previous_hash, k.previous_until = (k.key_hash, previous_until) if previous_until is not None else (None, None)
    k.key_hash, k.prefix = key_hash, prefix  # a secret in grace before this one stops now
    return {"key_hash", "prefix", "previous_hash", "previous_until"}


_LIMIT_FIELDS = frozenset(LimitsIn.model_fields)


def _limits_column(sent: set[str]) -> set[str]:
    """``{"limits"}`` when a body named a limit (they share one column), else nothing."""
    return {"limits"} if sent & _LIMIT_FIELDS else set()
