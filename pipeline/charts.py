"""Report charts rendered on the server with matplotlib (Agg backend, no display) into SVG
text that the report's HTML inlines, so the file stands alone (no script, no network).
Each function takes plain data and returns one ``<svg>`` element; an empty series gives an
empty string (the report says "no data" instead)."""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

_STYLE: Any = {
    "svg.fonttype": "none",  # text stays text: searchable, small, crisp
    "font.size": 9,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "svg.hashsalt": "taskpulse",  # the same data gives the same SVG
}
COLORS = ["#2563eb", "#16a34a", "#dc2626", "#9333ea", "#ea580c", "#0891b2", "#4b5563", "#ca8a04"]


def _svg(fig: Figure) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    text = buf.getvalue()
    return re.sub(r"^.*?(<svg)", r"\1", text, count=1, flags=re.S)


def _fig(width: float = 7.0, height: float = 2.8) -> tuple[Figure, plt.Axes]:
    with plt.rc_context(_STYLE):
        fig, ax = plt.subplots(figsize=(width, height))
    return fig, ax


def _times(ms: Sequence[int]) -> list[float]:
    """Epoch milliseconds as matplotlib date numbers (UTC)."""
    return [float(mdates.date2num(datetime.fromtimestamp(t / 1000, tz=UTC))) for t in ms]


def time_series(
    title: str, times_ms: Sequence[int], series: dict[str, Sequence[float | None]], ylabel: str = "", bars: bool = False
) -> str:
    """Lines (or grouped bars) over time; ``series``: name → values aligned with ``times_ms``."""
    if not times_ms:
        return ""
    with plt.rc_context(_STYLE):
        fig, ax = _fig()
        xs = _times(times_ms)
        step = xs[1] - xs[0] if len(xs) > 1 else 1 / 24
        n = max(1, len(series))
        for i, (name, values) in enumerate(series.items()):
            ys = [float("nan") if v is None else float(v) for v in values]
            if bars:
                offs = [x + (i - (n - 1) / 2) * step * 0.8 / n for x in xs]
                ax.bar(offs, ys, width=step * 0.8 / n, label=name, color=COLORS[i % len(COLORS)])
            else:
                ax.plot(xs, ys, marker="o", markersize=2.5, linewidth=1.4, label=name, color=COLORS[i % len(COLORS)])
        ax.xaxis_date(tz=UTC)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(mdates.AutoDateLocator(tz=UTC), tz=UTC))
        ax.set_title(title, loc="left", fontweight="bold")
        ax.set_ylabel(ylabel)
        if len(series) > 1:
            ax.legend(ncols=min(4, n), loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
        return _svg(fig)


def bars(
    title: str, labels: Sequence[str], values: Sequence[float | None], xlabel: str = "", percent: bool = False
) -> str:
    """Horizontal bars, one per label (top to bottom in the given order)."""
    if not labels:
        return ""
    with plt.rc_context(_STYLE):
        fig, ax = _fig(7.0, max(1.4, 0.32 * len(labels) + 0.8))
        ys = [0.0 if v is None else float(v) * (100 if percent else 1) for v in values]
        pos = list(range(len(labels)))[::-1]
        ax.barh(pos, ys, color=COLORS[0], height=0.6)
        ax.set_yticks(pos, [str(label) or "(none)" for label in labels])
        for y, v, raw in zip(pos, ys, values, strict=True):
            ax.text(v, y, "  –" if raw is None else f"  {v:.1f}{'%' if percent else ''}", va="center", fontsize=8)
        if percent:
            ax.set_xlim(0, 110)
        ax.set_title(title, loc="left", fontweight="bold")
        ax.set_xlabel(xlabel)
        ax.grid(axis="y", visible=False)
        return _svg(fig)


def reliability_diagram(curves: dict[str, list[tuple[float, float, int]]]) -> str:
    """Predicted (mean confidence) vs observed success rate per confidence bucket, one curve
    per agent (points sized by tasks), with the diagonal of perfect calibration."""
    if not any(curves.values()):
        return ""
    with plt.rc_context(_STYLE):
        fig, ax = _fig(5.2, 4.4)
        ax.plot([0, 1], [0, 1], linestyle="--", color="#9ca3af", linewidth=1, label="perfectly calibrated")
        biggest = max(n for pts in curves.values() for _, _, n in pts) or 1
        for i, (name, pts) in enumerate(sorted(curves.items())):
            if not pts:
                continue
            pts = sorted(pts)
            color = COLORS[i % len(COLORS)]
            ax.plot([p for p, _, _ in pts], [o for _, o, _ in pts], color=color, linewidth=1.3, label=name)
            ax.scatter([p for p, _, _ in pts], [o for _, o, _ in pts], s=[20 + 120 * n / biggest for _, _, n in pts],
                       color=color, alpha=0.7)  # fmt: skip
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("predicted success (mean confidence in bucket)")
        ax.set_ylabel("observed success rate")
        ax.set_title("Reliability diagram", loc="left", fontweight="bold")
        ax.legend(fontsize=8, loc="lower right", framealpha=0.85, edgecolor="none")
        return _svg(fig)


def forecast_chart(title: str, history: Sequence[tuple[int, float]], forecast: Sequence[tuple[int, float]]) -> str:
    """The recent history and the forecast that continues it."""
    if not history and not forecast:
        return ""
    with plt.rc_context(_STYLE):
        fig, ax = _fig()
        if history:
            ax.plot(_times([t for t, _ in history]), [v for _, v in history], color=COLORS[0], linewidth=1.3,
                    label="tasks created per hour")  # fmt: skip
        if forecast:
            ax.plot(_times([t for t, _ in forecast]), [v for _, v in forecast], color=COLORS[4], linewidth=1.6,
                    linestyle="--", marker="o", markersize=2.5, label="forecast")  # fmt: skip
        ax.xaxis_date(tz=UTC)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(mdates.AutoDateLocator(tz=UTC), tz=UTC))
        ax.set_title(title, loc="left", fontweight="bold")
        ax.legend(ncols=2, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
        return _svg(fig)
