"""`aigw spend`: the bill, grouped by key, project, tenant, model or day (from the rollups)."""

from __future__ import annotations

import csv
import io
from typing import Any

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
@click.option("--csv", "as_csv", is_flag=True, help="CSV for a spreadsheet: a header line, then one row per group.")
@url_option
@key_option
@json_option
def spend(group_by: str, tenant: str, project: str, key_id: str, since: str, until: str, as_csv: bool, url: str,
          master_key: str, as_json: bool) -> None:
    """Show spend."""
    if as_csv and as_json:
        raise click.UsageError("--csv and --json are two ways to print the same report: choose one")
    query = {"group_by": group_by, "tenant": tenant, "project": project, "key": key_id, "since": since,
             "until": until}
    data = call(url, master_key, "GET", "/admin/spend", query=query)
    if as_csv:
        click.echo(_csv(data.get("data") or [], _FIRST[group_by] + _REST), nl=False)
        return
    show(data, as_json, _FIRST[group_by] + _REST)
    if not as_json:
        click.echo(f"total: ${data.get('total_cost_usd', 0):.6f}")


def _csv(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """The report's columns first, then any others the gateway sent; never 1e-05 for a cost."""
    extra = sorted({name for row in rows for name in row} - set(columns))
    out = io.StringIO()
    writer = csv.DictWriter(out, [*columns, *extra], extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _cell(v) for k, v in row.items()})
    return out.getvalue()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):  # dollars: nine decimals are the ledger's own precision (nano-USD)
        return f"{value:.9f}"
    return value
