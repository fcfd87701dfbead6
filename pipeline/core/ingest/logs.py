"""Log identities: which incarnation of a Kafka partition a write watermark belongs to.

An offset means something only inside one log.  A fresh embedded broker, a topic that
was deleted and created again, or a consumer pointed at another cluster starts again at
offset 0, so a watermark is kept per (topic, partition, log), where the log is named by
the cluster id and the topic id the broker reports (``cluster/topic-uuid``).  A watermark
is used only for the log it was written from; data of any other log is never skipped.

Rows written before log identities existed carry the empty identity: their watermarks
are never used (nothing is skipped because of them), and their event ids still count as
seen for duplicate detection.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

TP = tuple[str, int]
#: (topic, partition, log identity)
TPLog = tuple[str, int, str]
#: sink name → (topic, partition, log) → highest offset written
StoredMarks = dict[str, dict[TPLog, int]]
#: sink name → (topic, partition) → highest offset written (of the current logs)
Watermarks = dict[str, dict[TP, int]]

#: the identity of rows written before identities existed
LEGACY = ""


def log_identity(cluster_id: str, topic_id: str) -> str:
    """The identity of a topic's log as the broker names it (topic id may be empty)."""
    return f"{cluster_id}/{topic_id}"


def has_topic_id(log: str) -> bool:
    """True when the identity names the topic's incarnation (not just the cluster)."""
    return bool(log.partition("/")[2])


def src_key(topic: str, partition: int, log: str) -> str:
    """The key of a rollups ``src_offsets`` entry (topic names hold no ':' or '@')."""
    return f"{topic}:{partition}@{log}"


def parse_src_key(key: str) -> TPLog:
    """``topic:partition@log`` → (topic, partition, log); a legacy ``topic:partition``
    key gives the empty identity."""
    topic, _, rest = key.partition(":")
    part, at, log = rest.partition("@")
    return topic, int(part), log if at else LEGACY


def select_marks(stored: Mapping[str, Mapping[TPLog, int]], logs: Mapping[str, str]) -> Watermarks:
    """The watermarks that apply now: per sink, those written from each topic's current
    log (``logs``: topic → identity).  Others (older incarnations, other clusters, rows
    without an identity) are left out, so their offsets skip nothing."""
    out: Watermarks = {}
    for sink, marks in stored.items():
        chosen: dict[TP, int] = {}
        for (topic, part, log), off in marks.items():
            if log != LEGACY and logs.get(topic) == log:
                chosen[(topic, part)] = max(off, chosen.get((topic, part), -1))
        out[sink] = chosen
    return out


def went_back(offsets: Iterable[tuple[str, int, int]], last: Mapping[TP, int]) -> dict[TP, int]:
    """The partitions whose messages start below the last offset processed there, with
    their lowest offset: a replay (a hand-over: harmless) or a log that started again (a
    recreated topic).  Either way the log identities must be read again before going on."""
    back: dict[TP, int] = {}
    for topic, part, off in offsets:
        tp = (topic, part)
        if off < last.get(tp, -1) and off < back.get(tp, off + 1):
            back[tp] = off
    return back
