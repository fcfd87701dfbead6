"""``taskpulse ingest PATH --format ndjson|agent-log|task-csv [--follow]``: read files (following
them as they grow), map each line to taskpulse events, publish, and only then store the
position.  ``ndjson`` lines are taskpulse events already; ``agent-log`` is seed 004's NDJSON
logs (a directory of them or one file); ``task-csv`` is seed 001's per-task CSV.  The mapping
itself is pure: ``pipeline.core.ingest.sources``."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from pipeline.core.ingest.decode import Decoder
from pipeline.core.ingest.sources import Mapped, TaskCsv, agent_log_line
from pipeline.follow import Follower, Line
from pipeline.publish import describe, rejects
from pipeline.sdk import TaskpulseProducer
from pipeline.topics import RAW_SYSTEM, RAW_TOPICS

FORMATS = ("ndjson", "agent-log", "task-csv")


def detect_format(path: Path) -> str:
    """A directory holds seed 004 logs; ``*.csv`` is seed 001's CSV; an NDJSON file is seed 004's
    when its first line has their fields (``droid_id``, ``run_id``, ``execution_id``) and no
    ``entity_type``, else taskpulse events."""
    if path.is_dir():
        return "agent-log"
    if path.suffix.lower() == ".csv":
        return "task-csv"
    with contextlib.suppress(OSError, orjson.JSONDecodeError, StopIteration):
        with path.open("rb") as fh:
            first = next(ln for ln in fh if ln.strip())
        doc = orjson.loads(first)
        if isinstance(doc, dict) and "entity_type" not in doc and {"droid_id", "run_id", "execution_id"} & set(doc):
            return "agent-log"
    return "ndjson"


def files_of(path: Path, fmt: str) -> list[Path]:
    """The files to read: the file itself, or a directory's ``*.ndjson`` (``*.csv``) files."""
    if not path.is_dir():
        return [path]
    pattern = "*.csv" if fmt == "task-csv" else "*.ndjson"
    return sorted(p for p in path.glob(pattern) if p.is_file())


def state_file(data_dir: Path, path: Path, fmt: str) -> Path:
    """Where ``--follow`` keeps its positions for ``path`` (one file per followed path)."""
    digest = hashlib.sha256(f"{path.resolve()}|{fmt}".encode()).hexdigest()[:16]
    return data_dir / "follow" / f"{path.name}-{digest}.json"


@dataclass
class Counts:
    lines: int = 0
    events: int = 0
    #: lines published as they are for the DLQ (unknown shapes, unreadable lines)
    dead_lettered: int = 0
    #: mapped events the decoder rejects (published: the DLQ keeps them with the reason)
    rejected_events: int = 0
    #: ndjson lines not sent because the decoder rejects them (validate mode)
    not_sent: int = 0
    skipped: dict[str, int] = field(default_factory=dict)


@dataclass
class Problem:
    path: Path
    lineno: int
    text: str


class LogSource:
    """Maps the lines of one format to what is published (per file: a CSV keeps its header)."""

    def __init__(self, fmt: str, follower: Follower, decoder: Decoder | None) -> None:
        self.fmt = fmt
        self.follower = follower
        self.decoder = decoder
        self._csv: dict[Path, TaskCsv] = {}

    def _csv_for(self, path: Path) -> TaskCsv:
        parser = self._csv.get(path)
        if parser is None:
            ctx = self.follower.context(path)
            parser = self._csv[path] = TaskCsv(ctx.get("header"), ctx.get("pending", ""))
        return parser

    def map(self, line: Line) -> Mapped | None:
        if self.fmt == "agent-log":
            return agent_log_line(line.data) if line.data.strip() else Mapped(skipped="empty line")
        parser = self._csv_for(line.path)
        had = parser.header_seen
        out = parser.feed(line.data.decode("utf-8", errors="replace") + "\n")
        ctx = self.follower.context(line.path)
        if not had and parser.header_seen:
            ctx["header"] = parser.header
        # a record cut by the position (its quoted field goes on): kept with the position
        ctx["pending"] = parser.pending
        return out


def _ndjson_target(line: bytes) -> tuple[str, bytes | None]:
    topic, key = RAW_SYSTEM, None
    with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError, IndexError, KeyError):
        doc = orjson.loads(line)
        first = doc[0] if isinstance(doc, list) and doc else doc
        topic = RAW_TOPICS.get(str(first.get("entity_type")), topic)
        key = str(first.get("entity_id", "")).encode() or None
    return topic, key


async def ingest(
    producer: TaskpulseProducer,
    follower: Follower,
    fmt: str,
    decoder: Decoder | None,
    *,
    follow: bool,
    on_problem: Callable[[Problem], None],
    poll_s: float = 0.5,
    stop: asyncio.Event | None = None,
    discover: Callable[[], list[Path]] | None = None,
) -> Counts:
    """Read, map, publish, wait for the broker's acknowledgement, store the positions; once
    (``follow=False``) or until ``stop`` is set.  ``discover``: the files to read now (a
    followed directory: files that appear later are read too)."""
    counts = Counts()
    source = LogSource(fmt, follower, decoder) if fmt != "ndjson" else None
    while True:
        for path in discover() if discover is not None else []:
            follower.add(path)
        lines = follower.poll(final=not follow)
        events: list[dict[str, Any]] = []
        for line in lines:
            counts.lines += 1
            if source is None:
                data = line.data.strip()
                if not data:
                    continue
                topic, key = _ndjson_target(data)
                if decoder is not None:
                    bad = rejects(decoder, topic, data)
                    if bad:
                        counts.not_sent += 1
                        on_problem(Problem(line.path, line.lineno, "; ".join(describe(r) for r in bad[:3])))
                        continue
                await producer.send_raw(topic, data, key=key)
                counts.events += 1
                continue
            mapped = source.map(line)
            if mapped is None:
                continue
            if mapped.skipped:
                kind = mapped.skipped.split(":", 1)[0]
                counts.skipped[kind] = counts.skipped.get(kind, 0) + 1
            if mapped.dead_letter is not None:
                counts.dead_lettered += 1
                on_problem(Problem(line.path, line.lineno, f"{mapped.problem} (sent to the DLQ)"))
                await producer.send_raw(RAW_SYSTEM, mapped.dead_letter, key=None)
            events.extend(mapped.events)
        # the files of a directory are read side by side: publish in event-time order
        events.sort(key=lambda e: str(e.get("timestamp")))
        for event in events:
            if decoder is not None:
                bad = rejects(decoder, RAW_TOPICS.get(event["entity_type"], RAW_SYSTEM), orjson.dumps(event))
                if bad:
                    counts.rejected_events += 1
                    on_problem(Problem(Path(str(event.get("entity_id"))), 0,
                                       f"{event['event_type']}: {describe(bad[0])} (sent to the DLQ)"))  # fmt: skip
            await producer.send(event)
            counts.events += 1
        await producer.flush()  # acknowledged by the broker …
        follower.commit()  # … before the position moves on
        if (not follow and not lines) or (stop is not None and stop.is_set()):
            return counts
        if not lines:
            await asyncio.sleep(poll_s)
