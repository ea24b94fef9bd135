"""How the admin commands print records: a table (or, with --json, the JSON as the gateway sent it)."""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from aigw.stores.base import BY_MASTER

PIPE_WIDTH = 250  # a table's width when printed to a pipe or file, at the least


def show(data: Any, as_json: bool, columns: list[str]) -> None:
    """A readable table (rich if installed), or the raw JSON with --json. No cell is ever cut short: piped, the
    table is as wide as it needs; on a terminal too narrow for it, each record is printed as ``field  value`` lines
    (a 15-column table squeezed into 120 columns showed `key_…`, `sk-…`, `ac…`: no id could be read or copied)."""
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    rows = data.get("data", [data]) if isinstance(data, dict) else data
    try:
        from rich.console import Console
        from rich.table import Table
        from rich.text import Text
    except ImportError:  # plain columns
        click.echo("  ".join(columns))
        for row in rows:
            click.echo("  ".join(_shown(row, c) for c in columns))
        return
    table = Table(*columns)
    for row in rows:  # as Text: a name holding "[/]" is no markup (it crashed the table), "[red]x[/red]" no colour
        table.add_row(*(Text(_shown(row, c)) for c in columns))
    if not sys.stdout.isatty():  # piped: never squeeze ids
        Console(width=max(PIPE_WIDTH, _natural_width(Console(width=PIPE_WIDTH), table))).print(table)
        return
    console = Console()
    if not rows or _natural_width(console, table) <= console.width:
        console.print(table)
        return
    for i, row in enumerate(rows):
        record = Table.grid(padding=(0, 2))
        record.add_column(style="bold", no_wrap=True)
        record.add_column(overflow="fold")  # a value wider than the terminal (a long name) folds, never "…"
        for column in columns:
            record.add_row(column, Text(_shown(row, column)))
        if i:
            console.print()
        console.print(record)


def _natural_width(console: Any, table: Any) -> int:
    """How wide ``table`` is with no cell squeezed (rich's own measure stops at the console's width)."""
    return int(console.measure(table, options=console.options.update_width(1_000_000)).maximum)


def _shown(row: dict[str, Any], column: str) -> str:
    """A record's field as the table shows it (--json keeps the record as it is). A null is "-" (not set),
    bar ``models``, where it means every model ("all"; an empty list, none); a period without a budget is
    not set either (the record keeps "monthly", the period a budget set later without one gets). A boolean is
"yes" or "no"; ``enabled`` "no" says who switched it off when the record does."""
    value = row.get(column)
    if column == "enabled" and value is False:
        return _switched_off(row.get("disabled_by"))
    if column == "models":
        return "all" if value is None else (_cell(value) or "none")
    if column == "budget_period" and row.get("budget_usd") is None:
        return "-"
    return _cell(value)


def _switched_off(by: Any) -> str:
    """Who disabled it, when the record says (a project's or key's ``disabled_by``): a tenant admin cannot enable
    again what the master key disabled, and the table should tell the two apart."""
    if by == BY_MASTER:
        return "no (master)"
    return f"no (admin {by})" if by else "no"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".") if value else "0"
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def show_page(data: Any, as_json: bool, columns: list[str]) -> None:
    """``show`` a list, then where the next page starts (on stderr) if there is one."""
    show(data, as_json, columns)
    if not as_json and data.get("has_more"):
        click.echo(f"more: --after {data['last_id']}", err=True)
