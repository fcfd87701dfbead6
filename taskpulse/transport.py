"""How spooled events leave the agent: Kafka (aiokafka, the raw topics) or the HTTP ingest
endpoint (``POST /api/v1/events``).  ``send`` delivers a whole batch or raises
``TransportUnavailable`` (then the batch stays in the spool and is sent again later: event
ids make a partly delivered batch safe to send again)."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import logging
import re
import urllib.error
import urllib.request
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from taskpulse.envelope import RAW_TOPICS

log = logging.getLogger("taskpulse.transport")


class TransportUnavailable(Exception):
    """Nothing (or not everything) was acknowledged; try again later.  ``retry_after`` (s) when
    the other side said how long to wait."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class Delivery:
    """What the other side said about a delivered batch."""

    accepted: int = 0
    duplicates: int = 0
    #: events refused for their content (reason → count); with Kafka the pipeline's DLQ says
    rejected: dict[str, int] = field(default_factory=dict)


class Transport(Protocol):
    name: str

    async def send(self, records: list[bytes]) -> Delivery: ...

    async def close(self) -> None: ...


def _entity(record: bytes) -> tuple[str, bytes]:
    """(raw topic, key) of a spooled event."""
    try:
        doc = orjson.loads(record)
    except orjson.JSONDecodeError:
        return RAW_TOPICS["system"], b""
    if not isinstance(doc, dict):
        return RAW_TOPICS["system"], b""
    return RAW_TOPICS.get(str(doc.get("entity_type")), RAW_TOPICS["system"]), str(doc.get("entity_id", "")).encode()


def _messages(records: list[bytes], max_events: int, max_bytes: int) -> list[list[bytes]]:
    """Records cut into messages of at most ``max_events`` and about ``max_bytes`` (the pipeline
    dead-letters a message over TASKPULSE_MAX_MESSAGE_BYTES, 1 MiB by default, as a whole)."""
    out: list[list[bytes]] = []
    cur: list[bytes] = []
    size = 0
    for rec in records:
        if cur and (len(cur) >= max_events or size + len(rec) + 1 > max_bytes):
            out.append(cur)
            cur, size = [], 0
        cur.append(rec)
        size += len(rec) + 1
    if cur:
        out.append(cur)
    return out


class KafkaTransport:
    """Events batched per partition into one Kafka message (a JSON array), as the pipeline's
    SDK producer does: one entity's events stay in order on one partition."""

    name = "kafka"

    def __init__(self, kafka_url: str, *, request_timeout_s: float = 10.0, max_events_per_message: int = 100,
                 max_message_bytes: int = 512 * 1024, **client_options: Any) -> None:  # fmt: skip
        self.bootstrap = ",".join(p.removeprefix("kafka://") for p in kafka_url.split(",") if p)
        self.request_timeout_s = request_timeout_s
        self.max_events_per_message = max_events_per_message
        self.max_message_bytes = max_message_bytes
        self.client_options = client_options
        self._producer: Any = None
        self._partitions: dict[str, list[int]] = {}

    async def _ready(self) -> Any:
        if self._producer is not None:
            return self._producer
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap, client_id="taskpulse-tracker", acks="all", linger_ms=0,
            request_timeout_ms=int(self.request_timeout_s * 1000), max_request_size=4 * 1024 * 1024,
            max_batch_size=1024 * 1024, **self.client_options,
        )  # fmt: skip
        try:
            await asyncio.wait_for(producer.start(), self.request_timeout_s * 1.5)
        except BaseException as exc:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(producer.stop(), 2)
            if isinstance(exc, asyncio.CancelledError):
                raise
            raise TransportUnavailable(f"cannot reach Kafka at {self.bootstrap}: {exc or type(exc).__name__}") from exc
        self._producer = producer
        return producer

    async def send(self, records: list[bytes]) -> Delivery:
        from aiokafka.errors import KafkaError
        from aiokafka.partitioner import DefaultPartitioner

        producer = await self._ready()
        partitioner = DefaultPartitioner()
        groups: dict[tuple[str, int], list[bytes]] = defaultdict(list)
        try:
            for rec in records:
                topic, key = _entity(rec)
                parts = self._partitions.get(topic)
                if parts is None:
                    parts = self._partitions[topic] = sorted(
                        await asyncio.wait_for(producer.partitions_for(topic), self.request_timeout_s))
                groups[(topic, int(partitioner(key, parts, parts)))].append(rec)
            futures = []
            for (topic, part), recs in groups.items():
                for chunk in _messages(recs, self.max_events_per_message, self.max_message_bytes):
                    value = b"[" + b",".join(chunk) + b"]"
                    futures.append(await producer.send(topic, value, partition=part))
            await asyncio.wait_for(asyncio.gather(*futures), self.request_timeout_s * 1.5)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._reset()
            raise TransportUnavailable(f"Kafka at {self.bootstrap} did not acknowledge: "
                                       f"{exc or type(exc).__name__}") from exc  # fmt: skip
        return Delivery(accepted=len(records))

    async def _reset(self) -> None:
        """Drop the producer after a failure: the next send starts a fresh one (nothing of the
        failed batch is left queued in aiokafka to arrive late and out of order)."""
        producer, self._producer = self._producer, None
        self._partitions.clear()
        if producer is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(producer.stop(), 2)

    async def close(self) -> None:
        await self._reset()


