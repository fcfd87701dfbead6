"""DLQ replay, the pure part: what a DLQ entry is, which entries can go back to their source
topic (``refusal``), the key a replayed message gets, and the report of a replay (its queries:
``pipeline.core.ingest.queries``).

An entry is one rejected message (or one element of an array message), identified by
``entry_id``: a hash of where it came from (log, topic, partition, offset, index) and its
original bytes, so the copies a crash may write of one entry share one id.  A replay
publishes the original bytes again to the topic they came from; ``dlq_replays`` records each
replayed entry (after the broker acknowledged it), and an entry with a record is never
replayed again.  The event ids inside the original stay the same, so the pipeline's dedup
counts an event once even if a crash between the publish and its record makes the next run
send it again.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

_COLUMNS = (
    "entry_id", "received_at", "reason", "detail", "event_id", "original", "original_cut", "original_redacted",
    "src_topic", "src_partition", "src_offset", "src_index", "src_log",
)  # fmt: skip


@dataclass(frozen=True)
class Entry:
    """One DLQ entry (its copies collapsed)."""

    entry_id: int
    received_at: str
    reason: str
    detail: str
    event_id: str
    original: bytes
    original_cut: bool
    original_redacted: bool
    src_topic: str
    src_partition: int
    src_offset: int
    src_index: int
    src_log: str

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> Entry:
        d = dict(zip(_COLUMNS, row, strict=True))
        original = d["original"]
        return cls(
            int(d["entry_id"]), str(d["received_at"]), str(d["reason"]), str(d["detail"]), str(d["event_id"]),
            original if isinstance(original, bytes) else str(original).encode("utf-8", "surrogateescape"),
            bool(d["original_cut"]), bool(d["original_redacted"]), str(d["src_topic"]), int(d["src_partition"]),
            int(d["src_offset"]),
            int(d["src_index"]), str(d["src_log"]),
        )  # fmt: skip

    @property
    def hex_id(self) -> str:
        return entry_hex(self.entry_id)

    def summary(self) -> dict[str, Any]:
        """The entry for a listing (the original shortened)."""
        text = self.original.decode("utf-8", errors="replace")
        return {
            "id": self.hex_id, "received_at": self.received_at, "reason": self.reason, "detail": self.detail[:300],
            "event_id": self.event_id, "source": f"{self.src_topic}:{self.src_partition}:{self.src_offset}"
            f"[{self.src_index}]", "original": text[:200] + ("…" if len(text) > 200 else ""),
        }  # fmt: skip

    def full(self) -> dict[str, Any]:
        """Everything about the entry (``dlq show``)."""
        return {
            **self.summary(), "detail": self.detail, "original": self.original.decode("utf-8", errors="replace"),
            "original_bytes": len(self.original), "original_cut": self.original_cut,
            "original_redacted": self.original_redacted, "src_log": self.src_log,
        }  # fmt: skip


def entry_hex(entry_id: int) -> str:
    return f"{entry_id:016x}"


def parse_entry_id(text: str) -> int:
    """An entry id as ``dlq list`` shows it (16 hex digits)."""
    try:
        value = int(text.strip(), 16)
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a DLQ entry id (16 hex digits, as `taskpulse dlq list` shows)") from exc
    if not 0 <= value < 2**64:
        raise ValueError(f"{text!r} is not a DLQ entry id (16 hex digits)")
    return value


@dataclass(frozen=True)
class Filters:
    """Which entries a listing or a replay takes."""

    reason: str = ""
    topic: str = ""
    since_ms: int | None = None
    entry_id: int | None = None
    limit: int = 1000

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> Filters:
        since = body.get("since_ms")
        entry = body.get("id")
        return cls(
            str(body.get("reason") or ""), str(body.get("topic") or ""), int(since) if since is not None else None,
            parse_entry_id(str(entry)) if entry else None, max(1, min(int(body.get("limit") or 1000), 100_000)),
        )  # fmt: skip

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "topic": self.topic, "since_ms": self.since_ms,
                "id": entry_hex(self.entry_id) if self.entry_id is not None else None, "limit": self.limit}  # fmt: skip


REPLAY_COLUMNS = [
    "entry_id", "replayed_at", "reason", "event_id", "src_topic", "src_partition", "src_offset", "src_index",
    "src_log", "topic", "partition", "offset", "replayed_by",
]  # fmt: skip


def refusal(e: Entry, raw_topics: Iterable[str]) -> str:
    """Why ``e`` cannot be replayed ('' when it can): its original must be the message as a
    producer sent it to a raw topic, whole."""
    if e.src_offset < 0:
        return "built by the correlation role from many messages: there is no original message to publish again"
    if e.src_topic not in set(raw_topics):
        return f"it came from {e.src_topic}, not a raw topic"
    if e.reason == "unwritable":
        return "its original is the row taskpulse derived and the database refused, not the message as sent"
    if e.original_cut:
        return "its original was cut (an array element nested past TASKPULSE_MAX_DEPTH): not kept whole"
    if e.original_redacted:
        return ("its original was pseudonymised / redacted before it was stored (TASKPULSE_DLQ_KEEP_ORIGINAL=false): "
                "not the message as sent; have the producer send the event again")
    if not e.original.strip():
        return "its original is empty"
    return ""


def message_key(original: bytes) -> bytes | None:
    """The Kafka key of a replayed message: its entity id (of the first event of an array)."""
    try:
        doc = orjson.loads(original)
    except orjson.JSONDecodeError:
        return None
    if isinstance(doc, list) and doc:
        doc = doc[0]
    entity = doc.get("entity_id") if isinstance(doc, dict) else None
    return str(entity).encode() if isinstance(entity, str | int) and str(entity) else None


@dataclass
class Report:
    """What a replay did."""

    dry_run: bool
    filters: dict[str, Any]
    selected: int = 0
    replayed: list[dict[str, Any]] = field(default_factory=list)
    already_replayed: list[dict[str, Any]] = field(default_factory=list)
    refused: list[dict[str, Any]] = field(default_factory=list)
    #: accepted / rejected_again (by reason) / no_rows (duplicates of stored events) / pending
    outcome: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "dry_run": self.dry_run, "filters": self.filters, "selected": self.selected,
            "replayed": self.replayed, "already_replayed": self.already_replayed, "refused": self.refused,
            "outcome": self.outcome,
        }  # fmt: skip


def judge_outcome(
    published: Mapping[str, tuple[str, int, int]],
    rows: Iterable[Sequence[Any]],
    committed: Mapping[tuple[str, int], int],
) -> tuple[dict[str, Any], set[str]]:
    """The outcome of replayed entries (hex id → where published) from the ``outcome_query``
    rows and the ingest group's committed offsets; and the entries still undecided."""
    accepted: dict[str, int] = {}
    rejected: dict[str, str] = {}
    for key, reason, n in rows:
        if reason:
            rejected[str(key)] = str(reason)
        else:
            accepted[str(key)] = int(n)
    out: dict[str, Any] = {"accepted": 0, "events": 0, "rejected_again": {}, "no_rows": 0, "pending": 0}
    undecided = set()
    for hex_id, (t, p, o) in published.items():
        key = f"{t}:{p}:{o}"
        if key in rejected:
            out["rejected_again"][rejected[key]] = out["rejected_again"].get(rejected[key], 0) + 1
        elif key in accepted:
            out["accepted"] += 1
            out["events"] += accepted[key]
        elif committed.get((t, p), -1) > o:
            out["no_rows"] += 1  # read and committed, nothing written: its events were stored already
        else:
            out["pending"] += 1
            undecided.add(hex_id)
    return out, undecided
