"""`aigw cache purge`: drop cached answers over the admin API (one tenant's, or all)."""

from __future__ import annotations

import json

import click

from aigw.cli.admin_client import call, json_option, key_option, not_blank, url_option


@click.group("cache")
def cache_group() -> None:
    """The response cache."""


@cache_group.command("purge")
@click.option("--tenant", default=None, callback=not_blank,
              help="Tenant id or name (default: every tenant, master key only).")
@click.option("--model", default=None, callback=not_blank, help="Public model name (default: every model).")
@url_option
@key_option
@json_option
def purge(tenant: str | None, model: str | None, url: str, master_key: str, as_json: bool) -> None:
    """Delete cached answers, so the next identical request goes upstream."""
    data = call(url, master_key, "DELETE", "/admin/cache", query={"tenant": tenant, "model": model})
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    backends = ", ".join(f"{name}: {n}" for name, n in data.get("by_backend", {}).items()) or "no backend"
    who = f"tenant {data['tenant']}" if data.get("tenant") else "every tenant"
    what = f"model {data['model']}" if data.get("model") else "every model"
    click.echo(f"purged {data.get('deleted', 0)} cached answers of {who}, {what} ({backends})")
