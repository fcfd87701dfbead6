"""The live terminal status view of ``taskpulse up`` / ``taskpulse status --watch``."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text


class RateTracker:
    """Per-second rates from successive cumulative counters."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}

    def rate(self, name: str, value: float, now: float | None = None) -> float:
        now = time.monotonic() if now is None else now
        prev = self._last.get(name)
        self._last[name] = (now, value)
        if prev is None or now <= prev[0]:
            return 0.0
        return max(0.0, (value - prev[1]) / (now - prev[0]))


def render(status: dict[str, Any], rates: RateTracker, extra: dict[str, Any] | None = None) -> Group:
    """One frame of the status view."""
    extra = extra or {}
    written = status.get("rows_written", {})
    rin = rates.rate("in", status.get("events_consumed", 0))
    rout = rates.rate("out", written.get("events", 0))
    flow = Table.grid(padding=(0, 3))
    for _ in range(4):
        flow.add_column(justify="right")
    lag = status.get("lag", {})
    rejected = status.get("rejected", {})
    flow.add_row(
        Text("events/s in", style="dim"), f"{rin:,.0f}",
        Text("events/s to ClickHouse", style="dim"), f"{rout:,.0f}",
    )  # fmt: skip
    flow.add_row(
        Text("consumer lag", style="dim"), f"{sum(lag.values()):,}",
        Text("DLQ (this run)", style="dim"), f"{sum(rejected.values()):,}",
    )  # fmt: skip
    flow.add_row(
        Text("duplicates dropped", style="dim"), f"{status.get('duplicates', 0):,}",
        Text("uptime", style="dim"), f"{status.get('uptime_s', 0):,.0f} s",
    )  # fmt: skip
    if "published" in extra:
        flow.add_row(
            Text("demo events published", style="dim"), f"{extra['published']:,}",
            Text("demo rate", style="dim"), f"{rates.rate('pub', extra['published']):,.0f}/s",
        )  # fmt: skip
    if extra.get("broker_mib") is not None:
        flow.add_row(
            Text("embedded broker memory", style="dim"), f"{extra['broker_mib']:,} MiB",
            Text("", style="dim"), "",
        )  # fmt: skip
    corr = status.get("correlate")
    if isinstance(corr, dict):
        agents = corr.get("agents", {})
        flow.add_row(
            Text("tasks open", style="dim"), f"{corr.get('tasks_open', 0):,}",
            Text("tasks finished (records)", style="dim"), f"{corr.get('records', 0):,}",
        )  # fmt: skip
        flow.add_row(
            Text("tasks abandoned", style="dim"), f"{corr.get('abandoned', 0):,}",
            Text("agents online / busy / offline", style="dim"),
            f"{agents.get('online', 0)} / {agents.get('busy', 0)} / {agents.get('offline', 0)}",
        )  # fmt: skip
    alerts = status.get("alerts")
    if isinstance(alerts, dict) and "firing" in alerts:
        firing = alerts.get("firing") or []
        names = ", ".join(sorted({f"{a.get('rule')} ({a.get('severity')})" for a in firing}))
        flow.add_row(
            Text("alerts firing", style="dim"), Text(f"{len(firing):,}", style="bold red" if firing else ""),
            Text("alerts pending", style="dim"), f"{len(alerts.get('pending') or []):,}",
        )  # fmt: skip
        if names:
            flow.add_row(Text("firing", style="dim"), "", Text(names, style="red"), "")
    tables = Table(title="ClickHouse rows", expand=False, show_edge=False)
    tables.add_column("table")
    tables.add_column("rows (total)", justify="right")
    tables.add_column("written this run", justify="right")
    counts = status.get("table_rows", {})
    corr_written = (status.get("correlate") or {}).get("rows_written", {})
    written = {**written, **{t: n for t, n in corr_written.items() if t in counts}}
    for name in sorted(set(counts) | set(written)):
        if name == "error":
            continue
        tables.add_row(name, f"{counts.get(name, 0):,}", f"{written.get(name, 0):,}")
    reasons = Table(title="DLQ by reason", show_edge=False)
    reasons.add_column("reason")
    reasons.add_column("count", justify="right")
    for reason, n in sorted(rejected.items()):
        reasons.add_row(reason, f"{n:,}")
    state = (
        Text("ClickHouse unavailable: holding batches, nothing lost", style="bold red")
        if status.get("backpressure")
        else Text("flowing", style="bold green")
    )
    parts: list[Any] = [flow, Text(""), tables]
    if rejected:
        parts.append(reasons)
    if status.get("backpressure") and status.get("last_sink_error"):
        parts.append(Text(status["last_sink_error"], style="red"))
    hint = extra.get("hint")
    if hint:
        parts.append(Text(hint, style="dim"))
    return Group(Panel(Group(*parts), title=Text.assemble("taskpulse  ", state)))


def render_group(g: dict[str, Any], states: dict[str, int]) -> Panel:
    """Live progress of one task group (``taskpulse status --group``)."""
    total = int(g.get("total") or 0)
    done = int(g.get("completed") or 0) + int(g.get("failed") or 0)
    pct = float(g.get("percentage") or 0.0)
    width = 40
    filled = int(round(width * pct / 100))
    bar = Text("█" * filled, style="green") + Text("░" * (width - filled), style="dim")
    grid = Table.grid(padding=(0, 3))
    for _ in range(5):
        grid.add_column(justify="right")
    grid.add_row("total", "pending", "in progress", "completed", "failed")
    grid.add_row(*(f"{int(g.get(k) or 0):,}" for k in ("total", "pending", "in_progress", "completed", "failed")))
    eta = g.get("estimated_completion")
    lines: list[Any] = [
        Text.assemble(bar, f"  {pct:.1f}%  ({done:,}/{total:,})"),
        grid,
        Text(f"first created {g.get('first_created_at') or '-'} · last finished {g.get('last_finished_at') or '-'}"),
        Text(f"estimated completion: {eta or ('done' if total and done == total else 'not enough finished yet')}"),
    ]
    if states:
        lines.append(Text("by state: " + ", ".join(f"{k} {v:,}" for k, v in states.items()), style="dim"))
    return Panel(Group(*lines), title=f"group {g.get('group_key')}")
