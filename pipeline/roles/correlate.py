"""The correlation role: normalized events → task lifecycle and agent availability.

A Faust agent reads ``taskpulse.events.normalized`` in micro-batches; ``Correlator`` (pure)
turns them into task and agent state.  State lives in two Faust tables (``tasks``,
``agents``: changelog-backed, recovered after a restart), keyed like the normalized topic
(by entity id, through the partitioner), so each worker holds the state of its partitions.

Per batch, in this order, before the batch is acked:

1. ClickHouse: changed ``tasks`` rows, new ``task_executions`` rows, changed ``agent_status``
   rows (ReplacingMergeTree with versions: a replay writes the same version again);
2. Kafka: lifecycle records to ``taskpulse.tasks.lifecycle`` and the events taskpulse emits
   (``task.abandoned``, ``agent.status_changed``) to the raw topics, with deterministic ids,
   so the ingest role's dedup drops a re-emission after a crash;
3. the Faust tables: their changelog records written by this role, one record batch per
   partition, and flushed (not through Faust's per-key send).

A timer runs the same step on a quiet stream: finalizing tasks after the reordering
window, abandoning silent tasks, taking silent agents offline.

One batch is in flight: what a batch writes is built (staged) when it is applied, as a
snapshot, and sent while the next batch is read and applied; batches (the timer's too) are
sent in order, each acked only once sent.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
import orjson

from pipeline.app import Pipeline
from pipeline.core.normalized import decode_normalized
from pipeline.core.tasks import queries
from pipeline.core.tasks.correlation import CorrelationConfig, Correlator, Output
from pipeline.core.tasks.lifecycle import HistoryEntry, compact
from pipeline.core.tasks.rows import (
    AGENT_COLUMNS,
    EXECUTION_COLUMNS,
    TASK_COLUMNS,
    agent_rows,
    execution_rows,
    task_rows,
)
from pipeline.core.tasks.state import AgentSlot, TaskSlot
from pipeline.events import NormalizedEvent, Rejected, Source
from pipeline.prices import load_prices
from pipeline.roles import runtime
from pipeline.settings import Settings
from pipeline.sinks.kafka import OutputProducer
from pipeline.sinks.privacy import ErasureList
from pipeline.sinks.writer import Refusals, SinkRetry, dead_letter, unwritable, write_rows
from pipeline.topics import LIFECYCLE, NORMALIZED, RAW_TOPICS

log = logging.getLogger(__name__)
_DROP_REASONS = ("history_dropped", "expired_tasks", "forgotten_agents", "evicted_tasks", "evicted_agents")


def config_from(settings: Settings) -> CorrelationConfig:
    return CorrelationConfig(
        reorder_window_s=settings.reorder_window_s,
        abandon_after_s=settings.abandon_after_s,
        abandon_after_by_type=dict(settings.abandon_after_by_type),
        agent_offline_after_s=settings.agent_offline_after_s,
        group_keys=tuple(k.strip() for k in settings.group_keys.split(",") if k.strip()),
        task_expire_after_s=settings.task_expire_after_s,
        agent_forget_after_s=settings.agent_forget_after_s,
        max_history=settings.task_history_max,
        memory_budget_bytes=settings.correlation_memory_mb * 1024 * 1024,
        prices=load_prices(settings.prices),
    )


def decode_events(value: bytes | None) -> list[NormalizedEvent]:
    """A normalized-topic message → its task and agent events; what cannot be read is logged."""
    decoded = decode_normalized(value, ("task", "agent"))
    for error in decoded.errors:
        log.error("skipping %s", error)
    return [e for _, e in decoded.events]


def stage_state(
    data: Any,
    slots: dict[str, Any],
    state_bytes: Callable[[str, Any], bytes | None],
    partition_of: Callable[[bytes], int],
) -> list[tuple[int, bytes, bytes | None]]:
    """Changed state slots into a table's ``data`` (``None``: forgotten, removed), and the
    changelog records ``(partition, key, value)`` that Faust's ``table[key] = value`` /
    ``table.pop(key, None)`` would have sent: a tombstone only for a key that was there; a
    slot that cannot be serialized (``state_bytes`` gives ``None``) is left as it was."""
    records: list[tuple[int, bytes, bytes | None]] = []
    for key, slot in slots.items():
        k = key.encode()
        if slot is None:
            if data.pop(k, None) is not None:
                records.append((partition_of(k), k, None))
        elif (value := state_bytes(key, slot)) is not None:
            data[k] = value
            records.append((partition_of(k), k, value))
    return records


@dataclass
class _Staged:
    """One batch's writes, built (``_Role.stage``) and not yet sent (``_Role.send``)."""

    #: (table, rows, columns) for ClickHouse, in the order they are written
    rows: list[tuple[str, list[tuple[Any, ...]], list[str]]] = field(default_factory=list)
    #: (topic, value, key) of lifecycle records and emitted events
    messages: list[tuple[str, bytes, bytes]] = field(default_factory=list)
    #: what could not be serialized, for the DLQ
    letters: list[Rejected] = field(default_factory=list)
    #: (changelog topic, records) of the tasks and agents tables
    state: list[tuple[str, list[tuple[int, bytes, bytes | None]]]] = field(default_factory=list)


