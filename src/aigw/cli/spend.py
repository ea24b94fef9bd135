"""`aigw spend`: the bill, grouped by key, project, tenant, model or day (from the rollups)."""

from __future__ import annotations

import click

from aigw.cli.admin_client import call, call_text, json_option, key_option, not_blank, url_option
from aigw.cli.table import show
from aigw.stores.spend_csv import FIRST_COLUMNS, SUM_COLUMNS, usd, usd_nano

_MONEY = ("cost_usd", "cost_saved_usd")
# the table's sums: the report's, with the cache writes beside the reads (priced apart: 1.25x or 2x input)
_SUMS = SUM_COLUMNS if "cache_write_tokens" in SUM_COLUMNS else \
    [c for s in SUM_COLUMNS for c in ((s, "cache_write_tokens") if s == "cached_tokens" else (s,))]


@click.command("spend")
@click.option("--group-by", "group_by", default="key", type=click.Choice(list(FIRST_COLUMNS)), show_default=True)
@click.option("--tenant", default=None, callback=not_blank, help="Tenant id or name.")
@click.option("--project", default=None, callback=not_blank, help="Project id or name.")
@click.option("--key", "key_id", default=None, callback=not_blank, help="Key id.")
@click.option("--model", default=None, callback=not_blank, help="Billed model (the one that served the calls).")
@click.option("--since", default="", help="First day, YYYY-MM-DD (UTC).")
@click.option("--until", default="", help="Last day, YYYY-MM-DD (UTC, inclusive).")
@click.option("--limit", type=click.IntRange(1, 10_000), default=None,
              help="At most this many rows, the dearest first (by day: the earliest) [default: 1000].")
@click.option("--csv", "as_csv", is_flag=True, help="CSV for a spreadsheet: a header line, then one row per group.")
@url_option
@key_option
@json_option
def spend(group_by: str, tenant: str | None, project: str | None, key_id: str | None, model: str | None, since: str,
          until: str, limit: int | None, as_csv: bool, url: str, master_key: str, as_json: bool) -> None:
    """Show spend."""
    if as_csv and as_json:
        raise click.UsageError("--csv and --json are two ways to print the same report: choose one")
    query = {"group_by": group_by, "tenant": tenant, "project": project, "key": key_id, "model": model,
             "since": since, "until": until, "limit": limit}
    if as_csv:
        text, headers = call_text(url, master_key, "/admin/spend", {**query, "format": "csv"})
        click.echo(text, nl=False)
        if headers.get("x-aigw-has-more") == "true":  # a file cut short looks whole: say so where a pipe shows it
            total = headers.get("x-aigw-total-cost-nano", "")
            whole = f" (total of all rows: ${usd_nano(int(total))})" if total.lstrip("-").isdigit() else ""
            click.echo(f"warning: more rows than the CSV holds{whole}: raise --limit (at most 10000), or narrow "
                       "the report", err=True)
        return
    data = call(url, master_key, "GET", "/admin/spend", query=query)
    if as_json:
        show(data, as_json, FIRST_COLUMNS[group_by] + _SUMS)
        return
    # dollars to nine decimals (the ledger's nano-dollars), rows and total alike: the column adds up to the total;
    # from the integer nano-dollars when the server sends them (exact at any size), else from the dollars
    rows = [{**r, **{c: usd(float(r[c])) for c in _MONEY if r.get(c) is not None},
             **({"cost_usd": usd_nano(r["cost_nano"])} if isinstance(r.get("cost_nano"), int) else {})}
            for r in data.get("data", [])]
    show({**data, "data": rows}, as_json, FIRST_COLUMNS[group_by] + _SUMS)
    total = data.get("total_cost_nano")
    click.echo(f"total: ${usd_nano(total) if isinstance(total, int) else usd(float(data.get('total_cost_usd', 0)))}")
    if data.get("has_more"):
        click.echo(f"more rows than the {len(data['data'])} shown (the total counts them all): "
                   "raise --limit", err=True)
