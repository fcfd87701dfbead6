"""The correlator's state of one task and of one agent: typed in memory, compact only on the
wire.  ``to_json`` writes the short keys the Faust changelog has always held, ``from_json``
reads them (and what older versions wrote: missing keys take their defaults, a task slot
from before verdicts were kept apart is upgraded).  Pure."""

from __future__ import annotations

from dataclasses import dataclass, field
from operator import is_
from typing import Any

import orjson

from pipeline.core import jsonbytes
from pipeline.core.tasks.lifecycle import HistoryEntry, sort_key, verdict_number


@dataclass(slots=True)
class TaskSlot:
    """What the correlator keeps of one task between events."""

    #: wall ms of the task's last change (what the reordering window counts from)
    changed_wall_ms: int
    #: newest event time of the task's own events
    last_event_ms: int
    #: the task's distinct events (any order; the lifecycle sorts them)
    history: list[HistoryEntry] = field(default_factory=list)
    #: version of its ``tasks`` row
    version: int = 0
    #: version of its lifecycle record (``task_executions``); 0: none published yet
    record_version: int = 0
    #: the last published record (version 0), to publish a correction only when it differs
    record_signature: str | None = None
    #: wall ms it reached a final state, while its events get the reordering window to arrive
    final_since_wall_ms: int | None = None
    #: abandonment verdicts issued on it (their event ids count up)
    verdicts: int = 0
    #: the standing abandonment verdict's deadline (stream ms); None: no verdict stands
    verdict_deadline_ms: int | None = None
    #: wall ms its record was published and it was closed; None: open
    closed_wall_ms: int | None = None
    #: closed as abandoned (kept longer: a late completion corrects it)
    closed_abandoned: bool = False
    #: events / progress events the history cap dropped (still counted on the record)
    dropped_events: int = 0
    dropped_progress: int = 0
    #: newest heartbeat of its agent (keeps a started task alive)
    agent_alive_ms: int = 0
    #: task type and agent it is watched under (abandonment timeout, heartbeat index)
    watched_task_type: str = ""
    indexed_agent: str = ""
    #: not persisted: the correlator's last derived view of the task, with what it was derived
    #: from (``Correlator._view``); cleared whenever the history changes
    view_cache: tuple[tuple[Any, ...], Any] | None = field(default=None, compare=False, repr=False)
    #: not persisted: what ``to_bytes`` last wrote (the history entries it held, the bytes, where
    #: in them the history's array closes), for the next write to append to
    wire_cache: tuple[list[HistoryEntry], bytes, int] | None = field(default=None, compare=False, repr=False)

    @property
    def alive_ms(self) -> int:
        """The task's last sign of life: its own newest event, or its agent's newest heartbeat."""
        return max(self.last_event_ms, self.agent_alive_ms)

    def to_json(self) -> dict[str, Any]:
        """The persisted form (short keys; optional ones only when set)."""
        return {"h": [e.to_json() for e in self.history], **self._rest()}

    def _rest(self) -> dict[str, Any]:
        """The persisted form but its history (``"h"``, its first key), in its order."""
        doc: dict[str, Any] = {
            "v": self.version, "rv": self.record_version, "sig": self.record_signature,
            "term": self.final_since_wall_ms, "ab": self.verdicts, "closed": self.closed_wall_ms,
            "wall": self.changed_wall_ms, "last": self.last_event_ms,
        }  # fmt: skip
        optional = (
            ("ad", self.verdict_deadline_ms, None), ("abandoned", self.closed_abandoned, False),
            ("hd", self.dropped_events, 0), ("hp", self.dropped_progress, 0), ("alive", self.agent_alive_ms, 0),
            ("tt", self.watched_task_type, ""), ("ag", self.indexed_agent, ""),
        )  # fmt: skip
        for key, value, default in optional:
            if value != default:
                doc[key] = value
        return doc

    def to_bytes(self) -> bytes:
        """``jsonbytes.dumps(self.to_json())``, byte for byte (and raising what it raises), made
        without serializing again the history entries the last call wrote: a task's history
        grows by appending, and an entry is never modified (a tuple; ``compact`` builds its data
        once), so what that call wrote of the entries still at the head of the history, the same
        objects, is copied from its bytes.  Any other change of the history: written whole."""
        h = self.history
        doc = self._rest()
        cache = self.wire_cache
        if cache is not None and len(cache[0]) <= len(h) and all(map(is_, cache[0], h)):
            entries, previous, cut = cache
            old = memoryview(previous)
            added = h[len(entries) :]
            # the added entries inside the document's own nesting, as the whole one would have them
            new = memoryview(orjson.dumps({"h": list(map(tuple, added))}))[6:-2] if added else b""
            tail = memoryview(orjson.dumps(doc))[1:]
            value = b"".join((old[:cut], b"," if entries and added else b"", new, b"],", tail))
            cut += len(new) + (1 if entries and added else 0)
        else:
            whole = memoryview(orjson.dumps({"h": list(map(tuple, h))}))[:-1]  # '{"h":[…]'
            tail = memoryview(orjson.dumps(doc))[1:]
            value = b"".join((whole, b",", tail))
            cut = len(whole) - 1
        self.wire_cache = (h[:], value, cut)
        return value

    @classmethod
    def from_json(cls, task_id: str, doc: dict[str, Any]) -> TaskSlot:
        """A slot from its persisted form, of this version or an older one."""
        slot = cls(
            changed_wall_ms=int(doc["wall"]),
            last_event_ms=int(doc["last"]),
            history=[HistoryEntry.from_json(e) for e in doc["h"]],
            version=int(doc["v"]),
            record_version=int(doc["rv"]),
            record_signature=doc["sig"],
            final_since_wall_ms=doc["term"],
            verdicts=int(doc["ab"]),
            verdict_deadline_ms=doc.get("ad"),
            closed_wall_ms=doc["closed"],
            closed_abandoned=bool(doc.get("abandoned", False)),
            dropped_events=int(doc.get("hd", 0)),
            dropped_progress=int(doc.get("hp", 0)),
            agent_alive_ms=int(doc.get("alive", 0)),
            watched_task_type=str(doc.get("tt", "")),
            indexed_agent=str(doc.get("ag") or ""),
        )
        if "ad" not in doc:
            slot.upgrade(task_id)
        return slot

    def upgrade(self, task_id: str) -> None:
        """A slot persisted before verdicts were kept apart: its ``task.abandoned`` entries that
        taskpulse added itself leave the history; the last one, if nothing of the task's own
        came after it, becomes the standing verdict."""
        if not any(verdict_number(task_id, e.event_id) is not None for e in self.history):
            return
        last = sorted(self.history, key=sort_key)[-1]
        if verdict_number(task_id, last.event_id) is not None:
            self.verdict_deadline_ms = last.time_ms
        self.history = [e for e in self.history if verdict_number(task_id, e.event_id) is None]


