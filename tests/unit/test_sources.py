"""Seed 004's NDJSON logs and seed 001's CSV mapped to taskpulse events: the task key, ids
derived from the event's fields, the decoder accepts every mapped event, unknown shapes are
dead-lettered, seed 001's own example rows (one with a field too many) are read."""

from __future__ import annotations

from pathlib import Path

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.ingest.decode import Decoder
from pipeline.core.ingest.sources import TaskCsv, agent_log_line, task_key
from pipeline.events import NormalizedEvent, Rejected

DATA = Path(__file__).resolve().parents[1] / "data"
NOW = 2_000_000_000_000  # 2033: every sample time is in the past


def decode(event: dict) -> NormalizedEvent | Rejected:
    return Decoder().decode("taskpulse.events.task", 0, 0, orjson.dumps(event), NOW)[0]


def test_task_key_is_execution_id_else_run_and_task_id():
    assert task_key({"execution_id": "exec-1", "run_id": "r", "task_id": "1.1"}) == "exec-1"
    assert task_key({"run_id": "r-1", "task_id": "1.1"}) == "r-1/1.1"
    assert task_key({"run_id": "r-2", "task_id": "1.1"}) != task_key({"run_id": "r-1", "task_id": "1.1"})
    assert task_key({"task_id": "1.1"}) == "1.1"


def test_started_line_becomes_created_assigned_started_with_the_seeds_values():
    line = (DATA / "agent-log" / "events.ndjson").read_bytes().splitlines()[0]
    m = agent_log_line(line)
    assert [e["event_type"] for e in m.events] == ["task.created", "task.assigned", "task.started"]
    ok = [decode(e) for e in m.events]
    assert all(isinstance(n, NormalizedEvent) for n in ok)
    created = ok[0]
    assert isinstance(created, NormalizedEvent)
    assert created.entity_id == "exec-1759940514-1.1"
    assert created.agent == "setup-comprehensive-testing"
    assert created.current_state["request"] == "Test infrastructure setup"
    assert created.current_state["group"] == "r-20251008-1621"
    assert created.timestamp_raw == "2025-10-08T16:21:54.536702+00:00"


def test_ids_depend_only_on_the_event_so_the_same_report_in_two_files_counts_once():
    a = (DATA / "agent-log" / "events.ndjson").read_bytes().splitlines()[2]
    b = (DATA / "agent-log" / "droid_status.ndjson").read_bytes().splitlines()[2]
    assert orjson.loads(a) == orjson.loads(b)
    ids_a = [e["id"] for e in agent_log_line(a).events]
    assert ids_a == [e["id"] for e in agent_log_line(b).events]
    assert ids_a == [e["id"] for e in agent_log_line(a).events]  # reading again: the same ids
    assert len(set(ids_a)) == 2  # agent.self_report + task.progress


def test_failure_keeps_the_error_object_and_progress_is_a_percentage():
    lines = (DATA / "agent-log" / "events.ndjson").read_bytes().splitlines()
    failed = decode(agent_log_line(lines[7]).events[0])
    assert isinstance(failed, NormalizedEvent) and failed.event_type == "task.failed"
    assert failed.current_state["error"] == "TimeoutError: upstream auth service did not answer in 30 s"
    progress = [e for e in agent_log_line(lines[2]).events if e["event_type"] == "task.progress"][0]
    assert progress["current_state"]["percentage"] == 30.0
    assert progress["current_state"]["step"] == "Installing pytest plugins"


def test_unknown_shapes_are_dead_lettered_and_informational_ones_skipped():
    unknown = agent_log_line(b'{"timestamp": "2025-10-08T16:23:12Z", "event_type": "droid.heartbeat_v2"}')
    assert unknown.dead_letter is not None and not unknown.events
    rejected = Decoder().decode("taskpulse.events.system", 0, 0, unknown.dead_letter, NOW)[0]
    assert isinstance(rejected, Rejected) and rejected.reason.value == "unknown_event_type"
    broken = agent_log_line(b'{"timestamp": "2025-')
    assert broken.dead_letter == b'{"timestamp": "2025-'
    assert agent_log_line(b'{"event_type": "task.result.validated"}').skipped.startswith("task.result.validated")
    sleeping = agent_log_line(b'{"timestamp": "2025-10-08T16:26:00Z", "event_type": "droid.self_report", '
                              b'"droid_id": "d", "status": "sleeping"}')  # fmt: skip
    bad = decode(sleeping.events[0])
    assert isinstance(bad, Rejected) and bad.reason.value == "schema_violation" and "status" in bad.detail


