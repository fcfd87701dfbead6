"""Attack on the correlation role across a fresh broker on the same data directory (what a
second ``taskpulse up`` does): the Faust tables' changelogs are gone, ClickHouse is not.
An agent's status changes in the second run must be emitted and written to ``events``
(their ids once restarted at the first run's and were dropped as duplicates)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from pipeline.embedded import EmbeddedBroker
from pipeline.sdk import make_event
from pipeline.sinks.kafka import ensure_topics
from pipeline.topics import ALL_TOPICS
from tests.integration.conftest import publish, wait_for

pytestmark = pytest.mark.integration

ROLES = {"TASKPULSE_ROLES": "ingest,correlate"}


def _changes(worker) -> list[list[object]]:
    return worker.sql(
        "SELECT JSONExtractString(current_state, 'previous'), JSONExtractString(current_state, 'status') "
        "FROM taskpulse.events WHERE event_type = 'agent.status_changed' AND entity_id = 'agent-x' "
        "ORDER BY event_time"
    )


def test_agent_status_changes_after_a_fresh_broker_are_kept(make_worker, broker, tmp_path: Path):
    now = int(time.time() * 1000)
    publish(broker, [make_event("agent.online", "agent-x", {}, timestamp=now - 20_000),
                     make_event("agent.offline", "agent-x", {}, timestamp=now - 10_000)])  # fmt: skip
    worker = make_worker(**ROLES).start()
    wait_for(lambda: len(_changes(worker)) >= 2, 90, "the first run's two status changes")
    worker.stop()
    broker.stop()

    fresh = EmbeddedBroker(log_path=tmp_path / "tansu-2.log").start()
    try:
        asyncio.run(ensure_topics(fresh.bootstrap, ALL_TOPICS, 4, 3_600_000, 256 * 1024 * 1024))
        publish(fresh, [make_event("agent.online", "agent-x", {}, timestamp=int(time.time() * 1000) - 1000)])
        again = make_worker(TASKPULSE_KAFKA_URL=fresh.url, **ROLES).start()
        wait_for(lambda: again.scalar("SELECT count() FROM taskpulse.events WHERE event_type = 'agent.online'") == 2,
                 90, "the second run's agent.online")  # fmt: skip
        wait_for(lambda: len(_changes(again)) >= 3, 60, "the second run's status change")
        assert _changes(again)[-1][1] == "online"
    finally:
        fresh.stop()
