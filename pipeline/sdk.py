"""The pipeline's own asynchronous producer of raw events (the CLI, the demo and the tests use
it).  Agents use the SDK package instead: ``from taskpulse import Tracker`` (a local spool,
tasks, self-reports, heartbeats; it needs none of the worker's dependencies).

    async with TaskpulseProducer("kafka://127.0.0.1:9092") as tp:
        await tp.emit("task.created", "task-42", {"task_type": "research", "request": "…"})

Events are batched per partition into one Kafka message holding a JSON array (by default
up to 100 events, or what arrived within ``linger_ms``): one worker then pays Faust's
per-message cost once per batch instead of once per event.  ``batch_size=1`` sends one
event per message.  Each event goes to its entity type's raw topic, keyed by entity id,
so one entity's events stay in order on one partition.

A managed Kafka (TLS, SASL)::

    sec = KafkaSecurity(protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                        sasl_username="svc", sasl_password=os.environ["KAFKA_PASSWORD"])
    async with TaskpulseProducer("kafka://broker.example.com:9096", security=sec) as tp: ...

(``KafkaSecurity.from_settings(Settings())`` reads the ``TASKPULSE_KAFKA_*`` variables.)
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner

from pipeline.kafka_security import KafkaSecurity, client_kwargs
from pipeline.settings import kafka_bootstrap
from pipeline.topics import RAW_TOPICS


def make_event(
    event_type: str,
    entity_id: str,
    current_state: Mapping[str, Any] | None = None,
    *,
    previous_state: Mapping[str, Any] | None = None,
    timestamp: str | int | float | datetime | None = None,
    metadata: Mapping[str, Any] | None = None,
    metrics: Mapping[str, Any] | None = None,
    event_id: str | None = None,
) -> dict[str, Any]:
    """An event envelope as a dict, with a fresh id and the current UTC time by default."""
    if isinstance(timestamp, datetime):
        ts: str | int | float = timestamp.isoformat()
    elif timestamp is None:
        ts = datetime.now(UTC).isoformat(timespec="milliseconds")
    else:
        ts = timestamp
    event: dict[str, Any] = {
        "id": event_id or str(uuid.uuid4()),
        "timestamp": ts,
        "event_type": event_type,
        "entity_type": event_type.split(".", 1)[0],
        "entity_id": entity_id,
        "previous_state": dict(previous_state or {}),
        "current_state": dict(current_state or {}),
        "metadata": dict(metadata or {}),
        "metrics": dict(metrics or {}),
    }
    return event


class TaskpulseProducer:
    """Asynchronous, batching event publisher."""

    def __init__(
        self,
        kafka_url: str,
        *,
        batch_size: int = 100,
        linger_ms: int = 20,
        client_id: str = "taskpulse-sdk",
        security: KafkaSecurity | None = None,
    ) -> None:
        servers = kafka_bootstrap(kafka_url)
        self.batch_size = batch_size
        self._producer = AIOKafkaProducer(
            bootstrap_servers=servers,
            client_id=client_id,
            linger_ms=linger_ms,
            max_batch_size=256 * 1024,
            max_request_size=4 * 1024 * 1024,
            acks="all",
            **client_kwargs(security or KafkaSecurity()),
        )
        self._partitioner = DefaultPartitioner()
        self._partitions: dict[str, list[int]] = {}
        self._buffers: dict[tuple[str, int], list[bytes]] = {}
        self._pending: list[asyncio.Future[Any]] = []
        self._linger_s = linger_ms / 1000
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self.sent_events = 0
        self.sent_messages = 0

    async def __aenter__(self) -> TaskpulseProducer:
        await self.start()
        return self

    async def __aexit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def start(self) -> None:
        try:
            await self._producer.start()
        except BaseException:
            await self._producer.stop()  # no "Unclosed AIOKafkaProducer" after a failed start
            raise
        self._flusher = asyncio.create_task(self._linger_loop())

    async def close(self) -> None:
        if self._flusher is not None:
            # Let the linger loop finish its turn instead of cancelling it: cancelled inside
            # _send_batch, it would drop the batch it had already taken from the buffers.
            self._closing = True
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        try:
            await self.flush()
        finally:
            await self._producer.stop()

    async def _linger_loop(self) -> None:
        """Send partly filled batches at least every ``linger_ms``: no event waits longer."""
        while not self._closing:
            await asyncio.sleep(self._linger_s)
            for topic, part in list(self._buffers):
                await self._send_batch(topic, part)

    async def _partition(self, topic: str, key: bytes) -> int:
        parts = self._partitions.get(topic)
        if parts is None:
            parts = self._partitions[topic] = sorted(await self._producer.partitions_for(topic))
        return int(self._partitioner(key, parts, parts))

    async def emit(self, event_type: str, entity_id: str, current_state: Mapping[str, Any] | None = None, **kw: Any) -> str:  # noqa: E501
        """Build and publish one event; returns its id."""
        event = make_event(event_type, entity_id, current_state, **kw)
        await self.send(event)
        return str(event["id"])

    async def send(self, event: Mapping[str, Any]) -> None:
        """Publish one event envelope (a dict), batched with others for its partition."""
        entity_type = str(event.get("entity_type", ""))
        topic = RAW_TOPICS.get(entity_type, RAW_TOPICS["system"])
        key = str(event.get("entity_id", "")).encode()
        await self.send_raw(topic, orjson.dumps(event), key=key)

    async def send_many(self, events: Iterable[Mapping[str, Any]]) -> None:
        for event in events:
            await self.send(event)

    async def send_raw(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        """Publish bytes as they are (one event, or anything: tests send malformed input)."""
        if self.batch_size <= 1 or key is None:
            fut = await self._producer.send(topic, value, key=key)
            self._pending.append(fut)
            self.sent_events += 1
            self.sent_messages += 1
            if len(self._pending) >= 10_000:
                await self._drain()
            return
        part = await self._partition(topic, key)
        buf = self._buffers.setdefault((topic, part), [])
        buf.append(value)
        if len(buf) >= self.batch_size:
            await self._send_batch(topic, part)

    async def _send_batch(self, topic: str, part: int) -> None:
        buf = self._buffers.pop((topic, part), [])
        if not buf:
            return
        value = b"[" + b",".join(buf) + b"]"
        fut = await self._producer.send(topic, value, partition=part)
        self._pending.append(fut)
        self.sent_events += len(buf)
        self.sent_messages += 1
        if len(self._pending) >= 1000:
            await self._drain()

    async def _drain(self) -> None:
        pending, self._pending = self._pending, []
        if pending:
            await asyncio.gather(*pending)

    async def flush(self) -> None:
        """Send every buffered event and wait until the broker acknowledged all of them."""
        for topic, part in list(self._buffers):
            await self._send_batch(topic, part)
        await self._drain()
        await self._producer.flush()
