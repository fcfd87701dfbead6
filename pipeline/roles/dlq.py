"""DLQ operations for operators: list and show entries, and replay them, publishing each
original again to the topic it came from once the emitter or the configuration is fixed.
Used by the worker's API (``/api/dlq``, ``/api/dlq/replay``: role ``operator``) and by the
CLI directly when no worker runs.  What can be replayed, the ids, queries and the report:
``pipeline.core.ingest.replay``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.core.ingest.queries import entries_query, outcome_query, replays_query
from pipeline.core.ingest.replay import (
    REPLAY_COLUMNS,
    Entry,
    Filters,
    Report,
    entry_hex,
    judge_outcome,
    message_key,
    refusal,
)
from pipeline.settings import Settings
from pipeline.sinks.clickhouse import ClickHouseStore
from pipeline.sinks.kafka import group_offsets
from pipeline.topics import RAW_TOPICS, role_consumers

log = logging.getLogger(__name__)

#: Replay records written per INSERT (a crash loses at most this many; dedup by id covers them).
_RECORD_EVERY = 500


def entries(store: ClickHouseStore, f: Filters) -> list[Entry]:
    """The DLQ entries that match ``f`` (blocking)."""
    return [Entry.from_row(r) for r in store.rows(*entries_query(store.database, f))]


def replayed(store: ClickHouseStore, ids: list[int]) -> dict[int, tuple[str, int, int, str]]:
    """Entry id → (topic, partition, offset, replayed_at) of the entries already replayed."""
    rows = store.rows(*replays_query(store.database, ids))
    return {int(i): (str(t), int(p), int(o), str(at)) for i, t, p, o, at in rows}


def listing(store: ClickHouseStore, f: Filters) -> list[dict[str, Any]]:
    """The entries for ``dlq list`` / ``dlq show``, each with whether it can be replayed."""
    found = entries(store, f)
    done = replayed(store, [e.entry_id for e in found])
    out = []
    for e in found:
        row = e.full() if f.entry_id is not None else e.summary()
        why = refusal(e, RAW_TOPICS.values())
        if e.entry_id in done:
            t, p, o, at = done[e.entry_id]
            row["replay"] = f"replayed {at} to {t}:{p}:{o}"
        else:
            row["replay"] = f"not replayable: {why}" if why else "replayable"
        out.append(row)
    return out


class Replayer:
    """One replay: select, publish, record, then watch what the pipeline made of it."""

    def __init__(self, settings: Settings, store: ClickHouseStore, kafka_kwargs: Mapping[str, Any]) -> None:
        self.settings = settings
        self.store = store
        self.kafka_kwargs = dict(kafka_kwargs)
        self.servers = ",".join(p.removeprefix("kafka://") for p in settings.kafka_url.split(",") if p)

    async def run(self, f: Filters, dry_run: bool, wait_s: float, by: str) -> Report:
        report = Report(dry_run=dry_run, filters=f.to_json())
        found = await asyncio.to_thread(entries, self.store, f)
        done = await asyncio.to_thread(replayed, self.store, [e.entry_id for e in found])
        report.selected = len(found)
        todo: list[Entry] = []
        for e in found:
            if e.entry_id in done:
                t, p, o, at = done[e.entry_id]
                report.already_replayed.append({"id": e.hex_id, "to": f"{t}:{p}:{o}", "at": at})
            elif why := refusal(e, RAW_TOPICS.values()):
                report.refused.append({"id": e.hex_id, "reason": e.reason, "why": why})
            else:
                todo.append(e)
        if dry_run:
            report.replayed = [{"id": e.hex_id, "to": e.src_topic, "reason": e.reason} for e in todo]
            return report
        started_ms = int(time.time() * 1000)
        published = await self._publish(todo, by, report)
        if wait_s > 0 and published:
            report.outcome = await self._watch(published, started_ms, wait_s)
        return report

    async def _publish(self, todo: list[Entry], by: str, report: Report) -> dict[str, tuple[str, int, int]]:
        """Send each original, then record it (every ``_RECORD_EVERY``, and at the end)."""
        published: dict[str, tuple[str, int, int]] = {}
        records: list[tuple[Any, ...]] = []
        producer = AIOKafkaProducer(
            bootstrap_servers=self.servers, acks="all",
            max_request_size=max(1 << 20, self.settings.max_message_bytes * 2), **self.kafka_kwargs,
        )  # fmt: skip
        await producer.start()
        try:
            for e in todo:
                md = await producer.send_and_wait(e.src_topic, e.original, key=message_key(e.original))
                published[e.hex_id] = (md.topic, md.partition, md.offset)
                to = f"{md.topic}:{md.partition}:{md.offset}"
                report.replayed.append({"id": e.hex_id, "reason": e.reason, "to": to})
                records.append((
                    e.entry_id, datetime.now(UTC), e.reason, e.event_id, e.src_topic, e.src_partition,
                    e.src_offset, e.src_index, e.src_log, md.topic, md.partition, md.offset, by,
                ))  # fmt: skip
                if len(records) >= _RECORD_EVERY:
                    await asyncio.to_thread(self.store.insert, "dlq_replays", records, REPLAY_COLUMNS)
                    records = []
        finally:
            if records:
                await asyncio.to_thread(self.store.insert, "dlq_replays", records, REPLAY_COLUMNS)
            await producer.stop()
        log.warning("DLQ replay by %s: %d entries published again", by, len(published))
        return published

    async def _watch(self, published: dict[str, tuple[str, int, int]], since_ms: int, wait_s: float) -> dict[str, Any]:
        """Poll ClickHouse (and the ingest group's commits) until every replayed message has
        an outcome or ``wait_s`` passed."""
        group, topics = role_consumers(self.settings.consumer_group, self.settings.ingest_engine)["ingest"]
        deadline = time.monotonic() + wait_s
        while True:
            query = outcome_query(self.store.database, published.values(), since_ms)
            rows = await asyncio.to_thread(self.store.rows, *query)
            try:
                _, commits = await group_offsets(self.servers, topics, [group], self.kafka_kwargs)
            except Exception:  # noqa: BLE001 - the commits only refine the report
                commits = {group: {}}
            outcome, undecided = judge_outcome(published, rows, commits[group])
            if not undecided or time.monotonic() >= deadline:
                outcome["undecided"] = sorted(undecided)
                return outcome
            await asyncio.sleep(0.5)


__all__ = ["Replayer", "entries", "entry_hex", "listing", "replayed"]
