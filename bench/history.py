"""Regressions visible: each bench run appends its headline figures, with the git revision,
to ``bench/results/history.jsonl`` (committed) and prints the change against the previous
entry of the same kind (a ``--quick`` run compares with quick runs only)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

#: figure key → True when higher is better
_BETTER_HIGH = {"events_per_s": True, "ratio": True, "peak_rss_mib": False, "p99_s": False,
                "tasks_per_s": True, "us_per_event": False, "vs_quix": True, "vs_faust_tables": True}  # fmt: skip


def git_rev(root: Path) -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                             check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return f"{rev}+dirty" if dirty else rev


def headline(results: dict[str, Any]) -> dict[str, float]:
    """The figures worth comparing between runs, flat: ``<part>.<figure>``."""
    flat: dict[str, float] = {}
    for part, r in results.items():
        if not isinstance(r, dict):
            continue
        pick = {
            "events_per_s": r.get("pipeline_events_per_s", r.get("events_per_s")),
            "ratio": r.get("ratio"),
            "peak_rss_mib": r.get("peak_rss_mib"),
            "p99_s": r.get("p99_s"),
            "tasks_per_s": r.get("tasks_per_s"),
            "us_per_event": r.get("cpu_us_per_event"),
        }
        for key, value in pick.items():
            if isinstance(value, int | float):
                flat[f"{part}.{key}"] = float(value)
        for peer, pr in (r.get("peers") or {}).items():
            if isinstance(pr, dict) and isinstance(pr.get("taskpulse_over_peer"), int | float):
                flat[f"{part}.vs_{peer}"] = float(pr["taskpulse_over_peer"])
    return flat


def append_and_compare(path: Path, root: Path, results: dict[str, Any], kind: str, console: Console) -> None:
    """Append this run to ``path`` and print each figure next to the previous run's."""
    figures = headline(results)
    if not figures:
        return
    previous = None
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if entry.get("kind") == kind:
                previous = entry
    entry = {"rev": git_rev(root), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "kind": kind,
             "figures": figures}  # fmt: skip
    with path.open("a") as f:
        f.write(json.dumps(entry) + "\n")
    table = Table(title=f"change against the previous {kind} run"
                  + (f" ({previous['rev']}, {previous['at']})" if previous else " (none yet)"))  # fmt: skip
    for col in ("figure", "previous", "now", "change"):
        table.add_column(col, justify="right")
    before = previous["figures"] if previous else {}
    for key, now in figures.items():
        old = before.get(key)
        change = ""
        if old:
            pct = (now - old) / old * 100
            good = (pct >= 0) == _BETTER_HIGH.get(key.rsplit(".", 1)[1], True)
            change = f"[{'green' if good else 'red'}]{pct:+.0f}%[/]" if abs(pct) >= 1 else "±0%"
        table.add_row(key, "" if old is None else f"{old:,.2f}", f"{now:,.2f}", change)
    console.print(table)
    console.print(f"appended to {path}")
