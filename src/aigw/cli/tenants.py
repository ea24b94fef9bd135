"""`aigw tenants create|list|show|update`: tenants over the admin API (``update --disable`` switches one off)."""

from __future__ import annotations

from typing import Any

import click

from aigw.cli.admin_client import (
    admin_path,
    call,
    clear_option,
    cleared,
    json_object,
    json_option,
    key_option,
    limit_fields,
    limit_options,
    named,
    page_options,
    url_option,
)
from aigw.cli.table import show, show_page

COLUMNS = ["id", "name", "rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "enabled", "created_at"]


@click.group("tenants")
def tenants_group() -> None:
    """Tenants own projects; their limits and budget cover everything below them."""


@tenants_group.command("create")
@click.argument("name")
@limit_options
@click.option("--metadata", default=None, callback=json_object,
              help='Metadata as a JSON object, e.g. \'{"guardrails": {"pii": {"mode": "block"}}}\'.')
@url_option
@key_option
@json_option
def create(name: str, rpm: int | None, tpm: int | None, max_parallel: int | None, budget: float | None,
           period: str | None, metadata: dict[str, Any] | None, url: str, master_key: str, as_json: bool) -> None:
    """Create tenant NAME."""
    body = {"name": name, **limit_fields(rpm, tpm, max_parallel, budget, period)}
    if metadata is not None:
        body["metadata"] = metadata
    show(call(url, master_key, "POST", "/admin/tenants", body), as_json, COLUMNS)


@tenants_group.command("list")
@page_options
@url_option
@key_option
@json_option
def list_(limit: int | None, after: str, url: str, master_key: str, as_json: bool) -> None:
    """List tenants, oldest first."""
    show_page(call(url, master_key, "GET", "/admin/tenants", query={"limit": limit, "after": after}), as_json, COLUMNS)


@tenants_group.command("show")
@click.argument("tenant", callback=named)
@url_option
@key_option
@json_option
def show_(tenant: str, url: str, master_key: str, as_json: bool) -> None:
    """Show TENANT (id or name)."""
    show(call(url, master_key, "GET", admin_path("tenants", tenant)), as_json, COLUMNS)


@tenants_group.command("update")
@click.argument("tenant", callback=named)
@click.option("--name", default=None, help="A new name.")
@limit_options
@click.option("--enable/--disable", "enabled", default=None, help="Switch the tenant on or off.")
@click.option("--metadata", default=None, callback=json_object,
              help="Metadata as a JSON object; it replaces the whole metadata.")
@clear_option()
@url_option
@key_option
@json_option
def update(tenant: str, name: str | None, rpm: int | None, tpm: int | None, max_parallel: int | None,
           budget: float | None, period: str | None, enabled: bool | None, metadata: dict[str, Any] | None,
           clear: tuple[str, ...], url: str, master_key: str, as_json: bool) -> None:
    """Change TENANT's name, limits (or remove them with --clear) or metadata, or switch it off."""
    body = cleared(limit_fields(rpm, tpm, max_parallel, budget, period), clear)
    for field, value in (("name", name), ("enabled", enabled), ("metadata", metadata)):
        if value is not None:
            body[field] = value
    show(call(url, master_key, "PATCH", admin_path("tenants", tenant), body), as_json, COLUMNS)