@dataclass(slots=True)
class AgentSlot:
    """What the correlator keeps of one agent: its availability and time accounting."""

    #: unknown, online, busy or offline
    status: str
    #: stream ms of the current status
    since_ms: int
    #: newest event time of the agent
    seen_ms: int
    online_since_ms: int | None = None
    #: from its latest heartbeat
    active_tasks: int = 0
    cpu_percent: float | None = None
    memory_mb: float | None = None
    #: time spent busy / online in finished status intervals
    busy_ms: int = 0
    online_ms: int = 0
    #: the status its latest self-report gave
    reported_status: str = ""
    #: status changes so far (numbers its ``agent.status_changed`` ids)
    changes: int = 0
    #: version of its ``agent_status`` row
    version: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "status": self.status, "since": self.since_ms, "seen": self.seen_ms, "online_since": self.online_since_ms,
            "active": self.active_tasks, "cpu": self.cpu_percent, "mem": self.memory_mb, "busy_ms": self.busy_ms,
            "online_ms": self.online_ms, "reported": self.reported_status, "n": self.changes, "v": self.version,
        }  # fmt: skip

    def to_bytes(self) -> bytes:
        """The persisted form's JSON (``TaskSlot.to_bytes``'s counterpart)."""
        return jsonbytes.dumps(self.to_json())

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> AgentSlot:
        return cls(
            status=str(doc["status"]), since_ms=int(doc["since"]), seen_ms=int(doc["seen"]),
            online_since_ms=doc.get("online_since"), active_tasks=int(doc.get("active", 0)),
            cpu_percent=doc.get("cpu"), memory_mb=doc.get("mem"), busy_ms=int(doc.get("busy_ms", 0)),
            online_ms=int(doc.get("online_ms", 0)), reported_status=str(doc.get("reported", "")),
            changes=int(doc.get("n", 0)), version=int(doc.get("v", 0)),
        )  # fmt: skip
