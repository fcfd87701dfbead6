"""One HTTP ingest request (``POST /api/v1/events``) → what to publish and what to answer.
Pure: the caller reads the body, publishes and waits for the broker's acknowledgement.

The body is a JSON object, a JSON array of objects, or NDJSON (one object per line).  Each
event gets ``metadata.source`` = the token's name and is judged by the pipeline's own
decoder (``Decoder``), so the answer gives the reason codes the DLQ would.  Accepted events
are published to their raw topic keyed by entity id, as any producer's; rejected ones are
published too, so the ingest role dead-letters them with their original bytes (an invalid
JSON line or an event without a known entity type goes to the system topic).  An id sent
twice in one request is published once (``duplicates``); across requests the pipeline's
dedup by id makes a resent event safe.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.core.ingest.decode import Decoder
from pipeline.events import Rejected

#: the topic name the decoder is told for HTTP input (never published to)
HTTP_SOURCE_TOPIC = "http"


class BodyError(ValueError):
    """The body as a whole cannot be read (not JSON, not an object or array); a 400."""


class TooMany(ValueError):
    """More events than a request may carry; a 413."""


#: a line of an NDJSON body that is not blank (its leading whitespace left out)
_NDJSON_LINE = re.compile(rb"(?m)^[ \t\r\f\v]*+([^\s][^\n]*)")

#: what an NDJSON line that is not JSON parses to (its bytes go to the decoder as sent)
UNPARSED = object()

Item = tuple[bytes, Any]

#: JSON objects and arrays one event may hold, for the size check before parsing
OBJECTS_PER_EVENT = 64


def split_body(body: bytes, ndjson: bool, max_events: int) -> list[Item]:
    """The events of a body, each as (its bytes as sent, its parsed document).  An NDJSON
    line holds one event or an array of them (an SDK batch)."""
    items: list[Item] = []
    # Parsing costs ~100 bytes of memory per JSON container: a 16 MiB body of ``[{},{},…]``
    # (16 KiB gzipped) would take ~500 MB before its count is known.  A count in C first:
    # more containers than the event limit allows (each event with up to
    # OBJECTS_PER_EVENT of them) is refused unparsed.
    containers = body.count(b"{") + body.count(b"[")
    if containers > max_events * OBJECTS_PER_EVENT:
        raise TooMany(f"the body holds {containers} JSON objects and arrays, more than {max_events} events "
                      f"(TASKPULSE_API_INGEST_MAX_EVENTS) of up to {OBJECTS_PER_EVENT} each can: split it")  # fmt: skip
    if ndjson:
        for match in _NDJSON_LINE.finditer(body):  # one line at a time: never a list of every line
            line = match.group(1)
            try:
                doc = orjson.loads(line)
            except orjson.JSONDecodeError:
                doc = UNPARSED
            if isinstance(doc, list) and doc:
                items += [(b"", d) for d in doc]
            else:
                items.append((line, doc))
            _check_count(len(items), max_events)
        return items
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise BodyError(f"the body is not valid JSON ({exc}); send an event object, an array of them, or NDJSON "
                        "with Content-Type: application/x-ndjson") from exc  # fmt: skip
    if isinstance(doc, dict):
        return [(body, doc)]
    if not isinstance(doc, list):
        raise BodyError(f"expected an event object or an array of them, got {type(doc).__name__}")
    _check_count(len(doc), max_events)
    return [(b"", d) for d in doc]


def _check_count(n: int, max_events: int) -> None:
    if n > max_events:
        raise TooMany(f"more than {max_events} events in one request (TASKPULSE_API_INGEST_MAX_EVENTS): split it")


@dataclass
class Outcome:
    """One event's result, as the answer lists it."""

    index: int
    id: str | None
    status: str
    reason: str | None = None
    detail: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "status": self.status, "reason": self.reason,
                "detail": self.detail}  # fmt: skip


@dataclass
class Prepared:
    """What to publish (topic, key, value) and what to answer once it is acknowledged."""

    outcomes: list[Outcome] = field(default_factory=list)
    #: (topic, key, event bytes, whether the bytes are JSON that may share an array message)
    messages: list[tuple[str, bytes, bytes, bool]] = field(default_factory=list)
    duplicates: int = 0

    def answer(self) -> dict[str, Any]:
        accepted = sum(1 for o in self.outcomes if o.status == "accepted")
        return {
            "accepted": accepted - self.duplicates,
            "duplicates": self.duplicates,
            "rejected": len(self.outcomes) - accepted,
            "results": [o.to_json() for o in self.outcomes],
        }


