"""The ``events`` table fed from the normalized JSON (``event_lines`` + ``EVENT_JSON``: an
INSERT … SELECT over JSONEachRow lines) stores exactly what the Native row tuples it replaced
stored: the same events go both ways into two tables of the real engine, and every column of
every row is compared (floats by their bits, strings by their bytes).  Hostile values
included: huge and tiny numbers, floats the engine's fast parser rounds differently, nesting,
control characters, every kind of unicode, long strings, wide tags arrays, no duration,
dates before 1970.  The refusal machinery (probing the ``Null`` twin by halves, naming the
column) works on lines as on tuples."""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.ingest.aggregates import SketchMapping
from pipeline.core.ingest.batch import Accepted, BatchProcessor, RawMessage
from pipeline.core.ingest.decode import Decoder, Limits
from pipeline.core.ingest.dedup import SeenIds
from pipeline.core.ingest.queries import json_insert
from pipeline.core.ingest.rows import EVENT_COLUMNS, EVENT_JSON, event_lines
from pipeline.core.timestamps import to_epoch_ms
from pipeline.events import NormalizedEvent
from pipeline.sinks.clickhouse import ClickHouseStore
from tests.unit.helpers import DAY0_MS, iso, make_event

pytestmark = pytest.mark.integration

NOW = DAY0_MS + 2 * 86_400_000
#: the decoder's time floor lowered to 1900, so that events before 1970 reach the sinks
LIMITS = Limits(min_event_ms=to_epoch_ms("1900-01-01T00:00:00Z"), max_depth=200, max_array_elements=100_000)
#: floats that ClickHouse's fast parser reads one ulp off (``precise_float_parsing = 0``):
#: within the duration's range, so the setting is what keeps them exact
MISPARSED = [7.654927133881691e-231, 4.0e-320, 5e-324, 2.2250738585072014e-308]


#: an accepted event as the writer gets it, with the normalized event it was made from
Pair = tuple[Accepted, NormalizedEvent]


def reference_rows(accepted: Sequence[Pair]) -> list[tuple[object, ...]]:
    """The Native row tuples the writer built before (``event_rows``), kept as the reference."""
    empty = b"{}"

    def dumps(obj: Any) -> bytes:
        return orjson.dumps(obj) if obj else empty

    return [
        (
            e.id, e.event_time_ms, e.timestamp_raw, e.event_type, e.entity_type.value, e.entity_id, e.agent,
            e.task_type, e.outcome, e.duration_ms, md.get("triggered_by") or "", md.get("correlation_id") or "",
            md.get("session_id") or "", md.get("tags") or [], dumps(e.previous_state), dumps(e.current_state),
            dumps(md), dumps(e.metrics), dumps(e.extra), e.ingested_ms, a.topic, a.partition, a.offset, a.index, a.log,
        )
        for a, e in accepted
        for md in (e.metadata,)
    ]  # fmt: skip


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseStore]:
    s = ClickHouseStore(f"chdb://{tmp_path_factory.mktemp('lines') / 'ch'}", "taskpulse")
    s.migrate()
    s.command("CREATE TABLE taskpulse.events_ref AS taskpulse.events")
    for table in ("events", "events_ref"):  # the events are from 1900 to 2025: none may expire
        s.command(f"ALTER TABLE taskpulse.{table} REMOVE TTL")
    yield s
    s.close()


def _accepted(docs: list[Any], topic: str = "taskpulse.events.task", log: str = "cluster-1/topic-9") -> list[Pair]:
    """The processor's accepted events of ``docs``, each with its normalized event (decoded again)."""
    bp = BatchProcessor(Decoder(limits=LIMITS), SeenIds(100_000), SketchMapping())
    bp.use_logs({topic: log}, {})
    msgs = [RawMessage(topic, i % 3, 1000 + i, d if isinstance(d, bytes) else json.dumps(d).encode())
            for i, d in enumerate(docs)]  # fmt: skip
    out = bp.process(msgs, NOW)
    raw = {(m.partition, m.offset): m.value for m in msgs}
    pairs = []
    for a in (a for seg in out.parts for a in seg.events):
        e = Decoder(limits=LIMITS).decode(topic, a.partition, a.offset, raw[a.partition, a.offset], NOW)[a.index]
        assert isinstance(e, NormalizedEvent) and e.id == a.id
        pairs.append((a, e))
    return pairs


def _lines(pairs: Sequence[Pair]) -> list[bytes]:
    return event_lines([a for a, _ in pairs])


#: every column, floats as their bits and strings as their bytes (hex), so that equality is exact
_EXACT = ", ".join(
    "if(isNull(duration_ms), 'NULL', hex(reinterpretAsString(assumeNotNull(duration_ms))))" if c == "duration_ms"
    else f"arrayMap(x -> hex(x), {c})" if c == "tags"
    else f"toUnixTimestamp64Milli({c})" if c in ("event_time", "ingested_at")
    else f"hex({c})" if c not in ("src_partition", "src_offset", "src_index")
    else c
    for c in EVENT_COLUMNS
)  # fmt: skip


