"""One batch of raw messages → everything the sinks write for it.  Pure: the clock and the
watermarks come in as arguments.

Exactly-once into ClickHouse rests on two facts kept here:

* every sink (``events``, ``rollups``, ``dlq``) remembers, per source (topic, partition)
  *of the current log* (``pipeline.core.logs``), the highest message offset it has
  durably written (its *watermark*, stored inside the written rows themselves with the
  log's identity, so it is as durable and atomic as the data).  A message at or below a
  sink's watermark was already written there and is skipped for that sink when a crash
  makes Kafka deliver it again;
* duplicate deliveries of one event id are told from replays by the id's origin
  (``SeenIds``: log, topic, partition, offset, index): only the first delivery counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.core.aggregates import Dims, Measures, RollupKey, SketchMapping
from pipeline.core.decode import Decoder
from pipeline.core.dedup import SeenIds
from pipeline.core.logs import TP, Watermarks
from pipeline.core.windows import GRANULARITIES
from pipeline.events import NormalizedEvent, Rejected

SINKS = ("events", "rollups", "dlq")


@dataclass(slots=True)
class RawMessage:
    topic: str
    partition: int
    offset: int
    value: bytes | None


@dataclass(slots=True)
class Accepted:
    """A normalized event with where it came from."""

    event: NormalizedEvent
    topic: str
    partition: int
    offset: int
    index: int
    log: str = ""


@dataclass
class BatchOutput:
    """What one batch asks the sinks to write, and what it counted."""

    events: list[Accepted] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)
    rollups: dict[RollupKey, Measures] = field(default_factory=dict)
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


class BatchProcessor:
    """Decode, dedup and aggregate batches; tracks the sinks' watermarks."""

    def __init__(self, decoder: Decoder, seen: SeenIds, mapping: SketchMapping) -> None:
        self.decoder = decoder
        self.seen = seen
        self.mapping = mapping
        self.watermarks: Watermarks = {name: {} for name in SINKS}
        #: topic → identity of its current log (``pipeline.core.logs``), set at start and
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
        out = BatchOutput(messages=len(messages), logs=self.logs)
        marks_events = self.watermarks["events"]
        marks_rollups = self.watermarks["rollups"]
        marks_dlq = self.watermarks["dlq"]
        rollups = out.rollups
        mapping_key = self.mapping.key
        first_delivery = self.seen.first_delivery
        decode = self.decoder.decode
        offsets: dict[str, dict[TP, int]] = {name: {} for name in SINKS}
        grans = list(GRANULARITIES.items())
        logs = self.logs
        max_ts: int | None = None
        for msg in messages:
            tp = (msg.topic, msg.partition)
            off = msg.offset
            log = logs.get(msg.topic, "")
            new_events = off > marks_events.get(tp, -1)
            new_rollups = off > marks_rollups.get(tp, -1)
            new_dlq = off > marks_dlq.get(tp, -1)
            if not (new_events or new_rollups or new_dlq):
                out.replayed += 1
                continue
            for index, item in enumerate(decode(msg.topic, msg.partition, off, msg.value, now_ms)):
                if isinstance(item, Rejected):
                    out.rejected_count += 1
                    if new_dlq:
                        out.rejected.append(item)
                        offsets["dlq"][tp] = off
                    continue
                if not first_delivery(item.id, (msg.topic, msg.partition, off, index, log)):
                    out.duplicates += 1
                    continue
                out.accepted += 1
                ts = item.event_time_ms
                if max_ts is None or ts > max_ts:
                    max_ts = ts
                if new_events:
                    out.events.append(Accepted(item, msg.topic, msg.partition, off, index, log))
                    offsets["events"][tp] = off
                if new_rollups:
                    dims: Dims = (
                        item.entity_type.value,
                        item.event_type,
                        item.agent,
                        item.task_type,
                        item.outcome,
                    )
                    dur = item.duration_ms
                    key = mapping_key(dur) if dur is not None else None
                    for gran, size in grans:
                        rk = (gran, ts - ts % size, dims)
                        m = rollups.get(rk)
                        if m is None:
                            m = rollups[rk] = Measures()
                        m.add(item.outcome, dur, key)
                    offsets["rollups"][tp] = off
        out.offsets = {name: tps for name, tps in offsets.items() if tps}
        out.max_event_time_ms = max_ts
        return out
