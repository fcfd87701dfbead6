"""The per-task CSV of the task log (seed 001): rows, the keyset, time arguments (the page
queries: ``pipeline.core.tasks.queries``).  Pure.

Columns: ``timestamp,user_id,request,assigned_agent,confidence,other_agents_confidence,
success,execution_time,error_message`` — the request time (ISO 8601, UTC), the requester,
the request text, the assigned agent and its confidence, every other evaluated agent as
``Name:score;Name:score`` (highest first), ``true``/``false``, the execution time in
seconds, and the error.  Pages are read in (timestamp, task id) order with a keyset, so an
export of millions of rows holds one page in memory.

Text cells (user id, request, agent names, error) that a spreadsheet would read as a
formula — they begin with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return — get a
leading ``'`` (OWASP's CSV injection advice); numbers, times and ``true``/``false`` are
written by taskpulse and stay as they are, negative numbers included.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline.core.timestamps import TimestampError, to_epoch_ms

CSV_HEADER = [
    "timestamp", "user_id", "request", "assigned_agent", "confidence", "other_agents_confidence",
    "success", "execution_time", "error_message",
]  # fmt: skip

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def parse_time(text: str, now_ms: int) -> int:
    """``2025-11-03``, ``2025-11-03T10:00:00Z``, epoch, ``now``, or a span back from now (``24h``, ``7d``)."""
    if text.strip().lower() == "now":
        return now_ms
    m = _RELATIVE.match(text.strip())
    if m:
        return now_ms - int(float(m.group(1)) * _UNIT_S[m.group(2)] * 1000)
    try:
        return to_epoch_ms(text.strip())
    except TimestampError as exc:
        raise ValueError(f"cannot read {text!r} as a time: use ISO 8601 (2025-11-03T10:00:00Z) or 24h / 7d") from exc


FORMULA_LEADS = ("=", "+", "-", "@", "\t", "\r")


def text_cell(value: Any) -> str:
    """A text cell a spreadsheet will not run: formula-leading text gets a ``'`` prefix (also
    text already quoted that way, so ``read_text_cell`` gives back exactly what was written)."""
    text = "" if value is None else str(value)
    return "'" + text if text.lstrip("'").startswith(FORMULA_LEADS) else text


def read_text_cell(cell: str) -> str:
    """The text ``text_cell`` was given (for importers of this CSV)."""
    return cell[1:] if cell.startswith("'") and cell.lstrip("'").startswith(FORMULA_LEADS) else cell


def csv_row(row: list[Any]) -> tuple[list[str], tuple[str, str]]:
    """A page row → (CSV fields, the keyset of this row)."""
    ts, task_id, user, request, agent, conf, others, success, exec_ms, error = row
    iso = str(ts).replace(" ", "T")[:23] + "Z"
    ranked = sorted(_pairs(others), key=lambda p: (-p[1], p[0]))
    other = text_cell(";".join(f"{name}:{_num(score)}" for name, score in ranked))
    fields = [
        iso, text_cell(user or ""), text_cell(request or ""), text_cell(agent or ""),
        "" if conf is None else _num(conf), other, "true" if success in (True, 1, "true") else "false",
        "" if exec_ms is None else _num(float(exec_ms) / 1000), text_cell(error or ""),
    ]  # fmt: skip
    return fields, (str(ts), str(task_id))


def _pairs(others: Any) -> list[tuple[str, float]]:
    if isinstance(others, dict):
        return [(str(k), float(v)) for k, v in others.items()]
    return [(str(k), float(v)) for k, v in (others or [])]


def _num(x: float) -> str:
    return f"{float(x):.3f}".rstrip("0").rstrip(".") if x == x else ""


__all__ = ["CSV_HEADER", "FORMULA_LEADS", "csv_row", "parse_time", "read_text_cell", "text_cell"]