def _both_ways(store: ClickHouseStore, accepted: list[Pair]) -> list[tuple[Any, ...]]:
    """Insert ``accepted`` as lines into ``events`` and as the reference tuples into
    ``events_ref``; return the rows of ``events`` after checking both tables hold the same."""
    store.command("TRUNCATE TABLE taskpulse.events")
    store.command("TRUNCATE TABLE taskpulse.events_ref")
    store.insert("events", _lines(accepted), EVENT_JSON)
    store.insert("events_ref", reference_rows(accepted), EVENT_COLUMNS)
    order = " ORDER BY src_partition, src_offset, src_index"
    got = store.rows(f"SELECT {_EXACT} FROM taskpulse.events{order}")
    want = store.rows(f"SELECT {_EXACT} FROM taskpulse.events_ref{order}")
    assert len(got) == len(accepted)
    for g, w in zip(got, want, strict=True):
        assert g == w, [(c, x, y) for c, x, y in zip(EVENT_COLUMNS, g, w, strict=False) if x != y]
    return store.rows(f"SELECT * FROM taskpulse.events{order}")


def _nested(depth: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"leaf": [1, {"x": "y"}]}
    for i in range(depth):
        doc = {f"n{i}": doc, "s": "}\"{" * (i % 3)}
    return doc


NASTY = "\x00\x01\x1f\x7f\"\\/\b\f\n\r\t}{][,:\u2028\u2029\ufeff\uffff\U0001f600é̈ß中文עברית\u200d"


def _hostile() -> list[Any]:
    base = DAY0_MS
    docs: list[Any] = []
    for i, dur in enumerate([None, 0, 0.0, -0.0, 0.1 + 0.2, 1e12, 123456.789, 1, *MISPARSED]):
        docs.append(make_event(f"dur-{i}", "task.completed", iso(base + i), duration_ms=dur))
    docs += [
        make_event("huge", "task.completed", iso(base), state={
            "agent_id": "a", "i63": 2**63 - 1, "neg": -(2**63), "u64": 2**64 - 1, "f": 1.7976931348623157e308,
            "tiny": 5e-324, "e": 1e-7, "list": [2**64 - 1, -1.5e300, True, None],
        }),
        make_event("deep", "task.completed", iso(base), state={"agent_id": "a", "deep": _nested(40)}),
        make_event(f"id-{NASTY}", "task.completed", iso(base), entity_id=f"t-{NASTY}",
                   state={"agent_id": f"agent {NASTY}"[:100], "task_type": NASTY[:20], NASTY: NASTY}),
        make_event("long", "task.completed", iso(base), state={"agent_id": "a", "text": "x" * 200_000 + NASTY}),
        make_event("tags", "task.completed", iso(base), metadata={
            "triggered_by": NASTY, "correlation_id": "c-" + NASTY, "session_id": "", "tags": [NASTY, "", "t" * 5000]
            + [f"tag-{k}" for k in range(3000)], "other": {"tags": ["not these"]},
        }),
        make_event("no-metadata", "task.completed", iso(base), metadata={}),
        make_event("null-ids", "task.completed", iso(base), metadata={"triggered_by": None, "correlation_id": None}),
        make_event("1969", "task.completed", "1969-07-20T20:17:40Z", state={"agent_id": "a", "when": "1969-07-20",
                   "epoch": -14182940, "old": "1901-12-13T20:45:52Z"}),  # fmt: skip
        make_event("1900", "agent.heartbeat", "1900-01-01T00:00:00.001Z"),
        make_event("epoch-ns", "system.metric", 1_762_128_000_123_456_789),
        make_event("extra", "user.request", iso(base), src_topic="x", src_offset=-1, metadata_extra={"a": NASTY},
                   event_time_ms=5, ingested_ms="no"),  # fmt: skip
        make_event("prev", "task.status_changed", iso(base), previous_state={"status": "QUEUED", "n": [NASTY] * 3}),
    ]
    # an array message whose elements share one Kafka offset (index differs)
    docs.append(orjson.dumps([make_event(f"arr-{k}", "agent.heartbeat", iso(base + k)) for k in range(5)]))
    return docs


def test_hostile_events_are_stored_exactly_as_the_row_tuples_stored_them(store: ClickHouseStore) -> None:
    accepted = _accepted(_hostile())
    ids = {a.id for a, _ in accepted}
    assert {"huge", "deep", "long", "tags", "1969", "1900", "extra", "arr-4", f"id-{NASTY}"} <= ids
    assert len(ids) == len(_hostile()) - 1 + 5
    rows = _both_ways(store, accepted)
    by_id = {r[0]: dict(zip(EVENT_COLUMNS, r, strict=True)) for r in rows}
    assert by_id["1969"]["event_time"].replace(tzinfo=UTC) == datetime(1969, 7, 20, 20, 17, 40, tzinfo=UTC)
    assert by_id["tags"]["tags"][:2] == [NASTY, ""] and len(by_id["tags"]["tags"]) == 3003
    assert by_id["tags"]["triggered_by"] == NASTY
    assert by_id["dur-0"]["duration_ms"] is None
    assert [by_id[f"dur-{8 + k}"]["duration_ms"] for k in range(len(MISPARSED))] == MISPARSED
    assert orjson.loads(by_id["huge"]["current_state"])["u64"] == 2**64 - 1
    assert json.loads(by_id["extra"]["extra"])["src_topic"] == "x"  # kept inside extra, not a source column
    assert by_id["extra"]["src_topic"] == "taskpulse.events.task" and by_id["extra"]["src_log"] == "cluster-1/topic-9"