class HttpTransport:
    """``POST /api/v1/events`` with a JSON array (gzip above 1 KiB) and a bearer token.  200:
    delivered (per-event results; rejected ones are logged and counted); 413: the batch is
    split; 429 / 503 / 5xx / no answer: try again later; 401 / 403: kept in the spool (the
    token is wrong: fix TASKPULSE_API_TOKEN and the events go out)."""

    name = "http"

    def __init__(self, url: str, token: str = "", *, timeout_s: float = 10.0) -> None:
        base = url.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"TASKPULSE_HTTP_URL must be an http:// or https:// URL, not {url!r}")
        self.url = base if base.endswith("/api/v1/events") else f"{base}/api/v1/events"
        #: the URL as messages show it (credentials in it masked)
        self.shown = re.sub(r"//[^/@]*@", "//***@", self.url)
        self.token = token
        self.timeout_s = timeout_s

    async def send(self, records: list[bytes]) -> Delivery:
        return await asyncio.to_thread(self._send_sync, records)

    def _send_sync(self, records: list[bytes]) -> Delivery:
        try:
            return self._post(records)
        except _TooLarge:
            if len(records) == 1:
                log.error("the endpoint %s refused an event as too large (413); dropped: %s", self.shown,
                          records[0][:200])  # fmt: skip
                return Delivery(rejected={"oversized": 1})
            half = len(records) // 2
            a, b = self._send_sync(records[:half]), self._send_sync(records[half:])
            rejected = dict(a.rejected)
            for k, v in b.rejected.items():
                rejected[k] = rejected.get(k, 0) + v
            return Delivery(a.accepted + b.accepted, a.duplicates + b.duplicates, rejected)

    def _post(self, records: list[bytes]) -> Delivery:
        body = b"[" + b",".join(records) + b"]"
        headers = {"Content-Type": "application/json", "User-Agent": "taskpulse-tracker"}
        if len(body) > 1024:
            body = gzip.compress(body, compresslevel=5)
            headers["Content-Encoding"] = "gzip"
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url, data=body, headers=headers, method="POST")  # noqa: S310 - http(s) only
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:  # noqa: S310 - a configured URL
                answer = json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as exc:
            detail = _error_text(exc)
            if exc.code == 413:
                raise _TooLarge() from None
            retry = exc.headers.get("Retry-After") if exc.headers else None
            if exc.code in (401, 403):
                raise TransportUnavailable(f"{self.shown} answered {exc.code} ({detail}): set TASKPULSE_API_TOKEN "
                                           "to a token with the writer role; the events wait in the spool",
                                           retry_after=30.0) from None  # fmt: skip
            raise TransportUnavailable(f"{self.shown} answered {exc.code} ({detail})",
                                       retry_after=_seconds(retry)) from None  # fmt: skip
        except (urllib.error.URLError, OSError, TimeoutError, ValueError) as exc:
            raise TransportUnavailable(f"cannot reach {self.shown}: {getattr(exc, 'reason', exc)}") from None
        out = Delivery(accepted=int(answer.get("accepted", 0)), duplicates=int(answer.get("duplicates", 0)))
        for r in answer.get("results") or []:
            if isinstance(r, dict) and r.get("status") == "rejected":
                reason = str(r.get("reason") or "rejected")
                out.rejected[reason] = out.rejected.get(reason, 0) + 1
                log.warning("event %s rejected by %s: %s: %s", r.get("id"), self.shown, reason, r.get("detail"))
        return out

    async def close(self) -> None:
        return None


class _TooLarge(Exception):
    pass


def _error_text(exc: urllib.error.HTTPError) -> str:
    try:
        body = json.loads(exc.read() or b"{}")
        err = body.get("error", {}) if isinstance(body, dict) else {}
        return str(err.get("code") or exc.reason) if isinstance(err, dict) else str(exc.reason)
    except (ValueError, OSError):
        return str(exc.reason)


def _seconds(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None
