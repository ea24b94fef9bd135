"""Bodies the tenancy admin API accepts, and how records are shown. Unknown fields are refused."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from aigw.config.cache import key_setting_problem
from aigw.pipeline.stages.guardrail_policy import METADATA_KEY as GUARDRAILS
from aigw.pipeline.stages.guardrail_policy import parse_block
from aigw.stores.base import ApiKey, Limits, Period, Project, Tenant


class _In(BaseModel):
    """Strict: ``true`` is no rpm of 1, ``"5"`` no number, ``"no"`` no false (a whole number still fits a float)."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _name(value: str) -> str:
    """A name is shown in tables and used to look things up (in paths too): never only blanks (a key's may be
    empty), no blank or slash at either end, no control or invisible character. And PostgreSQL's text cannot
    hold NUL: refused here, not a 500 from the database."""
    if value and not value.strip():
        raise ValueError("must not be only whitespace")
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    if value != value.strip():  # "acme " beside "acme": two tenants no table tells apart
        raise ValueError("must not start or end with whitespace")
    if not value.isprintable():  # a line break splits every table row the name is shown in
        raise ValueError("must not contain a control character (line break, tab) or an invisible one")
    if value.startswith("/") or value.endswith("/"):  # /admin/tenants/<name>/ could not name it
        raise ValueError("must not start or end with '/'")
    return value


Name = Annotated[str, AfterValidator(_name)]


def _model_name(value: str) -> str:
    """A model a key may use, as calls name it: ``"mock "`` made a key refused for ``mock`` on every call."""
    if not value or value != value.strip() or not value.isprintable():
        raise ValueError("a model name as calls send it: not empty, no whitespace at either end, no control character")
    return value


ModelName = Annotated[str, AfterValidator(_model_name)]


def _once_each(value: list[str]) -> list[str]:
    """A model named twice is stored once, where it first came (``--models a,a`` showed `a, a` for good)."""
    return list(dict.fromkeys(value))


ModelList = Annotated[list[ModelName], AfterValidator(_once_each)]
MAX_METADATA_BYTES = 16 * 1024  # as JSON; it rides along in every cached key


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata is stored and shown as JSON, so it must serialise (orjson stops at 254 levels of nesting,
    which a 256 KiB body can exceed): checked here, not found out by the database write as a 500."""
    try:
        size = len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        raise ValueError("cannot be stored as JSON (nested too deep?)") from None
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"at most {MAX_METADATA_BYTES} bytes as JSON, got {size}")
    return value


def _key_metadata(value: dict[str, Any]) -> dict[str, Any]:
    """A key's ``cache`` setting is checked when it is written: the cache ignores one that does not validate
    (a request must not fail for it), so a mistake accepted here was found only in the server log."""
    if "cache" in value and (problem := key_setting_problem(value["cache"])):
        raise ValueError(problem)
    return value


def _guardrails(value: dict[str, Any]) -> dict[str, Any]:
    """A ``guardrails`` entry is checked when it is written, as the guardrail stages read it: one that does not
    validate is ignored on every call (a warning in the log), so ``{"pii": {"mode": "blok"}}`` answered 200 and
    no PII was ever blocked. Route targets and classifier names depend on the config: checked on use only."""
    if (block := value.get(GUARDRAILS)) is not None:
        parse_block(block)
    return value


Metadata = Annotated[dict[str, Any], AfterValidator(_metadata), AfterValidator(_guardrails)]
KeyMetadata = Annotated[Metadata, AfterValidator(_key_metadata)]
MAX_COUNT = 2**53  # rpm, tpm, max_parallel: past this the Redis scripts' doubles stop counting exactly
MAX_BUDGET_USD = 1e9  # in nano-dollars 1e18, inside a 64-bit counter; 1e308 overflowed to inf, every call a 500


class LimitsIn(_In):
    rpm: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    tpm: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    max_parallel: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    budget_usd: float | None = Field(default=None, ge=0, le=MAX_BUDGET_USD, allow_inf_nan=False)
    budget_period: Period | None = None

    def limits(self, base: Limits | None = None) -> Limits:
        """New limits: fields sent replace the base's (``null`` clears one; for the period, back to the default)."""
        cur = base or Limits()
        sent = self.model_fields_set
        period = (self.budget_period or Limits().budget_period) if "budget_period" in sent else cur.budget_period
        return Limits(
            rpm=self.rpm if "rpm" in sent else cur.rpm,
            tpm=self.tpm if "tpm" in sent else cur.tpm,
            max_parallel=self.max_parallel if "max_parallel" in sent else cur.max_parallel,
            budget_usd=self.budget_usd if "budget_usd" in sent else cur.budget_usd,
            budget_period=period,
        )


class TenantIn(LimitsIn):
    name: Name = Field(min_length=1, max_length=200)
    metadata: Metadata = Field(default_factory=dict)


_KEEP_IT = {"name": "leave the field out to keep the name", "enabled": "true or false, or leave the field out",
            "metadata": "send {} to remove it all, or leave the field out to keep it"}


def _not_null(value: Any, info: ValidationInfo) -> Any:
    """``null`` clears a limit, so a PATCH with ``"metadata": null`` read as removing it: it answered 200 and kept
    it. A name, a switch or metadata has no null to set: refused, saying what does what was meant."""
    if value is None:
        raise ValueError(f"cannot be null: {_KEEP_IT[str(info.field_name)]}")
    return value


