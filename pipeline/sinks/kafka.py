"""Kafka through aiokafka: topic creation, and the producer the pipeline writes its outputs with."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaConnectionError, KafkaError, TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner

from pipeline.errors import SinkUnavailable

log = logging.getLogger(__name__)


async def ensure_topics(
    servers: str,
    topics: Iterable[str],
    partitions: int,
    retention_ms: int,
    retention_bytes: int,
    timeout_s: float = 30.0,
) -> list[str]:
    """Create the topics that do not exist yet (with explicit retention); returns those created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=servers, request_timeout_ms=int(timeout_s * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (TimeoutError, KafkaError, OSError) as exc:
        raise SinkUnavailable(
            f"cannot reach Kafka at {servers}: {exc!r}; check TASKPULSE_KAFKA_URL "
            "(leave it empty to start the embedded broker)"
        ) from exc
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t not in existing]
        if not wanted:
            return []
        configs = {"retention.ms": str(retention_ms), "retention.bytes": str(retention_bytes)}
        new = [NewTopic(t, partitions, 1, topic_configs=configs) for t in wanted]
        try:
            await admin.create_topics(new)
        except TopicAlreadyExistsError:
            pass
        return wanted
    finally:
        await admin.close()


class OutputProducer:
    """Publishes the pipeline's outputs; ``flush`` returns once the broker acknowledged all."""

    def __init__(self, servers: str, linger_ms: int = 5) -> None:
        self.servers = servers
        self.linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._partitioner = DefaultPartitioner()
        self._pending: list[asyncio.Future[object]] = []

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("OutputProducer.start() was not called")
        return self._producer

    async def start(self) -> None:
        """Create and connect the producer (inside the running event loop)."""
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.servers,
            acks="all",
            linger_ms=self.linger_ms,
            max_batch_size=256 * 1024,
            max_request_size=8 * 1024 * 1024,
        )
        try:
            await self._producer.start()
        except KafkaConnectionError as exc:
            raise SinkUnavailable(f"cannot reach Kafka: {exc}") from exc

    async def stop(self) -> None:
        if self._producer is not None:
            await self._producer.stop()

    async def partitions_for(self, topic: str) -> list[int]:
        return sorted(await self.producer.partitions_for(topic))

    def partition_of(self, key: bytes, partitions: list[int]) -> int:
        """The partition Kafka's default partitioner gives ``key`` (murmur2, like the JVM)."""
        return int(self._partitioner(key, partitions, partitions))

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> None:
        fut = await self.producer.send(topic, value, key=key, partition=partition)
        self._pending.append(fut)

    async def flush(self) -> None:
        """Wait until every send so far is acknowledged; raises SinkUnavailable if any failed."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        results = await asyncio.gather(*pending, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise SinkUnavailable(f"{len(errors)} Kafka sends failed, first: {errors[0]!r}")
