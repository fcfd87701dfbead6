"""Log sources: seed 004's NDJSON agent logs and seed 001's per-task CSV, mapped to taskpulse
event envelopes.  Pure: no I/O, no clock.

Each mapping gives a ``Mapped``: the envelopes to publish, or the original line to publish as
it is so that the pipeline's decoder dead-letters it with its reason (an unknown event type,
invalid JSON), or a note that the line is a known shape that carries no taskpulse event.

Event ids are derived from the event's own fields (``uuid5`` of the taskpulse event type, the
task or agent key and the timestamp as written), so reading a file again, or the same event
from two files (seed 004 writes self-reports to ``events.ndjson`` and ``droid_status.ndjson``),
never counts twice.
"""

from __future__ import annotations

import csv
import io
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

#: the namespace of derived event ids (fixed: the same line gives the same ids in every version)
ID_NAMESPACE = uuid.UUID("6f1c2a52-9d0e-4c57-8d6b-5a6b7c1e0f17")

#: seed 001's CSV columns (the header `taskpulse export csv` writes, too)
CSV_COLUMNS = ("timestamp", "user_id", "request", "assigned_agent", "confidence", "other_agents_confidence",
               "success", "execution_time", "error_message")  # fmt: skip

#: the longest CSV record (a quoted field may span lines; one never closed must not grow forever)
MAX_RECORD_CHARS = 1024 * 1024

#: seed 004 event types that carry no taskpulse event (skipped and counted, not dead-lettered)
INFORMATIONAL = {
    "task.result": "the result is on task.execution.completed",
    "task.result.validated": "the result is on task.execution.completed",
    "performance.metrics": "a summary computed from the other events",
    "audit.recorded": "an audit copy of the other events",
}


@dataclass
class Mapped:
    """What one input line or row becomes."""

    events: list[dict[str, Any]] = field(default_factory=list)
    #: publish these bytes as they are: the decoder dead-letters them with the reason
    dead_letter: bytes | None = None
    #: why the line carries no event (a known informational shape)
    skipped: str = ""
    #: what is wrong (shown to the user; the DLQ entry has the decoder's reason)
    problem: str = ""


def derived_id(event_type: str, key: str, timestamp: Any) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, f"{event_type}|{key}|{timestamp}"))


