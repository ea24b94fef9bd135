"""`aigw keys create|list|show|update|revoke|rotate`: virtual keys over the admin API.

The secret is printed once, by ``create`` and ``rotate`` (``"key"`` in --json).
"""

from __future__ import annotations

import math
from typing import Any

import click

from aigw.cli.admin_client import (
    admin_path,
    call,
    clear_option,
    cleared,
    finite,
    json_object,
    json_option,
    key_option,
    limit_fields,
    limit_options,
    named,
    not_blank,
    page_options,
    url_option,
)
from aigw.cli.table import show, show_page

KEY_CLEARABLE = {"expires": "expires_at", "models": "models"}  # no expiry; every model
# role: a tenant admin key must be told apart; status: whether it works now (a key can be enabled and unusable, its
# project or tenant switched off), "enabled" and "revoked" the key's own flags
COLUMNS = ["id", "prefix", "name", "project_id", "role", "models", "rpm", "tpm", "max_parallel", "budget_usd",
           "budget_period", "expires_at", "status", "enabled", "revoked"]


@click.group("keys")
def keys_group() -> None:
    """Virtual keys: random, shown once, stored as a hash."""


def _models(raw: str | None) -> list[str] | None:
    return [m.strip() for m in raw.split(",") if m.strip()] if raw is not None else None


def _with_secret(data: dict[str, Any], as_json: bool) -> None:
    show(data, as_json, ["key", *COLUMNS])
    if not as_json and data.get("key"):
        click.echo(f"\nkey: {data['key']}\nThis is the only time the key is shown; store it now.", err=True)


def _expiry(text: str) -> str | float:
    """``--expires`` as the API takes it: epoch seconds are sent as a number, anything else as text. Eight digits
    are ISO 8601's basic date (20301231), which the gateway reads, not epoch seconds (a day in 1970: a key
    created so was refused as expired, and one updated so ended at once)."""
    if len(text) == 8 and text.isascii() and text.isdigit():
        return text
    try:
        seconds = float(text)
    except ValueError:
        return text
    return seconds if math.isfinite(seconds) else text  # "nan", "inf": the gateway's 400 names expires_at


def _expires(ctx: click.Context, param: click.Parameter, raw: str | None) -> str | None:
    """``--expires`` given empty (``--expires "$UNTIL"`` with UNTIL unset) is refused: left out, it made a key that
    never expires (or, to update, changed nothing), and said nothing."""
    if raw is not None and not raw.strip():
        raise click.BadParameter("empty: give an ISO 8601 time or epoch seconds, or leave the option out (to remove "
                                 "a key's expiry: keys update KEY --clear expires)")
    return raw


@keys_group.command("create")
@click.option("--project", required=True, help="Project id or name.")
@click.option("--name", default="", help="A label for people.")
@click.option("--models", default=None, help="Allowed models, comma separated (default: all).")
@limit_options
@click.option("--expires", default=None, callback=_expires,
              help="Expiry, ISO 8601 (e.g. 2026-12-31T23:59:59Z; UTC when it names no zone) or epoch seconds.")
@click.option("--admin", "tenant_admin", is_flag=True, help="A tenant admin key (manages its own tenant).")
@click.option("--metadata", default=None, callback=json_object,
              help='Metadata as a JSON object, e.g. \'{"cache": {"mode": "off"}}\'.')
@url_option
@key_option
@json_option
def create(project: str, name: str, models: str | None, rpm: int | None, tpm: int | None,
           max_parallel: int | None, budget: float | None, period: str | None, expires: str | None,
           tenant_admin: bool, metadata: dict[str, Any] | None, url: str, master_key: str, as_json: bool) -> None:
    """Create a key in a project."""
    body: dict[str, Any] = {"project": project, "name": name, **limit_fields(rpm, tpm, max_parallel, budget, period)}
    if models is not None:
        body["models"] = _models(models)
    if expires:
        body["expires_at"] = _expiry(expires)
    if tenant_admin:
        body["role"] = "tenant_admin"
    if metadata is not None:
        body["metadata"] = metadata
    _with_secret(call(url, master_key, "POST", "/admin/keys", body), as_json)


