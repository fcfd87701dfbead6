"""One batch of raw messages → everything the sinks write for it.  Pure: the clock and the
watermarks come in as arguments.

Exactly-once into ClickHouse rests on two facts kept here:

* every sink (``events``, ``rollups``, ``dlq``) remembers, per source (topic, partition)
  *of the current log* (``pipeline.core.ingest.logs``), the highest message offset it has
  durably written (its *watermark*, stored inside the written rows themselves with the
  log's identity, so it is as durable and atomic as the data).  A message at or below a
  sink's watermark was already written there and is skipped for that sink when a crash
  makes Kafka deliver it again;
* duplicate deliveries of one event id are told from replays by the id's origin
  (``SeenIds``: log, topic, partition, offset, index): only the first delivery counts.

A batch is cut into *segments* at Kafka-message boundaries so that no segment asks one
INSERT for more than ``max_rows`` rows or ``max_bytes`` bytes; the writer writes the
segments one after the other, each with its own watermarks (the rollups marker included),
so a crash between two segments replays exactly the unwritten ones.  Only a single message
bigger than the limits makes a bigger segment (a message is never split).

Every accepted event is serialized here, once (the normalized topic's JSON): an event that
cannot be serialized, or whose JSON exceeds ``max_event_bytes``, becomes an ``unwritable``
rejection before it is counted anywhere, so events, rollups and topics stay consistent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field

import orjson

from pipeline.core import jsonbytes
from pipeline.core.ingest.aggregates import Dims, Measures, RollupKey, SketchMapping
from pipeline.core.ingest.decode import Decoder
from pipeline.core.ingest.dedup import SeenIds
from pipeline.core.ingest.dimcap import DimensionCap
from pipeline.core.ingest.logs import TP, Watermarks
from pipeline.core.ingest.windows import GRANULARITIES
from pipeline.events import NormalizedEvent, Rejected, RejectReason, Source

SINKS = ("events", "rollups", "dlq")
#: Largest normalized event JSON the writer publishes (Kafka's default message limit is 1 MB).
MAX_EVENT_BYTES = 900_000
#: Where a rollup row's first event came from: (topic, partition, offset, index, event id).
Origin = tuple[str, int, int, int, str]
#: Events decoded (and looked up in the dedup memory) at a time within a batch.
DECODE_CHUNK = 2048


@dataclass(slots=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    value: bytes | None


#: how every normalized event's JSON begins and ends (its first and last fields)
_PAYLOAD_HEAD = b'{"id":'
_PAYLOAD_TAIL = b',"ingested_ms":'


@dataclass(slots=True)
class Accepted:
    """An accepted event as the sinks take it: its normalized-topic JSON (``payload``, which
    the events rows are made from), its id and entity id, and where it came from.

    The ``NormalizedEvent`` itself is not kept: with its parsed document it is about three
    times the payload's memory, and a batch waits for its write while the next one is
    decoded.  Make one with ``Accepted.of``."""

    id: str
    entity_id: str
    topic: str
    partition: int
    offset: int
    index: int
    payload: bytes
    log: str = ""

    @classmethod
    def of(
        cls, event: NormalizedEvent, topic: str, partition: int, offset: int, index: int, payload: bytes = b"",
        log: str = "",
    ) -> Accepted:
        """``event`` from (topic, partition, offset, index, log), with its normalized JSON:
        ``payload`` when it is one from its first field to its last (original bytes would
        not be), else made here.  Raises what orjson raises for an event it cannot write."""
        if not (payload.startswith(_PAYLOAD_HEAD) and _PAYLOAD_TAIL in payload[-40:]):
            payload = jsonbytes.dumps(vars(event))
        return cls(event.id, event.entity_id, topic, partition, offset, index, payload, log)


@dataclass
class BatchOutput:
    """What one batch (or one segment of it) asks the sinks to write, and what it counted."""

    events: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    rollups: dict[RollupKey, Measures] = field(default_factory=dict)
    #: the first event of each rollup row (named in the DLQ entry if the row is refused)
    rollup_origins: dict[RollupKey, Origin] = field(default_factory=dict)
    #: highest offset of this batch per source partition, per sink that has rows to write
    offsets: dict[str, dict[TP, int]] = field(default_factory=dict)
    #: topic → log identity the batch was read from (written with its rows)
    logs: dict[str, str] = field(default_factory=dict)
    messages: int = 0
    accepted: int = 0
    rejected_count: int = 0
    duplicates: int = 0
    replayed: int = 0
    max_event_time_ms: int | None = None
    #: rollup updates folded into ``other`` by the dimension cap, per dimension
    folded: dict[str, int] = field(default_factory=dict)
    #: the segments the writer writes in order; empty for a batch within the limits (it is
    #: its one segment: ``parts``).  Never ``[self]``: a batch holding itself is a reference
    #: cycle, and every batch (20,000 events, their dicts and JSON) would wait for the
    #: cyclic collector's rare full pass instead of being freed when written.
    segments: list[BatchOutput] = field(default_factory=list)
    #: rows a sink refused at write time, dead-lettered by the writer (filled by it)
    unwritable: list[Rejected] = field(default_factory=list)


    @property
    def parts(self) -> list[BatchOutput]:
        """The segments to write, in order: ``segments``, or the batch itself."""
        return self.segments or [self]


def unserializable(event: NormalizedEvent, exc: Exception, source: Source, raw: bytes | None) -> Rejected:
    """The ``unwritable`` rejection of an event the JSON serializer refuses, naming the field."""
    fields = vars(event)
    bad = next((k for k, v in fields.items() if not _dumps_ok(v)), None)
    where = f"topic taskpulse.events.normalized, field {bad}" if bad else "topic taskpulse.events.normalized"
    try:
        original = json.dumps(fields, default=str).encode()
    except (ValueError, TypeError, RecursionError):
        original = raw or b""
    return Rejected(
        reason=RejectReason.unwritable,
        detail=f"{where}: orjson cannot serialize the event: {exc}",
        source=source,
        original=original,
        event_id=event.id,
    )


def _dumps_ok(value: object) -> bool:
    try:
        orjson.dumps(value)
    except (TypeError, ValueError):
        return False
    return True


#: a message to process: it, whether the events, rollups and DLQ sinks still need it, its items
_Decoded = tuple[RawMessage, bool, bool, bool, list[NormalizedEvent | Rejected]]


class BatchProcessor:
    """Decode, dedup and aggregate batches; tracks the sinks' watermarks."""

    def __init__(
        self,
        decoder: Decoder,
        seen: SeenIds,
        mapping: SketchMapping,
        max_rows: int = 200_000,
        max_bytes: int = 64 * 1024 * 1024,
        caps: DimensionCap | None = None,
        max_event_bytes: int = MAX_EVENT_BYTES,
        decode_chunk: int = DECODE_CHUNK,
    ) -> None:
        self.decoder = decoder
        self.seen = seen
        self.mapping = mapping
        self.max_rows = max_rows
        self.max_bytes = max_bytes
        self.caps = caps if caps is not None else DimensionCap(1000)
        self.max_event_bytes = max_event_bytes
        self.decode_chunk = decode_chunk
        self.watermarks: Watermarks = {name: {} for name in SINKS}
        #: topic → identity of its current log (``pipeline.core.ingest.logs``), set at start and
        #: after each rebalance; written with every row and part of every id's origin
        self.logs: dict[str, str] = {}

    def set_watermarks(self, sink: str, marks: dict[TP, int]) -> None:
        """Merge what ``sink`` is known to have written (loaded from storage)."""
        current = self.watermarks[sink]
        for tp, off in marks.items():
            if off > current.get(tp, -1):
                current[tp] = off

    def use_logs(self, logs: dict[str, str], marks: Watermarks) -> None:
        """Switch to these logs (topic → identity) and their watermarks.  A topic whose log
        changed forgets what it had: its offsets now count in another log."""
        for name in SINKS:
            current = self.watermarks[name]
            for tp in [tp for tp in current if self.logs.get(tp[0]) != logs.get(tp[0])]:
                del current[tp]
        if logs != self.logs:  # a new object: batches in flight keep the logs they were read from
            self.logs = dict(logs)
        for name in SINKS:
            self.set_watermarks(name, marks.get(name, {}))

    def committed(self, out: BatchOutput, sink: str) -> None:
        """Record that ``sink`` durably wrote its part of ``out``."""
        current = self.watermarks[sink]
        logs = self.logs
        for tp, off in out.offsets.get(sink, {}).items():
            if out.logs.get(tp[0]) != logs.get(tp[0]):
                continue  # read from a log replaced meanwhile: the offset means nothing now
            if off > current.get(tp, -1):
                current[tp] = off

    def process(self, messages: list[RawMessage], now_ms: int) -> BatchOutput:
        logs = self.logs
        total = BatchOutput(messages=len(messages), logs=logs)
        segments: list[BatchOutput] = []
        seg = BatchOutput(logs=logs)
        seg_offsets: dict[str, dict[TP, int]] = {name: {} for name in SINKS}
        seg_bytes = 0
        mapping_key = self.mapping.key
        first_delivery = self.seen.first_delivery
        caps = self.caps
        fold, evicted = caps.fold, caps.evicted
        folded_before = dict(self.caps.folded)
        max_rows, max_bytes, max_event_bytes = self.max_rows, self.max_bytes, self.max_event_bytes
        dumps = jsonbytes.dumps  # kept for the batch's life: right-sized
        grans = list(GRANULARITIES.items())
        max_ts: int | None = None
        for msg, new_events, new_rollups, new_dlq, items in self._decoded(messages, total, now_ms):
            if (seg.events or seg.rejected or seg.rollups) and (
                seg_bytes >= max_bytes
                or len(seg.events) >= max_rows
                or len(seg.rollups) >= max_rows
                or len(seg.rejected) >= max_rows
            ):
                seg.offsets = {name: tps for name, tps in seg_offsets.items() if tps}
                segments.append(seg)
                seg, seg_offsets, seg_bytes = BatchOutput(logs=logs), {name: {} for name in SINKS}, 0
            rollups, origins = seg.rollups, seg.rollup_origins
            tp = (msg.topic, msg.partition)
            off = msg.offset
            log = logs.get(msg.topic, "")
            for index, item in enumerate(items):
                if not isinstance(item, Rejected):
                    try:
                        payload = dumps(vars(item))
                    except (TypeError, ValueError) as exc:
                        item = unserializable(item, exc, Source(topic=msg.topic, partition=msg.partition, offset=off, index=index), msg.value)  # noqa: E501
                    else:
                        if len(payload) > max_event_bytes:
                            item = Rejected(
                                reason=RejectReason.unwritable,
                                detail=f"topic taskpulse.events.normalized: the normalized event is {len(payload)} "
                                f"bytes, over the output limit of {max_event_bytes}",
                                source=Source(topic=msg.topic, partition=msg.partition, offset=off, index=index),
                                original=payload,
                                event_id=item.id,
                            )
                if isinstance(item, Rejected):
                    total.rejected_count += 1
                    if new_dlq:
                        seg.rejected.append(item)
                        seg_bytes += len(item.original)
                        seg_offsets["dlq"][tp] = off
                    continue
                if not first_delivery(item.id, (msg.topic, msg.partition, off, index, log)):
                    total.duplicates += 1
                    continue
                total.accepted += 1
                ts = item.event_time_ms
                if max_ts is None or ts > max_ts:
                    max_ts = ts
                if new_events:
                    seg.events.append(Accepted(item.id, item.entity_id, msg.topic, msg.partition, off, index,
                                               payload, log))  # fmt: skip
                    seg_bytes += len(payload)
                    seg_offsets["events"][tp] = off
                if new_rollups:
                    agent, task_type, outcome = item.agent, item.task_type, item.outcome
                    base: Dims = (item.entity_type.value, item.event_type, agent, task_type, outcome)
                    dur = item.duration_ms
                    key = mapping_key(dur) if dur is not None else None
                    # A window already holding these dimensions unfolded kept both values:
                    # asking the cap again gives the same answer while it forgets no window.
                    for gran, size in grans:
                        ws = ts - ts % size
                        rk = (gran, ws, base)
                        m = rollups.get(rk) if caps.evicted == evicted else None
                        if m is None:
                            a, t = fold(gran, ws, agent, task_type)
                            if a is not agent or t is not task_type:
                                rk = (gran, ws, (base[0], base[1], a, t, outcome))
                            m = rollups.get(rk)
                            if m is None:
                                m = rollups[rk] = Measures()
                                origins[rk] = (msg.topic, msg.partition, off, index, item.id)
                        m.add(outcome, dur, key)
                    seg_offsets["rollups"][tp] = off
        seg.offsets = {name: tps for name, tps in seg_offsets.items() if tps}
        segments.append(seg)
        total.max_event_time_ms = max_ts
        total.folded = {d: n - folded_before[d] for d, n in self.caps.folded.items() if n > folded_before[d]}
        return _combine(total, segments)

    def _decoded(self, messages: list[RawMessage], total: BatchOutput, now_ms: int) -> Iterator[_Decoded]:
        """Each message to process with the sinks that still need it and its decoded items
        (one a sink already wrote is a replay, not decoded).  Messages are decoded a chunk
        of about ``decode_chunk`` events at a time, whose ids are then looked up in the
        dedup memory in one step: only a chunk's parsed documents and event objects are
        alive at once, not a whole batch's (tens of MiB for 20,000 events)."""
        marks_events = self.watermarks["events"]
        marks_rollups = self.watermarks["rollups"]
        marks_dlq = self.watermarks["dlq"]
        decode, chunk_events = self.decoder.decode, self.decode_chunk
        chunk: list[_Decoded] = []
        n = 0
        for msg in messages:
            tp = (msg.topic, msg.partition)
            off = msg.offset
            new_events = off > marks_events.get(tp, -1)
            new_rollups = off > marks_rollups.get(tp, -1)
            new_dlq = off > marks_dlq.get(tp, -1)
            if not (new_events or new_rollups or new_dlq):
                total.replayed += 1
                continue
            items = decode(msg.topic, msg.partition, off, msg.value, now_ms)
            chunk.append((msg, new_events, new_rollups, new_dlq, items))
            n += len(items)
            if n >= chunk_events:
                yield from self._prefetched(chunk)
                chunk, n = [], 0
        yield from self._prefetched(chunk)

    def _prefetched(self, chunk: list[_Decoded]) -> list[_Decoded]:
        self.seen.prefetch(i.id for *_, items in chunk for i in items if type(i) is NormalizedEvent)
        return chunk


def _combine(total: BatchOutput, segments: list[BatchOutput]) -> BatchOutput:
    """The batch's totals with its segments' rows (one segment: the batch is that segment,
    ``segments`` stays empty)."""
    if len(segments) == 1:
        seg = segments[0]
        total.events, total.rejected, total.rollups = seg.events, seg.rejected, seg.rollups
        total.rollup_origins, total.offsets = seg.rollup_origins, seg.offsets
        return total
    for seg in segments:
        total.events.extend(seg.events)
        total.rejected.extend(seg.rejected)
        for rk, m in seg.rollups.items():
            total.rollups[rk] = total.rollups[rk].merge(m) if rk in total.rollups else m
        for sink, tps in seg.offsets.items():
            marks = total.offsets.setdefault(sink, {})
            for tp, off in tps.items():
                marks[tp] = max(off, marks.get(tp, -1))
    total.segments = segments
    return total
