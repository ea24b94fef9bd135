"""What a tenant admin key may grant: never more than it holds itself (least privilege).

A tenant admin creates and changes its tenant's keys. Had it no bounds, a key limited to one cheap model, a
small budget and an expiry next week could mint a key for every model, with no budget, that never expires:
the master key's limits on it would mean nothing. So each key it creates, each field it changes and each key
it rotates (a new secret is a key in hand) must fit inside its own key as saved now:

* ``models``: among its own (when it has a list);
* ``expires_at``: set, and no later than its own (when it has one);
* ``rpm``, ``tpm``, ``max_parallel``: set, and no higher than its own (for each it has);
* ``budget_usd``: set, no larger than its own, over a window that lies inside one of its own: the same
  period, a ``total`` one (never starts again), or any when its own is ``daily`` (a day lies inside every
  window; a week does not lie inside a month).

Anything more is a 403 naming the field, and nothing is stored. The master key has no bounds.

Nor may a tenant admin set or change a project's or key's ``metadata.guardrails`` (``guarded_metadata``): key
and project settings win over the tenant's, so one could switch off the PII redaction or the checks the master
key set for its tenant. Its other metadata it changes freely; a master's guardrails entry stays as it was.

Nor may a tenant admin enable a project or key the master key disabled (``switch``): who disabled each is
recorded (``disabled_by``), and the write itself keeps a master's disabling, so one that races it stands.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

import orjson

from aigw import errors
from aigw.http.admin_models import MAX_METADATA_BYTES
from aigw.pipeline.context import Principal
from aigw.pipeline.stages.guardrail_policy import METADATA_KEY as GUARDRAILS
from aigw.stores.base import BY_MASTER, ApiKey, Period, Project

KEY_FIELDS = frozenset({"models", "expires_at", "rpm", "tpm", "max_parallel", "budget_usd", "budget_period"})


def _inside(window: Period, own: Period) -> bool:
    """A budget counted over ``window`` can never spend more in one of ``own``'s windows than its amount."""
    return window in (own, "total") or own == "daily"


def _refused(field: str, why: str) -> errors.PermissionDenied:
    return errors.PermissionDenied(f"{field}: {why}; a tenant admin key cannot grant more than it holds itself.",
                                   param=field, code="exceeds_own_key")


def check_within(own: ApiKey, key: ApiKey, fields: Collection[str] = KEY_FIELDS) -> None:
    """Refuse (403) ``key`` where any of ``fields`` (the API's names) grants more than ``own`` holds."""
    if "models" in fields and own.allowed_models is not None:
        if key.allowed_models is None:
            raise _refused("models", f"every model asked, this admin key may use only {sorted(own.allowed_models)}")
        if extra := sorted(set(key.allowed_models) - set(own.allowed_models)):
            raise _refused("models", f"{extra} not among this admin key's models {sorted(own.allowed_models)}")
    if "expires_at" in fields and own.expires_at is not None and (
            key.expires_at is None or key.expires_at > own.expires_at):
        raise _refused("expires_at", "the key must expire no later than this admin key")
    for field in ("rpm", "tpm", "max_parallel"):
        cap, value = getattr(own.limits, field), getattr(key.limits, field)
        if field in fields and cap is not None and (value is None or value > cap):
            raise _refused(field, f"at most {cap}, this admin key's own")
    own_budget, budget = own.limits.budget_usd, key.limits.budget_usd
    if own_budget is None or not {"budget_usd", "budget_period"} & set(fields):
        return
    if budget is None or budget > own_budget:
        raise _refused("budget_usd", f"at most {own_budget:g} USD ({own.limits.budget_period}), this admin key's own")
    if not _inside(key.limits.budget_period, own.limits.budget_period):
        raise _refused("budget_period", f"`{own.limits.budget_period}` or `total`, as this admin key's budget")


def switch(item: Project | ApiKey, enabled: bool, by: Principal) -> set[str]:
    """Enable or disable ``item`` for ``by`` (the master key or a tenant admin); the columns to write.
    A tenant admin gets a 403 for enabling what the master key disabled, and its disabling of such an item
    leaves it the master's."""
    tenant_admin = bool(by.tenant_id)
    if tenant_admin and not item.enabled and item.disabled_by == BY_MASTER:
        if enabled:
            what = "project" if isinstance(item, Project) else "key"
            raise errors.PermissionDenied(f"enabled: this {what} was disabled with the master key; only the master "
                                          "key can enable it.", param="enabled", code="disabled_by_master")
        return set()  # already disabled, and the master's it stays
    item.enabled = enabled
    item.disabled_by = None if enabled else by.key_id if tenant_admin else BY_MASTER
    return {"enabled", "disabled_by"}


def guarded_metadata(old: dict[str, Any] | None, new: dict[str, Any], by: Principal) -> dict[str, Any]:
    """``new`` metadata as ``by`` may save it over ``old`` (None: a new item): a tenant admin gets a 403 for a
    ``guardrails`` entry that differs from the one saved, and one it leaves out is kept."""
    if not by.tenant_id:
        return new
    saved = (old or {}).get(GUARDRAILS)
    if GUARDRAILS in new and new[GUARDRAILS] != saved:
        raise errors.PermissionDenied(f"metadata.{GUARDRAILS}: only the master key can set or change guardrail "
                                      "policy; a tenant admin key cannot.", param=f"metadata.{GUARDRAILS}",
                                      code="guardrails_master_only")
    if saved is None:
        return new
    kept = {**new, GUARDRAILS: saved}  # the master's entry counts toward the size limit the body was checked for
    if (size := len(orjson.dumps(kept))) > MAX_METADATA_BYTES:
        raise errors.InvalidRequest(f"metadata: at most {MAX_METADATA_BYTES} bytes as JSON with the guardrails entry "
                                    f"the master key set, got {size}", param="metadata")
    return kept
