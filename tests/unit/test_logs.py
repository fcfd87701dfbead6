"""Log identities: watermarks apply only to the log they were written from."""

from __future__ import annotations

from pipeline.core.ingest.aggregates import SketchMapping
from pipeline.core.ingest.batch import BatchProcessor, RawMessage
from pipeline.core.ingest.decode import Decoder
from pipeline.core.ingest.dedup import SeenIds
from pipeline.core.ingest.logs import (
    LEGACY,
    has_topic_id,
    log_identity,
    parse_src_key,
    select_marks,
    src_key,
    went_back,
)
from tests.unit.helpers import DAY0_MS, TOPIC, dumps, make_event

NOW = DAY0_MS + 86_400_000
OLD, NEW = log_identity("tansu_cluster", "0001"), log_identity("tansu_cluster", "0002")


def test_identity_and_rollup_keys_round_trip() -> None:
    assert OLD == "tansu_cluster/0001" and has_topic_id(OLD)
    assert not has_topic_id(log_identity("kafka-1", "")) and not has_topic_id(LEGACY)
    key = src_key("taskpulse.events.task", 3, OLD)
    assert key == "taskpulse.events.task:3@tansu_cluster/0001"
    assert parse_src_key(key) == ("taskpulse.events.task", 3, OLD)
    assert parse_src_key("taskpulse.events.task:3") == ("taskpulse.events.task", 3, LEGACY)
    assert parse_src_key("t:0@c@x/y:1") == ("t", 0, "c@x/y:1")


def test_only_the_current_logs_watermarks_apply() -> None:
    stored = {
        "events": {("a", 0, OLD): 11_000, ("a", 0, NEW): 27, ("a", 1, LEGACY): 500, ("b", 0, OLD): 9},
        "dlq": {("a", 0, OLD): 10_990},
        "rollups": {},
    }
    assert select_marks(stored, {"a": NEW, "b": OLD}) == {
        "events": {("a", 0): 27, ("b", 0): 9},
        "dlq": {},
        "rollups": {},
    }
    # rows without an identity (older releases) never match, even the empty identity
    assert select_marks(stored, {"a": LEGACY}) == {"events": {}, "dlq": {}, "rollups": {}}


def test_went_back_names_partitions_whose_offsets_restart() -> None:
    last = {("a", 0): 500, ("a", 1): 10}
    assert went_back([("a", 0, 501), ("a", 1, 11), ("b", 0, 0)], last) == {}
    assert went_back([("a", 0, 3), ("a", 0, 1), ("a", 1, 11)], last) == {("a", 0): 1}


def _processor() -> BatchProcessor:
    return BatchProcessor(Decoder(), SeenIds(1000), SketchMapping())


def _msg(offset: int, event_id: str) -> RawMessage:
    return RawMessage(TOPIC, 0, offset, dumps(make_event(event_id)))


def test_a_new_log_at_the_same_offsets_is_not_skipped() -> None:
    bp = _processor()
    bp.use_logs({TOPIC: OLD}, {"events": {(TOPIC, 0): 100}, "rollups": {(TOPIC, 0): 100}, "dlq": {}})
    old = bp.process([_msg(5, "e-5")], NOW)
    assert old.events == [] and old.rollups == {}  # same log: already written
    bp.use_logs({TOPIC: NEW}, {"events": {}, "rollups": {}, "dlq": {}})
    out = bp.process([_msg(5, "e-new")], NOW)
    assert (out.accepted, len(out.events), out.offsets["rollups"]) == (1, 1, {(TOPIC, 0): 5})
    assert out.events[0].log == NEW and out.logs == {TOPIC: NEW}


def test_same_id_same_coordinates_in_another_log_is_a_duplicate() -> None:
    bp = _processor()
    bp.use_logs({TOPIC: OLD}, {})
    assert bp.process([_msg(5, "e-1")], NOW).accepted == 1
    assert bp.process([_msg(5, "e-1")], NOW).accepted == 1  # a replay in the same log
    bp.use_logs({TOPIC: NEW}, {})
    out = bp.process([_msg(5, "e-1")], NOW)  # re-sent to a fresh broker: counted once
    assert (out.accepted, out.duplicates) == (0, 1)


def test_a_batch_read_from_a_replaced_log_does_not_move_the_new_watermark() -> None:
    bp = _processor()
    bp.use_logs({TOPIC: OLD}, {})
    in_flight = bp.process([_msg(700, "e-700")], NOW)
    bp.use_logs({TOPIC: NEW}, {})  # a rebalance found the topic recreated meanwhile
    bp.committed(in_flight, "events")
    assert bp.watermarks["events"] == {}
    same = bp.process([_msg(3, "e-3")], NOW)
    bp.use_logs({TOPIC: NEW}, {"events": {(TOPIC, 0): 1}})  # unchanged logs: same object
    bp.committed(same, "events")
    assert bp.watermarks["events"] == {(TOPIC, 0): 3}
