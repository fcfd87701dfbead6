"""Bad input never stops the pipeline: every rejected message lands in the DLQ with a
machine-readable reason, and valid traffic around it is all written."""

from __future__ import annotations

import json
import time
from collections import Counter

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.demo import DemoFleet
from pipeline.topics import RAW_TASK, RAW_USER
from tests.integration.conftest import publish, publish_raw, wait_for

pytestmark = pytest.mark.integration


def _valid(n: int, seed: int) -> list[dict]:
    return DemoFleet(seed=seed).take(n, int(time.time() * 1000) - 3_600_000)


def _corpus(base: dict) -> list[tuple[bytes, str]]:
    """(message bytes, the reason code it must be rejected with)."""

    def mutate(**changes: object) -> bytes:
        doc = {**base, "id": f"bad-{len(changes)}-{sorted(changes)}"}
        for k, v in changes.items():
            if v is ...:
                doc.pop(k, None)
            else:
                doc[k] = v
        return orjson.dumps(doc)

    future = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86_400))
    return [
        (b"{not json", "invalid_json"),
        (b'{"id": "x", "timestamp": ', "invalid_json"),
        (b"\xff\xfe\x00garbage", "invalid_json"),
        (b"", "invalid_json"),
        (b"42", "schema_violation"),
        (b"[]", "schema_violation"),
        (mutate(id=...), "schema_violation"),
        (mutate(entity_type="robot"), "schema_violation"),
        (mutate(entity_type="agent"), "schema_violation"),
        (mutate(current_state={"percentage": 150}, event_type="task.progress"), "schema_violation"),
        (mutate(metrics={"duration_ms": -5}), "schema_violation"),
        (mutate(event_type="task.exploded"), "unknown_event_type"),
        (mutate(timestamp="yesterday-ish"), "bad_timestamp"),
        (mutate(timestamp=future), "bad_timestamp"),
        (mutate(timestamp=-1), "bad_timestamp"),
        (b'{"pad": "' + b"x" * (1024 * 1024 + 10) + b'"}', "oversized"),
    ]


def test_malformed_corpus_lands_in_dlq_with_reasons(make_worker, broker, engine):
    good = _valid(600, seed=1)
    base = next(e for e in good if e["event_type"] == "task.created")
    corpus = _corpus(base)
    worker = make_worker(engine=engine).start()
    publish(broker, good[:300])
    publish_raw(broker, [(RAW_TASK, raw) for raw, _ in corpus])
    # A batch message with a bad element in the middle: the good ones still count.
    mixed = b"[" + orjson.dumps(good[300]) + b',{"id": 1},' + orjson.dumps(good[301]) + b"]"
    publish_raw(broker, [(RAW_TASK, mixed)])
    publish(broker, good[302:])
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.events") >= 600, 90, "valid events")
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.dlq") >= len(corpus) + 1, 30, "DLQ")
    time.sleep(1)
    assert worker.scalar("SELECT count() FROM taskpulse.events") == 600
    rows = worker.sql(
        "SELECT reason, detail, original, src_topic, src_partition, src_offset, src_index "
        "FROM taskpulse.dlq"
    )
    assert len(rows) == len(corpus) + 1
    expected = Counter(reason for _, reason in corpus) + Counter({"schema_violation": 1})
    assert Counter(r[0] for r in rows) == expected
    details = " | ".join(r[1] for r in rows)
    for path in ("current_state.percentage", "metrics.duration_ms", "entity_type", "id"):
        assert path in details, f"no DLQ detail names {path!r}: {details}"
    assert all(r[3] == RAW_TASK for r in rows)
    batch_bad = [r for r in rows if r[6] == 1]
    assert len(batch_bad) == 1 and orjson.loads(batch_bad[0][2]) == {"id": 1}
    status = worker.status()
    assert sum(status["rejected"].values()) == len(corpus) + 1


def _json_values() -> st.SearchStrategy[object]:
    leaf = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
    return st.recursive(leaf, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4), max_leaves=12)  # noqa: E501


def test_fuzzed_input_never_stalls_the_pipeline(make_worker, broker):
    """Hypothesis generates the garbage; the pipeline must route all of it and keep going."""
    fuzz: list[bytes] = []
    base = _valid(1, seed=2)[0]

    @settings(max_examples=250, database=None, suppress_health_check=list(HealthCheck), deadline=None)
    @given(
        st.one_of(
            st.binary(max_size=200),
            _json_values().map(lambda v: json.dumps(v).encode()),
            st.dictionaries(st.sampled_from(sorted(base)), _json_values(), max_size=4).map(
                lambda over: json.dumps({**base, **over}).encode()
            ),
        )
    )
    def collect(raw: bytes) -> None:
        fuzz.append(raw)

    collect()
    worker = make_worker().start()
    publish_raw(broker, [(RAW_USER, raw) for raw in fuzz])
    after = _valid(400, seed=4)
    publish(broker, after)
    wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.events WHERE id IN (SELECT arrayJoin(" + repr([e["id"] for e in after]) + "))") >= 400, 90, "valid traffic after the fuzz")  # noqa: E501
    status = wait_for(lambda: (s := worker.status()) and s["messages_consumed"] >= len(fuzz) and s, 30, "fuzz consumed")  # noqa: E501
    # Everything consumed is accounted for: accepted, rejected (in the DLQ) or duplicate.
    dlq = worker.scalar("SELECT count() FROM taskpulse.dlq")
    accepted = worker.scalar("SELECT count() FROM taskpulse.events")
    assert dlq == sum(status["rejected"].values()) > 0
    assert accepted + dlq + status["duplicates"] == status["events_consumed"]
    assert worker.proc.poll() is None, "the worker died on fuzzed input"
