"""`aigw spend`: the bill, grouped by key, project, tenant, model or day (from the rollups)."""

from __future__ import annotations

import click

from aigw.cli.admin_client import call, json_option, key_option, show, url_option

_FIRST = {"key": ["key", "key_prefix", "key_name"], "project": ["project"], "tenant": ["tenant"],
          "model": ["model"], "day": ["day"]}
_REST = ["requests", "errors", "prompt_tokens", "completion_tokens", "cached_tokens", "reasoning_tokens",
         "cost_usd", "cost_saved_usd"]


@click.command("spend")
@click.option("--group-by", "group_by", default="key", type=click.Choice(list(_FIRST)), show_default=True)
@click.option("--tenant", default="", help="Tenant id or name.")
@click.option("--project", default="", help="Project id or name.")
@click.option("--key", "key_id", default="", help="Key id.")
@click.option("--since", default="", help="First day, YYYY-MM-DD (UTC).")
@click.option("--until", default="", help="Last day, YYYY-MM-DD (UTC, inclusive).")
@url_option
@key_option
@json_option
def spend(group_by: str, tenant: str, project: str, key_id: str, since: str, until: str, url: str,
          master_key: str, as_json: bool) -> None:
    """Show spend."""
    query = {"group_by": group_by, "tenant": tenant, "project": project, "key": key_id, "since": since,
             "until": until}
    data = call(url, master_key, "GET", "/admin/spend", query=query)
    show(data, as_json, _FIRST[group_by] + _REST)
    if not as_json:
        click.echo(f"total: ${data.get('total_cost_usd', 0):.6f}")
