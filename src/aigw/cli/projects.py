"""`aigw projects create|list|show|update`: projects over the admin API (``update --disable`` switches one off)."""

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
    not_blank,
    page_options,
    url_option,
)
from aigw.cli.table import show, show_page

COLUMNS = ["id", "name", "tenant_id", "rpm", "tpm", "max_parallel", "budget_usd", "budget_period", "enabled"]


@click.group("projects")
def projects_group() -> None:
    """Projects belong to a tenant and own keys."""


@projects_group.command("create")
@click.argument("name")
@click.option("--tenant", default="", help="Tenant id or name (a tenant admin key may omit it).")
@limit_options
@click.option("--metadata", default=None, callback=json_object,
              help='Metadata as a JSON object, e.g. \'{"guardrails": {"pii": {"mode": "block"}}}\'.')
@url_option
@key_option
@json_option
def create(name: str, tenant: str, rpm: int | None, tpm: int | None, max_parallel: int | None,
           budget: float | None, period: str | None, metadata: dict[str, Any] | None, url: str, master_key: str,
           as_json: bool) -> None:
    """Create project NAME in a tenant."""
    body = {"name": name, "tenant": tenant, **limit_fields(rpm, tpm, max_parallel, budget, period)}
    if metadata is not None:
        body["metadata"] = metadata
    show(call(url, master_key, "POST", "/admin/projects", body), as_json, COLUMNS)


@projects_group.command("list")
@click.option("--tenant", default=None, callback=not_blank, help="Only this tenant's projects.")
@page_options
@url_option
@key_option
@json_option
def list_(tenant: str | None, limit: int | None, after: str, url: str, master_key: str, as_json: bool) -> None:
    """List projects, oldest first."""
    show_page(call(url, master_key, "GET", "/admin/projects", query={"tenant": tenant, "limit": limit, "after": after}),
              as_json, COLUMNS)


@projects_group.command("show")
@click.argument("project", callback=named)
@url_option
@key_option
@json_option
def show_(project: str, url: str, master_key: str, as_json: bool) -> None:
    """Show PROJECT (id or name)."""
    show(call(url, master_key, "GET", admin_path("projects", project)), as_json, COLUMNS)


@projects_group.command("update")
@click.argument("project", callback=named)
@click.option("--name", default=None, help="A new name.")
@limit_options
@click.option("--enable/--disable", "enabled", default=None, help="Switch the project on or off.")
@click.option("--metadata", default=None, callback=json_object,
              help="Metadata as a JSON object; it replaces the whole metadata.")
@clear_option()
@url_option
@key_option
@json_option
def update(project: str, name: str | None, rpm: int | None, tpm: int | None, max_parallel: int | None,
           budget: float | None, period: str | None, enabled: bool | None, metadata: dict[str, Any] | None,
           clear: tuple[str, ...], url: str, master_key: str, as_json: bool) -> None:
    """Change PROJECT's name, limits (or remove them with --clear) or metadata, or switch it off."""
    body = cleared(limit_fields(rpm, tpm, max_parallel, budget, period), clear)
    for field, value in (("name", name), ("enabled", enabled), ("metadata", metadata)):
        if value is not None:
            body[field] = value
    show(call(url, master_key, "PATCH", admin_path("projects", project), body), as_json, COLUMNS)