def with_source(raw: bytes, doc: Any, source: str) -> bytes:
    """The event's bytes with ``metadata.source`` set; as sent when it is not an object with
    an object (or no) ``metadata``: the decoder judges it as it would from Kafka."""
    if doc is UNPARSED:
        return raw
    if isinstance(doc, dict):
        md = doc.get("metadata")
        if md is None:
            doc["metadata"] = md = {}
        if isinstance(md, dict):
            md["source"] = source
    try:
        return orjson.dumps(doc)
    except (orjson.JSONEncodeError, TypeError):  # deeper than orjson writes: the bytes as sent
        return raw or orjson.dumps(str(doc))


def prepare(items: list[Item], decoder: Decoder, source: str, raw_topics: dict[str, str], fallback_topic: str,
            now_ms: int) -> Prepared:  # fmt: skip
    """Judge each event; publish the accepted (once per id) and the rejected."""
    out = Prepared()
    seen: set[str] = set()
    for index, (raw, doc) in enumerate(items):
        if decoder.privacy is not None and isinstance(doc, dict):
            decoder.privacy.apply(doc)  # the raw topic gets pseudonyms and redacted text too
        value = with_source(raw, doc, source)
        # an item is one event: an array here sits inside the request's array (or NDJSON line's),
        # where the ingest role finds it, so it is judged there as an element, not as a batch
        judged = b"[" + value + b"]" if isinstance(doc, list) else value
        results = decoder.decode(HTTP_SOURCE_TOPIC, 0, index, judged, now_ms)
        doc_id = doc.get("id") if isinstance(doc, dict) and isinstance(doc.get("id"), str) else None
        entity = doc.get("entity_type") if isinstance(doc, dict) else None
        key = doc.get("entity_id") if isinstance(doc, dict) else None
        topic = raw_topics.get(entity, fallback_topic) if isinstance(entity, str) else fallback_topic
        key_bytes = str(key).encode() if isinstance(key, str | int) else b""
        bad = next((r for r in results if isinstance(r, Rejected)), None)
        if bad is not None:
            out.outcomes.append(Outcome(index, doc_id, "rejected", bad.reason.value, bad.detail))
            # an array goes as judged, inside one of its own: alone it would be read as a batch
            batchable = doc is not UNPARSED and not isinstance(doc, list) and value[:1] in b"{["
            out.messages.append((topic, key_bytes, judged, batchable))
            continue
        event_id = results[0].id if results and not isinstance(results[0], Rejected) else doc_id
        out.outcomes.append(Outcome(index, event_id, "accepted"))
        if event_id in seen:
            out.duplicates += 1
            continue
        if event_id is not None:
            seen.add(event_id)
        out.messages.append((topic, key_bytes, value, True))
    return out


def batch_messages(
    messages: list[tuple[str, bytes, bytes, bool]], partition_of: Callable[[str, bytes], int],
    max_bytes: int, max_elements: int,
) -> list[tuple[str, int, bytes]]:  # fmt: skip
    """The Kafka messages to send: the events of one (topic, partition) joined into JSON array
    messages, as the SDK batches (at most ``max_bytes`` and ``max_elements`` each, within the
    decoder's limits, so the array itself is never what is rejected), in request order; an
    event that is not JSON (or alone over the limit) goes as its own message."""
    out: list[tuple[str, int, bytes]] = []
    open_: dict[tuple[str, int], tuple[list[bytes], int]] = {}

    def close(tp: tuple[str, int]) -> None:
        parts, _ = open_.pop(tp)
        out.append((tp[0], tp[1], b"[" + b",".join(parts) + b"]"))

    for topic, key, value, batchable in messages:
        tp = (topic, partition_of(topic, key))
        if not batchable or len(value) + 2 > max_bytes:
            out.append((topic, tp[1], value))
            continue
        parts, size = open_.get(tp, ([], 2))
        if parts and (size + len(value) + 1 > max_bytes or len(parts) >= max_elements):
            close(tp)
            parts, size = [], 2
        parts.append(value)
        open_[tp] = (parts, size + len(value) + 1)
    for tp in list(open_):
        close(tp)
    return out
