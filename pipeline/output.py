"""How the command line shows things: the two consoles, the one error exit, and one
formatter for query results (table, tsv or json)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

console = Console()
err = Console(stderr=True)


def quiet_client_logs() -> None:
    """The CLI reports connection failures itself, in one line: keep the client libraries'
    own warnings about them (aiokafka's "Unable connect", clickhouse-connect's driver
    exception) off the terminal."""
    import logging

    for name in ("aiokafka", "clickhouse_connect"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def fail(message: str) -> NoReturn:
    """Print ``message`` as an error and exit with code 2."""
    err.print(f"[bold red]error:[/] {message}", soft_wrap=True, highlight=False)
    raise typer.Exit(2)


def print_rows(columns: list[str], rows: Sequence[Sequence[Any]], fmt: str = "table", null: str = "NULL") -> None:
    """Query results on stdout: ``json`` (one array of objects), ``tsv`` or a ``table``
    (``null`` stands for a NULL in a table)."""
    if fmt == "json":
        sys.stdout.write(json.dumps([dict(zip(columns, r, strict=True)) for r in rows], default=str) + "\n")
    elif fmt == "tsv":
        sys.stdout.write("\t".join(columns) + "\n")
        for r in rows:
            sys.stdout.write("\t".join("" if v is None else str(v) for v in r) + "\n")
    else:
        table = Table(*columns)
        for r in rows:
            table.add_row(*(null if v is None else _cell(v) for v in r))
        console.print(table)


def _cell(value: Any) -> str:
    """A table cell: floats with at most 6 significant digits (``4182``, not
    ``4182.000000000001``); tsv and json keep the exact value."""
    if isinstance(value, float) and value == value and abs(value) < 1e15:
        if value.is_integer() or abs(value) >= 1e5:
            return str(round(value))
        return f"{value:.6g}"
    return str(value)