def test_an_event_without_its_payload_is_serialized_again(store: ClickHouseStore) -> None:
    accepted = _accepted([make_event("a", duration_ms=1.5), make_event("b")])
    bare = [(Accepted.of(e, a.topic, a.partition, a.offset, a.index, b"", a.log), e) for a, e in accepted]
    assert [a for a, _ in bare] == [a for a, _ in accepted]
    _both_ways(store, bare)


_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
    max_leaves=20,
)  # fmt: skip


@st.composite
def _events(draw: st.DrawFn) -> list[Any]:
    out = []
    for k in range(draw(st.integers(1, 8))):
        ts = draw(st.integers(to_epoch_ms("1900-01-01T00:00:00Z"), NOW))
        state = {"agent_id": draw(_TEXT.filter(bool)), **draw(st.dictionaries(_TEXT, _JSON, max_size=4))}
        md = {"tags": draw(st.lists(_TEXT, max_size=5)), **draw(st.dictionaries(_TEXT, _JSON, max_size=2))}
        for key in ("triggered_by", "correlation_id", "session_id"):
            md[key] = draw(st.none() | _TEXT)
        dur = draw(st.none() | st.floats(0, 1e12) | st.sampled_from(MISPARSED))
        doc = make_event(f"h{k}-{draw(_TEXT)}", "task.completed", iso(ts), state=state, duration_ms=dur, metadata=md,
                         previous_state=draw(st.dictionaries(_TEXT, _JSON, max_size=3)))  # fmt: skip
        doc["metrics"]["resource_usage"] = draw(st.dictionaries(_TEXT, _JSON, max_size=3))
        out.append(doc)
    return out


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_events())
def test_any_accepted_event_is_stored_exactly_as_the_row_tuples_stored_it(store: ClickHouseStore, docs: list[Any]) -> None:  # noqa: E501
    accepted = _accepted(docs)
    _both_ways(store, accepted)


# --------------------------------------------------------------------------- refusals


def test_refused_lines_are_found_by_halves_and_named_by_column(store: ClickHouseStore) -> None:
    s = ClickHouseStore(store.url, "refusals")  # the same engine (one per process), a database of its own
    s.migrate()
    s.command("ALTER TABLE refusals.events ADD CONSTRAINT no_poison CHECK entity_id != 'poison'")
    s.migrate()  # the Null twins follow their table, constraints included
    s.command("ALTER TABLE refusals.events REMOVE TTL")  # the events are a year old: no merge may drop them
    docs = [make_event(f"e{i}", entity_id="poison" if i in (3, 17) else f"t{i}") for i in range(30)]
    lines = _lines(_accepted(docs))
    with pytest.raises(Exception, match="no_poison"):
        s.insert("events", lines, EVENT_JSON)
    refused = s.refused_rows("events", lines, EVENT_JSON)
    assert [i for i, _ in refused] == [3, 17]
    assert [e.column for _, e in refused] == ["entity_id", "entity_id"]
    assert all("_probe_" not in str(e) and "no_poison" in str(e) for _, e in refused)
    assert s.rows("SELECT count() FROM refusals.events") == [(0,)]  # probing wrote nothing
    s.insert("events", [ln for i, ln in enumerate(lines) if i not in (3, 17)], EVENT_JSON)
    assert s.rows("SELECT count() FROM refusals.events") == [(28,)]
    s.close()
    assert store.rows("SELECT 1") == [(1,)]


def test_a_server_gets_the_same_select_over_the_request_body(monkeypatch: pytest.MonkeyPatch) -> None:
    """Over HTTP the lines are the request's body (``input()``); chDB reads them from a file.
    Everything but the source clause is the same statement."""
    calls: list[tuple[str, Any]] = []

    class Client:
        def command(self, sql: str, data: Any = None, **kwargs: Any) -> None:
            calls.append((sql, data))

    import clickhouse_connect

    monkeypatch.setattr(clickhouse_connect, "get_client", lambda **kwargs: Client())
    s = ClickHouseStore("http://clickhouse:8123", "taskpulse")
    lines = _lines(_accepted([make_event("a"), make_event("b")]))
    s.insert("events", lines, EVENT_JSON)
    [(sql, data)] = calls
    assert data == b"\n".join(lines)
    assert sql == json_insert("taskpulse", "events", EVENT_JSON)
    over_file = json_insert("taskpulse", "events", EVENT_JSON, "/tmp/x.jsonl")
    head, _, source = sql.partition(" FROM input(")
    assert over_file.startswith(head + " FROM file('/tmp/x.jsonl', 'JSONEachRow', ")
    assert source == f"'{EVENT_JSON.structure}') FORMAT JSONEachRow"