def _event(event_type: str, key: str, timestamp: Any, state: dict[str, Any], *,
           metadata: dict[str, Any] | None = None,
           metrics: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    return {
        "id": derived_id(event_type, key, timestamp),
        "timestamp": timestamp,
        "event_type": event_type,
        "entity_type": event_type.split(".", 1)[0],
        "entity_id": key,
        "current_state": {k: v for k, v in state.items() if v is not None},
        "metadata": {k: v for k, v in (metadata or {}).items() if v is not None},
        "metrics": {k: v for k, v in (metrics or {}).items() if v is not None},
    }


# --------------------------------------------------------------------------- seed 004


def task_key(doc: dict[str, Any]) -> str:
    """Seed 004's task identity: ``execution_id`` when present, else ``run_id/task_id`` (task
    ids such as "1.1" repeat across runs), else the task id."""
    if doc.get("execution_id"):
        return str(doc["execution_id"])
    run, task = doc.get("run_id"), doc.get("task_id")
    if run and task:
        return f"{run}/{task}"
    return str(task or "")


def _field(doc: dict[str, Any], details: dict[str, Any], *names: str) -> Any:
    for name in names:
        if doc.get(name) is not None:
            return doc[name]
        if details.get(name) is not None:
            return details[name]
    return None


def _success(value: Any, status: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    return str(status or "").lower() not in ("failed", "failure", "error", "timeout", "abandoned")


def agent_log_line(line: bytes) -> Mapped:
    """One line of a seed 004 NDJSON log (``events.ndjson``, ``droid_status.ndjson``,
    ``results.ndjson``, …) → taskpulse events (the mapping table is in the README)."""
    import orjson

    try:
        doc = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        return Mapped(dead_letter=line, problem=f"invalid_json: {exc}")
    if not isinstance(doc, dict):
        return Mapped(dead_letter=line, problem=f"not an object: {type(doc).__name__}")
    kind = str(doc.get("event_type", ""))
    if kind in INFORMATIONAL:
        return Mapped(skipped=f"{kind}: {INFORMATIONAL[kind]}")
    details: dict[str, Any] = doc["details"] if isinstance(doc.get("details"), dict) else {}
    ts = doc.get("timestamp")
    key = task_key(doc)
    droid = doc.get("droid_id")
    base = {"agent_id": droid, "group": doc.get("run_id"), "task_type": _field(doc, details, "task_type"),
            "task_id": doc.get("task_id"), "run_id": doc.get("run_id"),
            "execution_id": doc.get("execution_id")}  # fmt: skip
    meta = {"triggered_by": droid, "correlation_id": doc.get("run_id")}
    if kind == "task.execution.started":
        request = _field(doc, details, "description", "request")
        return Mapped(events=[
            _event("task.created", key, ts, {**base, "request": request}, metadata=meta),
            _event("task.assigned", key, ts, base, metadata=meta),
            _event("task.started", key, ts, base, metadata=meta),
        ])  # fmt: skip
    if kind in ("task.execution.completed", "task.execution.failed"):
        status = doc.get("status")
        ok = kind == "task.execution.completed" and _success(_field(doc, details, "success"), status)
        result = _field(doc, details, "result")
        error = _field(doc, details, "error", "error_message")
        if error is None and isinstance(result, dict):
            error = result.get("error")
        duration = _field(doc, details, "duration_ms")
        if duration is None and isinstance(_field(doc, details, "duration_s", "duration"), int | float):
            duration = float(_field(doc, details, "duration_s", "duration")) * 1000
        metrics = {"duration_ms": duration}
        if ok:
            return Mapped(events=[_event("task.completed", key, ts, {**base, "success": True, "result": result},
                                         metadata=meta, metrics=metrics)])  # fmt: skip
        failed = {**base, "error": error, "result": result, "status": status}
        return Mapped(events=[_event("task.failed", key, ts, failed, metadata=meta, metrics=metrics)])
    if kind == "task.execution.abandoned":
        reason = _field(doc, details, "reason")
        return Mapped(events=[_event("task.abandoned", key, ts, {**base, "reason": reason}, metadata=meta)])
    if kind == "droid.self_report":
        progress = _field(doc, details, "progress")
        message = _field(doc, details, "message")
        report = {"status": doc.get("status") or details.get("status"), "task_id": key or None,
                  "progress": progress, "message": message, "run_id": doc.get("run_id"),
                  "details": details or None}  # fmt: skip
        events = [_event("agent.self_report", str(droid or ""), ts, report, metadata=meta)]
        if key and isinstance(progress, int | float) and not isinstance(progress, bool):
            pct = float(progress) * 100 if 0 <= progress <= 1 else float(progress)
            events.append(_event("task.progress", key, ts, {**base, "percentage": pct, "step": message},
                                 metadata=meta))  # fmt: skip
        return Mapped(events=events)
    return Mapped(dead_letter=line, problem=f"unknown_event_type: {kind or '(none)'!r} is not a seed 004 event "
                                             "taskpulse maps")  # fmt: skip


# --------------------------------------------------------------------------- seed 001


def parse_evaluations(text: str) -> dict[str, float] | None:
    """``Writer:30;Builder:15`` → {"Writer": 30.0, "Builder": 15.0}; None when unreadable."""
    out: dict[str, float] = {}
    for part in text.split(";"):
        if not part.strip():
            continue
        name, sep, score = part.rpartition(":")
        try:
            out[name.strip()] = float(score)
        except ValueError:
            return None
        if not sep or not name.strip():
            return None
    return out


def _number(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # the decoder names the field that is not a number


def _parse_time(text: str) -> datetime | None:
    try:
        return datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None


def csv_task_id(row: dict[str, str]) -> str:
    """A seed 001 row names no task: its id is derived from when, who and what was asked."""
    raw = f"{row.get('timestamp', '')}|{row.get('user_id', '')}|{row.get('request', '')}"
    return "csv-" + uuid.uuid5(ID_NAMESPACE, raw).hex[:20]


class TaskCsv:
    """Seed 001's CSV, one record at a time (a quoted field may span lines: ``feed`` returns
    nothing until the record is complete).  The first record is the header when it names the
    columns; without one the seed's column order is assumed."""

    def __init__(self, header: list[str] | None = None, pending: str = "") -> None:
        self.header: list[str] = list(header or CSV_COLUMNS)
        self.header_seen = header is not None
        #: the start of a record whose quoted field goes on in the next line
        self.pending = pending

    def feed(self, line: str) -> Mapped | None:
        """One physical line; a Mapped once a record is complete (None while inside quotes)."""
        text = self.pending + line
        if text.count('"') % 2:
            if len(text) > MAX_RECORD_CHARS:  # a quote never closed: give up on this record
                self.pending = ""
                return _csv_reject(text[:4096], f"a quoted field still open after {len(text):,} characters")
            self.pending = text if text.endswith("\n") else text + "\n"
            return None
        self.pending = ""
        if not text.strip():
            return Mapped(skipped="empty line")
        try:
            fields = next(csv.reader(io.StringIO(text)), [])
        except csv.Error as exc:
            return _csv_reject(text[:4096], f"not a CSV row: {exc}")
        if not self.header_seen and [f.strip().lower() for f in fields[:2]] == ["timestamp", "user_id"]:
            self.header = [f.strip() for f in fields]
            self.header_seen = True
            return Mapped(skipped="header")
        self.header_seen = True
        return self.row(fields, text)

    def row(self, fields: list[str], text: str) -> Mapped:
        n = len(self.header)
        if len(fields) > n and all(not f.strip() for f in fields[3 : 3 + len(fields) - n]):
            # seed 001's own example row has an empty field too many where no agent was assigned:
            # read such a row right-aligned (the surplus fields are all empty)
            fields = fields[:3] + fields[3 + len(fields) - n :]
        if len(fields) != n:
            return _csv_reject(text, f"the row has {len(fields)} fields, the header {n}")  # no envelope: no place
        row = dict(zip(self.header, fields, strict=True))
        return csv_row(row, text)


def _csv_reject(text: str, problem: str, *, timestamp: Any = None, state: dict[str, Any] | None = None,
                metrics: dict[str, Any] | None = None) -> Mapped:  # fmt: skip
    """A row that cannot become a task, as one event that carries the row (``csv_row``) and
    the wrong value where the decoder looks, so the DLQ entry names the field and reason
    (a row with the wrong number of fields has no such place: it lacks the envelope)."""
    import orjson

    row = text.rstrip("\n")
    if timestamp is None and state is None and metrics is None:
        return Mapped(dead_letter=orjson.dumps({"source": "task-csv", "problem": problem, "row": row}),
                      problem=f"schema_violation: {problem}")  # fmt: skip
    key = "csv-" + uuid.uuid5(ID_NAMESPACE, row).hex[:20]
    doc = {"id": derived_id("task.completed", key, row), "timestamp": timestamp, "event_type": "task.completed",
           "entity_type": "task", "entity_id": key, "current_state": {**(state or {}), "csv_row": row},
           "metrics": metrics or {}}  # fmt: skip
    return Mapped(dead_letter=orjson.dumps(doc), problem=problem)


def csv_row(row: dict[str, str], text: str = "") -> Mapped:
    """One seed 001 row → task.created, task.assigned (the agent, its confidence and every other
    agent's), task.started at ``timestamp``; task.completed or task.failed ``execution_time``
    seconds later."""
    ts_text = (row.get("timestamp") or "").strip()
    start = _parse_time(ts_text)
    if start is None:
        return _csv_reject(text, f"bad_timestamp: {ts_text!r} is not ISO 8601", timestamp=ts_text)
    success_text = (row.get("success") or "").strip().lower()
    if success_text not in ("true", "false", "1", "0", "yes", "no"):
        return _csv_reject(text, f"schema_violation: success {row.get('success')!r} is not true or false",
                           timestamp=ts_text, state={"success": row.get("success")})  # fmt: skip
    exec_text = (row.get("execution_time") or "0").strip() or "0"
    try:
        seconds = float(exec_text)
    except ValueError:
        seconds = float("nan")
    if not 0 <= seconds < 10 * 365 * 86400:
        return _csv_reject(text, f"schema_violation: execution_time {exec_text!r} is not a number of seconds "
                           "(0 up to 10 years)", timestamp=ts_text, metrics={"duration_ms": exec_text})  # fmt: skip
    key = csv_task_id(row)
    agent = (row.get("assigned_agent") or "").strip() or None
    finish = start + timedelta(seconds=seconds)
    end_ts = finish.isoformat().replace("+00:00", "Z")
    base: dict[str, Any] = {"agent_id": agent}
    events = [_event("task.created", key, ts_text, {**base, "request": row.get("request") or None,
                                                    "requester_id": (row.get("user_id") or "").strip() or None,
                                                    "requester_type": "human"})]  # fmt: skip
    if agent:
        evaluations: dict[str, float] | str | None = {}
        others = (row.get("other_agents_confidence") or "").strip()
        if others:
            evaluations = parse_evaluations(others) or others
        conf_text = (row.get("confidence") or "").strip()
        confidence = _number(conf_text) if conf_text else None
        if isinstance(evaluations, dict) and isinstance(confidence, float):
            evaluations = {agent: confidence, **evaluations}
        events.append(_event("task.assigned", key, ts_text, {**base, "confidence": confidence,
                                                             "evaluations": evaluations or None}))  # fmt: skip
        events.append(_event("task.started", key, ts_text, base))
    ok = success_text in ("true", "1", "yes")
    metrics = {"duration_ms": round(seconds * 1000, 3)}
    error = (row.get("error_message") or "").strip() or None
    if ok:
        events.append(_event("task.completed", key, end_ts, {**base, "success": True}, metrics=metrics))
    else:
        events.append(_event("task.failed", key, end_ts, {**base, "error": error, "will_retry": False},
                             metrics=metrics))  # fmt: skip
    return Mapped(events=events)