class _Role:
    """The correlator, its tables and its sinks."""

    def __init__(self, p: Pipeline) -> None:
        self.p = p
        self.correlator = Correlator(config_from(p.settings))
        self.lock = asyncio.Lock()
        self.ready = False
        self.producer = OutputProducer(p.kafka_servers, client_kwargs=p.kafka_kwargs)
        app = p.app
        parts = p.settings.partitions
        self.tasks = app.Table(
            "tasks", key_type=bytes, value_type=bytes, partitions=parts, use_partitioner=True,
            help="task id → lifecycle state (history of distinct events)",
        )  # fmt: skip
        self.agents = app.Table(
            "agents", key_type=bytes, value_type=bytes, partitions=parts, use_partitioner=True,
            help="agent id → availability state",
        )  # fmt: skip
        self.written = {"tasks": 0, "task_executions": 0, "agent_status": 0, "lifecycle": 0, "emitted": 0}
        self.retry = SinkRetry(p.metrics)  # outages are waited out, like the ingest role's writes
        self.batches = 0
        self.exported: dict[str, int] = {}  # drop counters already added to /metrics
        self.unwritable = 0  # records refused for their content (dead-lettered)
        self.erasures = ErasureList(p.store, p.settings.erasure_refresh_s)
        self._changelog_parts: dict[str, list[int]] = {}  # changelog topic → its partitions
        self.checkpoint = runtime.Checkpoint()  # one batch sent while the next is computed

    async def prepare(self) -> None:
        """Once the tables are recovered: load their state into the correlator."""
        if not self.producer.started:
            await self.producer.start()
        if self.ready:
            return
        await self.checkpoint.wait()  # the tables hold what is in flight: sent before they are read
        wall = _wall_ms()
        owned = self._owned()
        tasks = {k.decode(): orjson.loads(v) for k, v in self.tasks.items() if v and owned(k)}
        agents = {k.decode(): orjson.loads(v) for k, v in self.agents.items() if v and owned(k)}
        self.correlator = Correlator(self.correlator.config)
        self.correlator.restore(tasks, agents, wall)
        log.warning("correlation state restored: %d tasks, %d agents", len(tasks), len(agents))
        await self._repair()
        self.ready = True

    def _owned(self) -> Callable[[bytes], bool]:
        """Whether a table key belongs to a partition this worker owns.  After a rebalance (and
        for standby replicas) the tables also hold keys of partitions another worker owns and
        acts on: restored here, this worker would abandon or finalize its peer's tasks.  Faust
        drops on revocation only the keys it read back at recovery, not those written since."""
        mine = self._my_partitions()
        if mine is None:
            return lambda key: True
        parts = list(range(self.p.settings.partitions))
        partition_of = self.producer.partition_of
        return lambda key: partition_of(key, parts) in mine

    async def _repair(self) -> None:
        """Cross-check the recovered state with ClickHouse: a task whose ``tasks`` row is newer
        than its recovered state (or open there and missing here) gets its history back from
        the ``events`` table.  Guards against a changelog whose tail was not recovered."""
        store, db, c = self.p.store, self.p.settings.clickhouse_database, self.correlator
        owned = self._owned()
        await self._repair_agents(owned)
        open_ids = [k for k, s in c.tasks.items() if s.closed_wall_ms is None]
        known: dict[str, int] = {}
        for i in range(0, len(open_ids), 5000):
            ids = open_ids[i : i + 5000]
            rows = await asyncio.to_thread(store.rows, *queries.task_versions(db, ids))
            known.update({str(t): int(v) for t, v in rows})
        unfinished = await asyncio.to_thread(store.rows, *queries.unfinished_tasks(db, c.config.task_expire_after_s))
        for t, v in unfinished:
            known.setdefault(str(t), int(v))
        stale = {
            t: v for t, v in known.items()
            if owned(t.encode()) and (t not in c.tasks or c.tasks[t].version < v)
        }  # fmt: skip
        if not stale:
            return
        log.warning("%d tasks' state was behind ClickHouse after recovery; reading their events back", len(stale))
        ids = list(stale)
        wall = _wall_ms()
        for i in range(0, len(ids), 2000):
            chunk = ids[i : i + 2000]
            rows = await asyncio.to_thread(store.rows, *queries.task_events(db, chunk))
            history: dict[str, list[HistoryEntry]] = {}
            for task_id, eid, et, t, state, md, metrics in rows:
                history.setdefault(task_id, []).append(compact(
                    eid, et, int(t), orjson.loads(state), orjson.loads(md), c.config.group_keys, orjson.loads(metrics)
                ))  # fmt: skip
            for task_id in chunk:
                await self.write(c.repair(task_id, history.get(task_id, []), stale[task_id], wall))

    async def _repair_agents(self, owned: Callable[[bytes], bool]) -> None:
        """Agents whose ``agent_status`` row is newer than the recovered state (or missing from
        it: a fresh embedded broker starts with an empty changelog) continue from that row:
        their next row gets a higher version, their busy / online time goes on."""
        store, db, c = self.p.store, self.p.settings.clickhouse_database, self.correlator
        rows = await asyncio.to_thread(store.rows, *queries.recent_agents(db, c.config.agent_forget_after_s))
        repaired_slots: dict[str, Any] = {}
        for agent, version, status, since, seen, online_since, active, cpu, mem, busy_s, online_s in rows:
            if not owned(str(agent).encode()):
                continue
            known = c.agents.get(agent)
            if known is not None and known.version >= version:
                continue
            c.repair_agent(str(agent), AgentSlot(
                version=int(version), status=str(status), since_ms=int(since), seen_ms=int(seen),
                online_since_ms=None if online_since is None else int(online_since), active_tasks=int(active),
                cpu_percent=cpu, memory_mb=mem,
                busy_ms=round(float(busy_s) * 1000), online_ms=round(float(online_s) * 1000),
            ))  # fmt: skip
            repaired_slots[str(agent)] = c.agents[agent]
        await self.send(_Staged(state=[await self._stage_state(self.agents, "agents", repaired_slots)]))
        repaired = len(repaired_slots)
        if repaired:
            log.warning("%d agents' state was behind ClickHouse after recovery; continued from agent_status", repaired)

    def _my_partitions(self) -> set[int] | None:
        try:
            return {tp.partition for tp in self.p.app.consumer.assignment() if tp.topic == NORMALIZED}
        except Exception:  # noqa: BLE001 - no consumer (yet): treat every task as ours
            return None

    async def write(self, out: Output) -> None:
        """Steps 1–3 of the module docstring for ``out``, after what is in flight: ``stage``
        then ``send``."""
        await self.checkpoint.wait()
        await self.send_or_exit(await self.stage(out))

    async def send_or_exit(self, staged: _Staged) -> None:
        """``send``; any error no sink retry handles exits (``runtime.or_exit``): raised in the
        checkpoint's task it would crash the agent, which Faust restarts reading on, this
        batch and the one staged after it unwritten and unacked."""
        await runtime.or_exit(lambda: self.send(staged), "a correlation batch")

    async def stage(self, out: Output) -> _Staged:
        """Everything ``out`` writes, built now: rows, records and state bytes are a snapshot,
        so the correlator may go on to the next batch while this one is sent (the state slots
        change under it).  The in-memory tables take the new state here."""
        now = datetime.now(UTC)
        await self.erasures.refresh()
        keep_rows = self.erasures.keep_rows  # privacy hook: never write an erased person back
        staged = _Staged(rows=[
            ("tasks", keep_rows(task_rows(out.task_rows.values(), now)), TASK_COLUMNS),
            ("task_executions", keep_rows(execution_rows(out.executions, now)), EXECUTION_COLUMNS),
            ("agent_status", keep_rows(
                agent_rows(out.agent_rows, now, self.correlator.stream_ms(_wall_ms()))), AGENT_COLUMNS),
        ])  # fmt: skip
        if out.executions or out.emitted:
            messages, staged.letters = self._serialize(out)
            staged.messages = self.erasures.keep_messages(messages)
        staged.state = [await self._stage_state(self.tasks, "tasks", out.dirty_tasks),
                        await self._stage_state(self.agents, "agents", out.dirty_agents)]  # fmt: skip
        self._export_state()
        return staged

    async def send(self, staged: _Staged) -> None:
        """Write what ``stage`` built, in the order of the module docstring.  ClickHouse
        outages and structural errors are waited out; a row or record refused for its content
        is dead-lettered (``unwritable``) and the rest is written: one bad value never stops
        the role."""
        store = self.p.store
        for table, rows, columns in staged.rows:
            if rows:
                found = await write_rows(self.retry, store, table, rows, columns, self._refused(table, rows, columns))
                self.written[table] += len(rows) - len(found)
        await self._dead_letter(staged.letters)
        if messages := staged.messages:
            await self.retry("kafka", lambda: self._publish(messages))
            self.written["lifecycle"] += sum(1 for topic, _, _ in messages if topic == LIFECYCLE)
            self.written["emitted"] += sum(1 for topic, _, _ in messages if topic != LIFECYCLE)
        for topic, records in staged.state:
            if records:
                await self.retry("kafka", lambda: self._send_state(topic, records))  # noqa: B023 - awaited here

    async def _stage_state(
        self, faust_table: Any, name: str, slots: dict[str, Any]
    ) -> tuple[str, list[tuple[int, bytes, bytes | None]]]:
        """Step 3, staged: changed state slots (``None``: forgotten) into a Faust table, and the
        changelog records to write for them in one record batch per partition, flushed
        before the batch is acked, instead of Faust's per-key send: the same topic, partition
        (Kafka's default partitioner on the key, as Faust's producer picks it for
        ``use_partitioner``), key and value bytes (raw serializers), a ``None`` value
        deleting, so Faust's recovery reads them unchanged."""
        topic = faust_table.changelog_topic_name
        if not slots:
            return topic, []
        parts = self._changelog_parts.get(topic)
        if parts is None:
            parts = await self.retry("kafka", lambda: self.producer.partitions_for(topic))
            self._changelog_parts[topic] = parts
        records = stage_state(
            faust_table.data, slots, lambda key, slot: self._state_bytes(name, key, slot),
            lambda k: self.producer.partition_of(k, parts),
        )  # fmt: skip
        return topic, records

    async def _send_state(self, topic: str, records: list[tuple[int, bytes, bytes | None]]) -> None:
        await self.producer.send_records(topic, records)
        await self.producer.flush()

    def _export_state(self) -> None:
        """State size and what was dropped to keep it bounded, on /metrics."""
        c, m = self.correlator, self.p.metrics
        m.state_bytes.labels("correlate").set(c.state_bytes)
        m.state_entries.labels("correlate", "tasks").set(len(c.tasks))
        m.state_entries.labels("correlate", "agents").set(len(c.agents))
        for reason in _DROP_REASONS:
            delta = c.counters[reason] - self.exported.get(reason, 0)
            if delta > 0:
                m.state_dropped.labels("correlate", reason).inc(delta)
                self.exported[reason] = c.counters[reason]

    def _refused(
        self, table: str, rows: list[tuple[Any, ...]], columns: list[str]
    ) -> Callable[[Refusals], Awaitable[None]]:
        async def dead_letter_rows(found: Refusals) -> None:
            await self._dead_letter(
                [unwritable(table, exc, _SOURCE, _row_json(columns, rows[i]), str(rows[i][0])) for i, exc in found]
            )

        return dead_letter_rows

    def _serialize(self, out: Output) -> tuple[list[tuple[str, bytes, bytes]], list[Rejected]]:
        """(topic, value, key) of every lifecycle record and emitted event; those that cannot
        be serialized become dead letters instead."""
        messages: list[tuple[str, bytes, bytes]] = []
        letters: list[Rejected] = []
        for rec in out.executions:
            try:
                messages.append((LIFECYCLE, rec.model_dump_json().encode(), rec.task_id.encode()))
            except (ValueError, TypeError, UnicodeError) as exc:
                original = repr(rec).encode("utf-8", "replace")[:100_000]
                letters.append(unwritable(f"topic {LIFECYCLE}", exc, _SOURCE, original, rec.task_id))
        for ev in out.emitted:
            try:
                messages.append((RAW_TOPICS[ev["entity_type"]], orjson.dumps(ev), str(ev["entity_id"]).encode()))
            except (ValueError, TypeError, KeyError, UnicodeError) as exc:
                original = repr(ev).encode("utf-8", "replace")[:100_000]
                letters.append(unwritable("topic raw", exc, _SOURCE, original, str(ev.get("id", ""))))
        return messages, letters

    def _state_bytes(self, table: str, key: str, slot: TaskSlot | AgentSlot) -> bytes | None:
        """A state slot for its Faust table; one that cannot be serialized stays in memory only."""
        try:
            return slot.to_bytes()  # held by the table: right-sized
        except (TypeError, ValueError) as exc:
            self.unwritable += 1
            log.error("correlation state of %s %r cannot be serialized (%s); kept in memory only", table, key, exc)
            return None

    async def _dead_letter(self, letters: list[Rejected]) -> None:
        if letters:
            self.unwritable += len(letters)
            await dead_letter(self.retry, self.p.store, self.producer, self.p.metrics, letters)

    async def _publish(self, messages: list[tuple[str, bytes, bytes]]) -> None:
        pr = self.producer
        for topic, value, key in messages:
            await pr.send(topic, value, key=key)
        await pr.flush()

    async def status(self) -> dict[str, Any]:
        c = self.correlator
        open_tasks = sum(1 for s in c.tasks.values() if s.closed_wall_ms is None)
        by_status: dict[str, int] = {}
        for a in c.agents.values():
            by_status[a.status] = by_status.get(a.status, 0) + 1
        return {
            "ready": self.ready,
            "tasks_in_memory": len(c.tasks),
            "tasks_open": open_tasks,
            "agents": by_status,
            "stream_lag_s": round((_wall_ms() - c.stream_ms(_wall_ms())) / 1000, 1),
            "state_bytes_estimated": c.state_bytes,
            "memory_budget_bytes": c.config.memory_budget_bytes,
            **c.counters,
            "rows_written": dict(self.written),
            "unwritable": self.unwritable,
            "last_sink_error": self.retry.last_error,
        }