def rows_of(text: str) -> list:
    parser = TaskCsv()
    return [m for m in (parser.feed(ln) for ln in text.splitlines(keepends=True)) if m is not None]


def test_seed_001_rows_including_its_row_with_a_field_too_many():
    header = "timestamp,user_id,request,assigned_agent,confidence,other_agents_confidence,success,execution_time,error_message\n"  # noqa: E501
    seed = header + (
        '2024-01-15T10:30:00Z,U123456,"Research quantum computing",Grok,92,"Writer:30;Builder:15",true,45.2,\n'
        '2024-01-15T10:32:00Z,U345678,"Unknown request",,,,,false,0,"No agent confident enough"\n'
    )
    skipped, grok, unknown = rows_of(seed)
    assert skipped.skipped == "header"
    kinds = [e["event_type"] for e in grok.events]
    assert kinds == ["task.created", "task.assigned", "task.started", "task.completed"]
    assigned = grok.events[1]["current_state"]
    assert assigned["agent_id"] == "Grok" and assigned["confidence"] == 92.0
    assert assigned["evaluations"] == {"Grok": 92.0, "Writer": 30.0, "Builder": 15.0}
    done = grok.events[3]
    assert done["timestamp"] == "2024-01-15T10:30:45.200000Z" and done["metrics"]["duration_ms"] == 45200.0
    assert grok.events[0]["current_state"]["requester_id"] == "U123456"
    assert [e["event_type"] for e in unknown.events] == ["task.created", "task.failed"]
    assert unknown.events[1]["current_state"]["error"] == "No agent confident enough"
    assert all(isinstance(decode(e), NormalizedEvent) for e in grok.events + unknown.events)


def test_a_quoted_field_over_two_lines_is_one_row_and_bad_rows_name_their_field():
    rows = rows_of((DATA / "task_logs.csv").read_text())
    multi = [m for m in rows if m.events and "then list\nthree" in str(m.events[0]["current_state"].get("request"))]
    assert len(multi) == 1
    bad = [m for m in rows if m.dead_letter is not None]
    assert len(bad) == 1
    rejected = Decoder().decode("taskpulse.events.task", 0, 0, bad[0].dead_letter, NOW)[0]
    assert isinstance(rejected, Rejected) and rejected.reason.value == "bad_timestamp"
    again = rows_of((DATA / "task_logs.csv").read_text())
    assert [e["id"] for m in rows for e in m.events] == [e["id"] for m in again for e in m.events]


def test_a_record_cut_inside_a_quoted_field_goes_on_from_the_kept_pending_text():
    first = TaskCsv()
    assert first.feed('2024-01-15T10:35:12Z,U1,"Summarise, then\n') is None
    resumed = TaskCsv(first.header, first.pending)  # what a restarted follower gets back
    done = resumed.feed('list papers",Grok,88,"Writer:41",true,61.75,\n')
    assert done is not None and done.events[0]["current_state"]["request"] == "Summarise, then\nlist papers"


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
seed_keys = st.sampled_from(["timestamp", "event_type", "run_id", "task_id", "droid_id", "execution_id", "status",
                             "details", "progress", "result", "success", "error", "description"])  # fmt: skip
seed_types = st.sampled_from(["task.execution.started", "task.execution.completed", "task.execution.failed",
                              "task.execution.abandoned", "droid.self_report", "task.result", "x.y"])  # fmt: skip


@settings(max_examples=300)
@given(st.dictionaries(seed_keys, json_values, max_size=8), seed_types)
def test_hostile_seed_004_lines_map_or_dead_letter_never_raise(doc, kind):
    doc["event_type"] = kind
    mapped = agent_log_line(orjson.dumps(doc))
    assert mapped.events or mapped.dead_letter is not None or mapped.skipped
    for event in mapped.events:  # every mapped event is judged by the decoder: accepted or a reason
        decode(event)


@settings(max_examples=300)
@given(st.lists(st.text(max_size=40), max_size=6))
def test_hostile_csv_lines_never_raise(lines):
    parser = TaskCsv()
    for line in lines + ['"' * 3, "a\x00b,c\n", "x" * 200_000 + "\n"] + ['"' + "y" * 100_000] * 12:
        parser.feed(line if line.endswith("\n") else line + "\n")
    assert len(parser.pending) <= 1024 * 1024 + 100_002  # a quote never closed does not grow forever
