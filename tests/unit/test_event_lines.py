"""The ``events`` rows as JSONEachRow lines (``event_lines``): each line is the event's
normalized JSON with its source added, read by ``EVENT_JSON``'s structure, whose keys are
exactly the NormalizedEvent's fields and the source's.  (That the engine stores from them
what the Native tuples stored is tests/integration/test_event_lines.py.)"""

from __future__ import annotations

import re

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.ingest.aggregates import SketchMapping
from pipeline.core.ingest.batch import Accepted, BatchProcessor, RawMessage
from pipeline.core.ingest.decode import Decoder
from pipeline.core.ingest.dedup import SeenIds
from pipeline.core.ingest.queries import json_insert
from pipeline.core.ingest.rows import EVENT_COLUMNS, EVENT_JSON, event_lines
from pipeline.events import NormalizedEvent
from tests.unit.helpers import DAY0_MS, TOPIC, dumps, iso, make_event

NOW = DAY0_MS + 86_400_000
SRC = ["src_topic", "src_partition", "src_offset", "src_index", "src_log"]


def _accepted(docs: list[dict[str, object]], log: str = "") -> list[Accepted]:
    bp = BatchProcessor(Decoder(), SeenIds(10_000), SketchMapping())
    if log:
        bp.use_logs({TOPIC: log}, {})
    out = bp.process([RawMessage(TOPIC, i % 2, 7 + i, dumps(d)) for i, d in enumerate(docs)], NOW)
    return out.events


def _event(doc: dict[str, object]) -> NormalizedEvent:
    """The normalized event the processor made of ``doc`` (its ``ingested_ms`` is ``NOW``)."""
    [event] = Decoder().decode(TOPIC, 0, 7, dumps(doc), NOW)
    assert isinstance(event, NormalizedEvent)
    return event


def _keys(structure: str) -> list[str]:
    return [part.split(" ", 1)[0] for part in re.split(r",\s*(?![^()]*\))", structure)]


def test_the_structure_reads_every_field_of_a_normalized_event_and_the_source() -> None:
    # a field renamed or added on NormalizedEvent without the structure would be stored as a default
    assert _keys(EVENT_JSON.structure) == [*NormalizedEvent.model_fields, *SRC]
    assert list(EVENT_JSON.columns) == EVENT_COLUMNS
    keys = set(_keys(EVENT_JSON.structure))
    for expr in EVENT_JSON.exprs:
        names = set(re.findall(r"([A-Za-z_]\w*)(?![\w(])", re.sub(r"'[^']*'", "", expr)))
        assert names <= keys, expr


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.text(max_size=20), st.none() | st.floats(0, 1e12), st.text(max_size=30)), min_size=1,
             max_size=10),
    st.sampled_from(["", "cluster/topic-id", 'odd "log" \\ id']),
)  # fmt: skip
def test_a_line_is_the_normalized_json_with_the_source_added(
    items: list[tuple[str, float | None, str]], log: str
) -> None:
    docs = [
        make_event(f"e{i}-{text}", "task.completed", iso(DAY0_MS + i), duration_ms=dur,
                   state={"agent_id": "a", "note": note}, metadata={"tags": [text], "triggered_by": text})
        for i, (text, dur, note) in enumerate(items)
    ]  # fmt: skip
    accepted = _accepted(docs, log)
    lines = event_lines(accepted)
    assert len(lines) == len(accepted) == len(docs)
    for a, line, d in zip(accepted, lines, docs, strict=True):
        doc = orjson.loads(line)
        src = {"src_topic": a.topic, "src_partition": a.partition, "src_offset": a.offset, "src_index": a.index,
               "src_log": log}  # fmt: skip
        assert doc == {**orjson.loads(orjson.dumps(vars(_event(d)))), **src}
        assert line.startswith(a.payload[:-1])  # the payload's bytes as they are, not made again
        assert b"\n" not in line


def test_an_event_without_its_normalized_json_gets_it_made_again() -> None:
    doc = make_event("x", duration_ms=2.5)
    [a] = _accepted([doc])
    for payload in (b"", b'{"original":"bytes"}', b'{"id":"x","timestamp":1}'):
        again = Accepted.of(_event(doc), a.topic, a.partition, a.offset, a.index, payload, a.log)
        assert again == a
        assert event_lines([again]) == event_lines([a])


def test_only_one_column_reads_the_same_lines() -> None:
    one = EVENT_JSON.only("tags")
    assert one.columns == ("tags",) and one.exprs == ("JSONExtract(metadata, 'tags', 'Array(String)')",)
    assert one.structure == EVENT_JSON.structure
    sql = json_insert("db", "_probe_events", one, "/tmp/it's.jsonl")
    assert sql.startswith("INSERT INTO db._probe_events (tags) SETTINGS ")
    assert "FROM file('/tmp/it\\'s.jsonl', 'JSONEachRow', '" in sql