#: Where a correlation record comes from: state built from the normalized topic, not one message.
_SOURCE = Source(topic=NORMALIZED, partition=0, offset=-1)


def _row_json(columns: list[str], row: tuple[Any, ...]) -> bytes:
    """A refused row as JSON (its DLQ ``original``)."""
    doc = dict(zip(columns, row, strict=False))
    try:
        return orjson.dumps(doc, default=str)
    except (TypeError, ValueError):
        return repr(doc).encode("utf-8", "replace")


def _wall_ms() -> int:
    return int(time.time() * 1000)


def register(p: Pipeline) -> None:
    role = _Role(p)
    app = p.app
    settings = p.settings
    source = app.topic(NORMALIZED, value_type=bytes, key_type=bytes)

    @app.on_partitions_assigned.connect  # type: ignore[misc,arg-type]
    async def _on_assigned(sender: Any, assigned: Any, **kwargs: Any) -> None:
        role.ready = False  # reload from the (re-)recovered tables

    async def correlate(stream: faust.StreamT) -> None:  # type: ignore[name-defined]
        try:
            # A normalized message holds up to 64 KiB of events (about 150): a batch of 128
            # messages is ~20,000 events decoded at once, not the 500 × 64 KiB of batch_max.
            async for events in stream.noack_take(min(settings.batch_max, 128), settings.batch_within_s):  # type: ignore[attr-defined]  # noqa: E501
                batch: list[NormalizedEvent] = []
                for e in events:
                    batch.extend(decode_events(e.message.value))
                async with role.lock:
                    await role.prepare()
                    staged = await role.stage(role.correlator.apply(batch, _wall_ms()))
                    role.batches += 1
                    # sent while the next batch is read and applied; acked only once sent
                    ack = runtime.faust_acker(stream, events, p.last_offsets)
                    await role.checkpoint.commit(partial(role.send_or_exit, staged), ack)
        finally:
            role.checkpoint.cancel()
            await role.producer.stop()

    app.agent(source, name="taskpulse.correlate")(correlate)

    @app.timer(interval=0.5)  # type: ignore[misc]
    async def correlate_tick() -> None:
        if role.lock.locked():
            return
        if not role.ready and (app.in_recovery or not app.tables.recovery.completed.is_set()):  # type: ignore[attr-defined]
            return
        async with role.lock:
            await role.prepare()
            out = role.correlator.tick(_wall_ms())
            if out:
                staged = await role.stage(out)
                await role.checkpoint.commit(partial(role.send_or_exit, staged))

    p.status_sections["correlate"] = role.status
    p.lag_topics.add(NORMALIZED)
