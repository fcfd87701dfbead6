"""Issue 14's targets next to what this run measured: met, missed, or not measured."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

Getter = Callable[[dict[str, Any]], float | None]


def _get(part: str, *path: str) -> Getter:
    def get(results: dict[str, Any]) -> float | None:
        node: Any = results.get(part)
        for key in path:
            if not isinstance(node, dict):
                return None
            node = node.get(key)
        return float(node) if isinstance(node, int | float) else None

    return get


#: (what, getter, target, higher is better, unit)
TARGETS: list[tuple[str, Getter, float, bool, str]] = [
    ("SDK batches of 100: events/s", _get("direct-batched", "pipeline_events_per_s"), 50_000, True, ""),
    ("SDK batches of 100: ÷ aiokafka ceiling", _get("direct-batched", "ratio"), 0.5, True, ""),
    ("one event per message: events/s", _get("direct-single", "pipeline_events_per_s"), 20_000, True, ""),
    ("ingest + correlate: events/s", _get("correlation-e2e", "events_per_s"), 25_000, True, ""),
    ("ingest + correlate: finished tasks/s", _get("correlation-e2e", "tasks_per_s"), 2_500, True, ""),
    ("p99 publish → ClickHouse at 5,000 events/s", _get("direct-latency", "p99_s"), 1.0, False, " s"),
    ("peak RSS, ingest alone", _get("direct-batched", "peak_rss_mib"), 600, False, " MiB"),
    ("peak RSS, ingest + correlate", _get("correlation-e2e", "peak_rss_mib"), 900, False, " MiB"),
    ("× Quix Streams, batches of 100", _get("direct-batched", "peers", "quix", "taskpulse_over_peer"), 5, True, "×"),
    ("× Quix Streams, one event per message", _get("direct-single", "peers", "quix", "taskpulse_over_peer"), 2, True,
     "×"),
]  # fmt: skip


def verdicts(results: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(what, target, measured, met / missed / not measured) per target."""
    rows = []
    for what, get, target, high, unit in TARGETS:
        value = get(results)
        want = f"{'≥' if high else '≤'} {target:,g}{unit}"
        if value is None:
            rows.append((what, want, "—", "not measured"))
            continue
        met = value >= target if high else value <= target
        rows.append((what, want, f"{value:,g}{unit}", "met" if met else "missed"))
    return rows


def print_targets(results: dict[str, Any], console: Console) -> None:
    table = Table(title="targets (issue 14)")
    for col in ("figure", "target", "this run", ""):
        table.add_column(col, justify="left" if col == "figure" else "right")
    for what, want, got, verdict in verdicts(results):
        style = {"met": "green", "missed": "red"}.get(verdict, "dim")
        table.add_row(what, want, got, f"[{style}]{verdict}[/]")
    console.print(table)