class TenantPatch(LimitsIn):
    name: Name | None = Field(default=None, min_length=1, max_length=200)
    enabled: bool | None = None
    metadata: Metadata | None = None

    _no_null = field_validator("name", "enabled", "metadata", mode="before")(_not_null)


class ProjectIn(LimitsIn):
    name: Name = Field(min_length=1, max_length=200)
    tenant: str = Field(default="", description="tenant id or name (a tenant admin key may omit it)")
    metadata: Metadata = Field(default_factory=dict)


class ProjectPatch(TenantPatch):
    pass


EARLIEST, LATEST = 0.0, 253402300799.0  # 1970-01-01 and 9999-12-31T23:59:59Z: the times a record can show


def parse_time(value: Any) -> float | None:
    """ISO 8601 (a date, or a time with or without zone: UTC assumed) or epoch seconds, from 1970 to 9999.
    Anything else is refused here, before it is stored: a time no record can show broke every listing."""
    if value is None or value == "":  # no time, on purpose: a form's empty field (docs/tenancy.md, expires_at)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError("expected an ISO 8601 time (e.g. 2026-12-31T23:59:59Z) or epoch seconds")
    if isinstance(value, str):
        try:
            parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("expected an ISO 8601 time, e.g. 2026-12-31T23:59:59Z") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=dt.UTC)
        value = parsed.timestamp()
    if not EARLIEST <= value <= LATEST:  # NaN too
        raise ValueError("out of range: a time from 1970 to 9999, in epoch seconds (not milliseconds)")
    return float(value)


class KeyIn(LimitsIn):
    project: str = Field(min_length=1, description="project id or name")
    name: Name = Field(default="", max_length=200)
    models: ModelList | None = None
    expires_at: float | None = None
    role: Literal["user", "tenant_admin"] = "user"
    metadata: KeyMetadata = Field(default_factory=dict)

    @field_validator("expires_at", mode="before")
    @classmethod
    def _time(cls, v: Any) -> float | None:
        return parse_time(v)


class KeyPatch(LimitsIn):
    name: Name | None = Field(default=None, max_length=200)
    models: ModelList | None = None
    expires_at: float | None = None
    enabled: bool | None = None
    metadata: KeyMetadata | None = None

    _no_null = field_validator("name", "enabled", "metadata", mode="before")(_not_null)

    @field_validator("expires_at", mode="before")
    @classmethod
    def _time(cls, v: Any) -> float | None:
        return parse_time(v)


class NoBody(_In):
    """Revoke and DELETE take no body: a field sent to one (``revoke {"grace_s": 3600}``) is a 400 naming it,
    never ignored (the key would be revoked at once). No body, or ``{}``, is fine."""


class RotateIn(_In):
    """``POST /admin/keys/{id}/rotate`` (the body is optional): how long the old secret keeps working,
    so clients can move to the new one without a failed call (at most 30 days; 0: it stops now)."""

    grace_s: float = Field(default=0, ge=0, le=30 * 86400, allow_inf_nan=False)


def iso(ts: float | None) -> str | None:
    """Total, as a second line of defence: a stored time out of range (saved before ``parse_time`` checked)
    shows as the nearest one a datetime holds, rather than failing every listing that includes it."""
    if ts is None or ts != ts:
        return None
    ts = min(max(ts, EARLIEST), LATEST)
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def limits_out(lim: Limits) -> dict[str, Any]:
    return {"rpm": lim.rpm, "tpm": lim.tpm, "max_parallel": lim.max_parallel, "budget_usd": lim.budget_usd,
            "budget_period": lim.budget_period}


def tenant_out(t: Tenant) -> dict[str, Any]:
    return {"id": t.id, "object": "tenant", "name": t.name, **limits_out(t.limits), "enabled": t.enabled,
            "metadata": t.metadata, "created_at": iso(t.created_at)}


def project_out(p: Project) -> dict[str, Any]:
    return {"id": p.id, "object": "project", "name": p.name, "tenant_id": p.tenant_id, **limits_out(p.limits),
            "enabled": p.enabled, "disabled_by": p.disabled_by, "metadata": p.metadata, "created_at": iso(p.created_at)}


def key_status(k: ApiKey, states: dict[str, tuple[bool, bool]], now: float) -> str:
    """Whether the key works now, or the first reason it does not, in the order a call with it is refused
    (``key_lookup.refusal``): ``enabled: true`` alone does not say that its project or tenant is switched off."""
    if k.revoked_at is not None:
        return "revoked"
    if k.expires_at is not None and k.expires_at <= now:
        return "expired"
    if not k.enabled:
        return "disabled"
    project_on, tenant_on = states.get(k.project_id, (False, False))
    return "active" if project_on and tenant_on else "project_disabled" if not project_on else "tenant_disabled"


def key_out(k: ApiKey, secret: str | None = None, status: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": k.id, "object": "key", "name": k.name, "prefix": k.prefix, "tenant_id": k.tenant_id,
        "project_id": k.project_id, "models": k.allowed_models, **limits_out(k.limits),
        "expires_at": iso(k.expires_at), "status": status, "enabled": k.enabled, "disabled_by": k.disabled_by,
        "revoked": k.revoked_at is not None,
        "revoked_at": iso(k.revoked_at), "role": k.role, "metadata": k.metadata, "created_at": iso(k.created_at),
        "previous_key_until": iso(k.previous_until),  # the secret before the last rotation works until then
    }
    if secret is not None:
        out["key"] = secret  # shown once, never stored
    return out
