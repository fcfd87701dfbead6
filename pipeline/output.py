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


def print_schema_status(status: dict[str, Any]) -> None:
    """``migrate --status``: the steps (applied, pending, unknown to this code) and the TTLs."""
    steps = Table("step", "name", "state", "applied at", title=f"schema of {status['database']}: version "
                  f"{status['db_version']} (this taskpulse: {status['code_version']})")
    colours = {"applied": "green", "pending": "yellow"}
    for s in status["steps"]:
        colour = colours.get(s["state"], "red")
        steps.add_row(str(s["version"]), s["name"], f"[{colour}]{s['state']}[/]", s["applied_at"] or "")
    console.print(steps)
    ttl = Table("table", "TTL days (table)", "TTL days (settings)", "state", title="retention")
    for t in status["ttl"]:
        colour = "green" if t["state"] == "ok" else "yellow"
        ttl.add_row(t["table"], t["actual_days"], t["wanted_days"], f"[{colour}]{t['state']}[/]")
    console.print(ttl)


def print_replay_report(r: dict[str, Any]) -> None:
    """``dlq replay``: what was (or would be) published, skipped and refused, and the verdict."""
    verb = "would replay" if r["dry_run"] else "replayed"
    console.print(f"{r['selected']} DLQ entries selected: {verb} {len(r['replayed'])}, already replayed "
                  f"{len(r['already_replayed'])}, refused {len(r['refused'])}")
    if r["refused"]:
        table = Table("id", "reason", "why it is not replayed", title="refused")
        for x in r["refused"]:
            table.add_row(x["id"], x["reason"], x["why"])
        console.print(table)
    o = r.get("outcome") or {}
    if o:
        again = ", ".join(f"{k}: {n}" for k, n in sorted(o["rejected_again"].items())) or "none"
        console.print(f"accepted {o['accepted']} ({o['events']} events), rejected again {again}, "
                      f"already stored (duplicates) {o['no_rows']}, not processed yet {o['pending']}")


def print_findings(findings: Sequence[Any]) -> None:
    """``doctor``: one row per finding (``core.doctor.Finding``), problems in red, with the fix."""
    marks = {"ok": "[green]ok[/]", "warn": "[yellow]warn[/]", "fail": "[bold red]PROBLEM[/]"}
    table = Table("check", "", "finding", "fix", title="taskpulse doctor")
    for f in findings:
        table.add_row(f.check, marks[f.level], f.detail, f.fix)
    console.print(table)
    problems = sum(1 for f in findings if f.level == "fail")
    console.print(f"{problems} problem(s)" if problems else "no problems found")


def _cell(value: Any) -> str:
    """A table cell: floats with at most 6 significant digits (``4182``, not
    ``4182.000000000001``); tsv and json keep the exact value."""
    if isinstance(value, float) and value == value and abs(value) < 1e15:
        if value.is_integer() or abs(value) >= 1e5:
            return str(round(value))
        return f"{value:.6g}"
    return str(value)
