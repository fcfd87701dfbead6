"""The correlator's typed state reads and writes the compact form the Faust changelog holds."""

from __future__ import annotations

import orjson

from pipeline.core.tasks.lifecycle import HistoryEntry
from pipeline.core.tasks.state import AgentSlot, TaskSlot

#: a task slot as the previous version wrote it (every optional key set)
OLD_TASK = {
    "h": [[1000, 0, "e1", "task.created", {"task_type": "research"}],
          [2000, 3, "e2", "task.started", {"agent_id": "a1"}]],
    "v": 3, "rv": 1, "sig": "{}", "term": None, "ab": 2, "closed": None, "wall": 5000, "last": 2000,
    "ad": None, "hd": 4, "hp": 3, "alive": 2500, "tt": "research", "ag": "a1",
}  # fmt: skip
OLD_AGENT = {"status": "busy", "since": 10, "seen": 20, "online_since": 5, "active": 2, "cpu": 12.5, "mem": 300,
             "busy_ms": 7, "online_ms": 9, "reported": "executing", "n": 4, "v": 6}  # fmt: skip


def test_a_persisted_task_slot_loads_with_names_and_writes_back_the_same() -> None:
    slot = TaskSlot.from_json("t", orjson.loads(orjson.dumps(OLD_TASK)))
    assert slot.history[1] == HistoryEntry(2000, 3, "e2", "task.started", {"agent_id": "a1"})
    assert (slot.version, slot.verdicts, slot.dropped_events, slot.dropped_progress) == (3, 2, 4, 3)
    assert (slot.alive_ms, slot.watched_task_type, slot.indexed_agent) == (2500, "research", "a1")
    written = {k: v for k, v in OLD_TASK.items() if k != "ad"}  # a None verdict is not written
    assert orjson.loads(orjson.dumps(slot.to_json())) == written


def test_a_slot_without_optional_keys_loads_with_defaults() -> None:
    minimal = {k: OLD_TASK[k] for k in ("h", "v", "rv", "sig", "term", "ab", "closed", "wall", "last")}
    slot = TaskSlot.from_json("t", minimal)
    assert (slot.verdict_deadline_ms, slot.agent_alive_ms, slot.indexed_agent, slot.closed_abandoned) == (
        None, 0, "", False)
    assert slot.alive_ms == 2000


def test_an_agent_slot_round_trips_its_short_keys() -> None:
    a = AgentSlot.from_json(OLD_AGENT)
    assert (a.active_tasks, a.reported_status, a.changes, a.version) == (2, "executing", 4, 6)
    assert a.to_json() == OLD_AGENT