@keys_group.command("list")
@click.option("--project", default=None, callback=not_blank, help="Only this project's keys.")
@click.option("--tenant", default=None, callback=not_blank, help="Only this tenant's keys.")
@page_options
@url_option
@key_option
@json_option
def list_(project: str | None, tenant: str | None, limit: int | None, after: str, url: str, master_key: str,
          as_json: bool) -> None:
    """List keys (never their secrets), oldest first."""
    show_page(call(url, master_key, "GET", "/admin/keys",
                   query={"project": project, "tenant": tenant, "limit": limit, "after": after}), as_json, COLUMNS)


@keys_group.command("show")
@click.argument("key_id", callback=named)
@url_option
@key_option
@json_option
def show_(key_id: str, url: str, master_key: str, as_json: bool) -> None:
    """Show one key."""
    show(call(url, master_key, "GET", admin_path("keys", key_id)), as_json, COLUMNS)


@keys_group.command("update")
@click.argument("key_id", callback=named)
@click.option("--name", default=None)
@click.option("--models", default=None, help="Allowed models, comma separated; '' allows none.")
@limit_options
@click.option("--expires", default=None, callback=_expires, help="Expiry, ISO 8601 or epoch seconds.")
@click.option("--enable/--disable", "enabled", default=None)
@click.option("--metadata", default=None, callback=json_object,
              help="Metadata as a JSON object; it replaces the key's whole metadata.")
@clear_option(KEY_CLEARABLE)
@url_option
@key_option
@json_option
def update(key_id: str, name: str | None, models: str | None, rpm: int | None, tpm: int | None,
           max_parallel: int | None, budget: float | None, period: str | None, expires: str | None,
           enabled: bool | None, metadata: dict[str, Any] | None, clear: tuple[str, ...], url: str, master_key: str,
           as_json: bool) -> None:
    """Change a key's limits, models, expiry or state (--clear removes a limit, the expiry or the model list)."""
    body: dict[str, Any] = limit_fields(rpm, tpm, max_parallel, budget, period)
    for field, value in (("name", name), ("models", _models(models)),
                         ("expires_at", _expiry(expires) if expires else None), ("enabled", enabled),
                         ("metadata", metadata)):
        if value is not None:
            body[field] = value
    body = cleared(body, clear, KEY_CLEARABLE)
    show(call(url, master_key, "PATCH", admin_path("keys", key_id), body), as_json, COLUMNS)


@keys_group.command("revoke")
@click.argument("key_id", callback=named)
@url_option
@key_option
@json_option
def revoke(key_id: str, url: str, master_key: str, as_json: bool) -> None:
    """Revoke a key: it stops working on every replica within a second."""
    show(call(url, master_key, "POST", admin_path("keys", key_id, "revoke")), as_json, COLUMNS)


@keys_group.command("rotate")
@click.argument("key_id", callback=named)
@click.option("--grace", "grace_s", type=click.FloatRange(0, 30 * 86400), default=0, callback=finite,
              help="Seconds the old secret keeps working (default 0: it stops now).")
@url_option
@key_option
@json_option
def rotate(key_id: str, grace_s: float, url: str, master_key: str, as_json: bool) -> None:
    """Give a key a new secret (same id, limits and spend); the old one stops now or after --grace."""
    body = {"grace_s": grace_s} if grace_s else None
    data = call(url, master_key, "POST", admin_path("keys", key_id, "rotate"), body)
    _with_secret(data, as_json)
    if not as_json:  # the table has no room for it, and it is what the operator must tell the clients
        until = data.get("previous_key_until")
        click.echo(f"The previous secret works until {until}, then only the new one." if until
                   else "The previous secret no longer works.", err=True)
