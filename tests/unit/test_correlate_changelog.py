"""The correlation role writes its tables' changelog itself (one record batch per partition)
instead of Faust's per-key send: the same records as Faust's ``table[key] = value`` /
``table.pop(key, None)`` (topic, partition, key and value bytes, tombstones), the same table
contents, so Faust's recovery reads them unchanged."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import faust
from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.roles.correlate import stage_state

PARTS = [0, 1, 2, 3]
_keys = st.text(st.characters(codec="utf-8"), max_size=40)
# a slot: its serialized state, None (forgotten), or "x" (cannot be serialized)
_slots = st.dictionaries(_keys, st.one_of(st.binary(min_size=1, max_size=50), st.none(), st.just("x")), max_size=30)


def _faust_table() -> tuple[Any, list[tuple[int, bytes, bytes | None]]]:
    """A Faust table as the role declares it, recording the changelog messages Faust's
    producer would send (partition as its default partitioner picks it for ``use_partitioner``)."""
    app = faust.App("taskpulse-test", broker="kafka://localhost:1", store="memory://",
                    value_serializer="raw", key_serializer="raw")  # fmt: skip
    assert app.conf.producer_partitioner is None  # → aiokafka's DefaultPartitioner, like ours
    table: Any = app.Table("tasks", key_type=bytes, value_type=bytes, partitions=len(PARTS), use_partitioner=True)
    sent: list[tuple[int, bytes, bytes | None]] = []
    topic: Any = table.changelog_topic

    def send_changelog(partition: Any, key: Any, value: Any, key_serializer: Any = None, value_serializer: Any = None):  # type: ignore[no-untyped-def]  # noqa: E501
        assert partition is None
        k = topic.prepare_key(key, key_serializer or table.key_serializer, None, {})[0]
        v = (
            None
            if value is None
            else topic.prepare_value(value, value_serializer or table.value_serializer, None, {})[0]
        )
        sent.append((DefaultPartitioner()(k, PARTS, PARTS), k, v))
        return SimpleNamespace(message=SimpleNamespace(partition=0))

    table.send_changelog = send_changelog
    return table, sent


def _bytes(key: str, slot: Any) -> bytes | None:
    return None if slot == "x" else bytes(slot)


@settings(max_examples=200, deadline=None)
@given(_slots, _slots)
def test_the_records_and_contents_are_faust_s(first: dict[str, Any], second: dict[str, Any]) -> None:
    faust_table, faust_sent = _faust_table()
    ours, _ = _faust_table()
    our_sent: list[tuple[int, bytes, bytes | None]] = []
    for slots in (first, second):
        for key, slot in slots.items():  # the role's former path, through Faust
            if slot is None:
                faust_table.pop(key.encode(), None)
            elif (value := _bytes(key, slot)) is not None:
                faust_table[key.encode()] = value
        our_sent += stage_state(ours.data, slots, _bytes, lambda k: DefaultPartitioner()(k, PARTS, PARTS))
    assert our_sent == faust_sent
    assert dict(ours.data) == dict(faust_table.data)
    assert ours.changelog_topic_name == "taskpulse-test-tasks-changelog"


def test_after_a_rebalance_only_the_owned_partitions_keys_are_restored() -> None:
    """A worker that lost partitions in a rebalance (or holds standby replicas) restores only
    the tasks and agents of the partitions it owns: another worker finalizes, abandons them."""
    from aiokafka.structs import TopicPartition

    from pipeline.roles.correlate import _Role
    from pipeline.sinks.kafka import OutputProducer
    from pipeline.topics import NORMALIZED

    producer = OutputProducer("127.0.0.1:1")  # only its partitioner is used: nothing connects
    parts = list(range(4))
    keys = [f"task-{i}".encode() for i in range(200)]
    role = _Role.__new__(_Role)
    role.producer = producer
    mine = {1, 3}
    assignment = {TopicPartition(NORMALIZED, p) for p in mine} | {TopicPartition("other", 0)}
    consumer = SimpleNamespace(assignment=lambda: assignment)
    role.p = SimpleNamespace(settings=SimpleNamespace(partitions=4), app=SimpleNamespace(consumer=consumer))
    owned = role._owned()
    kept = {k for k in keys if owned(k)}
    assert kept == {k for k in keys if producer.partition_of(k, parts) in mine} and 0 < len(kept) < len(keys)
    role.p.app = SimpleNamespace()  # no consumer yet: every key is taken as owned
    assert all(role._owned()(k) for k in keys)
