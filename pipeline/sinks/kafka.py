"""Kafka through aiokafka: topic creation, and the producer the pipeline writes its outputs with."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import (
    CorruptRecordException,
    InvalidMessageError,
    InvalidTimestampError,
    KafkaConnectionError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    RecordTooLargeError,
    TopicAlreadyExistsError,
)
from aiokafka.partitioner import DefaultPartitioner

from pipeline.errors import SinkUnavailable

log = logging.getLogger(__name__)

#: What a broker or the client answers about one message's *content* (size, format): no
#: retry cures it, so the message is reported and skipped, never held as an outage.
CONTENT_ERRORS = (
    MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError, InvalidMessageError,
    CorruptRecordException, InvalidTimestampError,
)  # fmt: skip


async def ensure_topics(
    servers: str,
    topics: Iterable[str],
    partitions: int,
    retention_ms: int,
    retention_bytes: int,
    timeout_s: float = 30.0,
    client_kwargs: Mapping[str, Any] | None = None,
) -> list[str]:
    """Create the topics that do not exist yet (with explicit retention); returns those created.
    ``client_kwargs``: TLS / SASL arguments (pipeline.kafka_security.client_kwargs)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers, request_timeout_ms=int(timeout_s * 1000), **(client_kwargs or {})
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
    except (TimeoutError, KafkaError, OSError) as exc:
        tls = (client_kwargs or {}).get("ssl_context")
        reason = await tls_diagnosis(servers, tls) if tls is not None else ""
        raise SinkUnavailable(
            f"cannot reach Kafka at {servers}: {exc!r}{reason}; check TASKPULSE_KAFKA_URL "
            "(leave it empty to start the embedded broker) and TASKPULSE_KAFKA_SECURITY_PROTOCOL "
            "with its TASKPULSE_KAFKA_SSL_* / TASKPULSE_KAFKA_SASL_* settings"
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


async def tls_diagnosis(servers: str, context: ssl.SSLContext, timeout_s: float = 5.0) -> str:
    """Why a TLS connection to the first bootstrap server fails (aiokafka only says "Unable to
    bootstrap"): e.g. ``; TLS handshake with host:9093 failed: certificate verify failed``."""
    host, _, port = servers.split(",")[0].strip().rpartition(":")
    try:
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(host, int(port), ssl=context, server_hostname=host), timeout_s
        )
    except (OSError, TimeoutError, ValueError) as exc:
        if isinstance(exc, ssl.SSLCertVerificationError):
            detail = f"the broker's certificate did not verify ({exc.verify_message}): check TASKPULSE_KAFKA_SSL_CAFILE"
        else:
            detail = str(getattr(exc, "reason", None) or exc)
        return f"; TLS handshake with {host}:{port} failed: {detail}"
    writer.close()
    return ""


async def group_offsets(
    servers: str,
    topics: Collection[str],
    groups: Collection[str],
    client_kwargs: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> tuple[dict[tuple[str, int], int], dict[str, dict[tuple[str, int], int]]]:
    """The end offset of every partition of ``topics`` and each group's committed offsets
    (partitions without a commit left out), read by a consumer that joins no group: it sends
    OffsetFetch per group (``committed()``), which works where the admin client's
    ``list_consumer_group_offsets`` cannot decode the broker's answer (Tansu).  Topics that
    do not exist are left out.  Raises ``SinkUnavailable`` when the broker does not answer."""
    ends: dict[tuple[str, int], int] = {}
    commits: dict[str, dict[tuple[str, int], int]] = {g: {} for g in groups}
    probe = AIOKafkaConsumer(
        bootstrap_servers=servers, enable_auto_commit=False, max_partition_fetch_bytes=4096, **(client_kwargs or {})
    )
    try:
        await asyncio.wait_for(probe.start(), timeout_s)
        await asyncio.wait_for(probe.topics(), timeout_s)  # metadata of every topic
        tps = [TopicPartition(t, p) for t in topics for p in sorted(probe.partitions_for_topic(t) or ())]
        if tps:
            ends = await _high_watermarks(probe, tps, timeout_s)
    except (TimeoutError, KafkaError, OSError) as exc:
        raise SinkUnavailable(f"cannot reach Kafka at {servers}: {exc!r}") from exc
    finally:
        await probe.stop()
    for group in groups:
        reader = AIOKafkaConsumer(
            bootstrap_servers=servers, group_id=group, enable_auto_commit=False, **(client_kwargs or {})
        )
        try:
            await asyncio.wait_for(reader.start(), timeout_s)
            for tp in tps:
                offset = await asyncio.wait_for(reader.committed(tp), timeout_s)
                if offset is not None and offset >= 0:
                    commits[group][(tp.topic, tp.partition)] = int(offset)
        except (TimeoutError, KafkaError, OSError) as exc:
            raise SinkUnavailable(f"cannot read the commits of group {group} at {servers}: {exc!r}") from exc
        finally:
            await reader.stop()
    return ends, commits


async def _high_watermarks(
    probe: AIOKafkaConsumer, tps: list[TopicPartition], timeout_s: float
) -> dict[tuple[str, int], int]:
    """The end offset of each partition: the larger of what ListOffsets says and the
    high-water mark of a fetch (Tansu's ListOffsets can be short by a producer batch; its
    fetch responses are right).  Fetches at most one record per partition."""
    listed = {(tp.topic, tp.partition): int(o) for tp, o in (await probe.end_offsets(tps)).items()}
    probe.assign(tps)
    for tp in tps:
        probe.seek(tp, max(0, listed[(tp.topic, tp.partition)] - 1))
    deadline = asyncio.get_running_loop().time() + min(timeout_s, 3.0)
    while any(probe.highwater(tp) is None for tp in tps) and asyncio.get_running_loop().time() < deadline:
        await probe.getmany(timeout_ms=300, max_records=len(tps))
    return {
        (tp.topic, tp.partition): max(listed[(tp.topic, tp.partition)], probe.highwater(tp) or 0) for tp in tps
    }


def topic_lag(
    consumer: Any,
    next_offset: Callable[[Any], int | None],
    topics: Collection[str] | None = None,
    seen: set[Any] | None = None,
) -> dict[str, int]:
    """Messages not yet processed per topic of ``consumer``'s assignment: the highwater mark
    (from fetch responses) minus ``next_offset(tp)``, the next offset the role will process.
    Partitions not fetched yet, outside ``topics`` or already in ``seen`` are skipped."""
    out: dict[str, int] = {}
    for tp in consumer.assignment():
        if (seen is not None and tp in seen) or (topics is not None and tp.topic not in topics):
            continue
        if seen is not None:
            seen.add(tp)
        try:
            hw = consumer.highwater(tp)
        except Exception:  # noqa: BLE001, S112 - not fetched yet
            continue
        done = next_offset(tp)
        if hw is None or done is None:
            continue
        out[tp.topic] = out.get(tp.topic, 0) + max(0, int(hw) - done)
    return out


class OutputProducer:
    """Publishes the pipeline's outputs; ``flush`` returns once the broker acknowledged all."""

    def __init__(self, servers: str, linger_ms: int = 5, client_kwargs: Mapping[str, Any] | None = None) -> None:
        self.servers = servers
        self.linger_ms = linger_ms
        self.client_kwargs = dict(client_kwargs or {})  # TLS / SASL
        self._producer: AIOKafkaProducer | None = None
        #: True between a successful ``start`` and ``stop``
        self.started = False
        self._partitioner = DefaultPartitioner()
        self._pending: list[tuple[str, asyncio.Future[object]]] = []
        #: messages refused for their content (size, format) since start, per topic
        self.refused: dict[str, int] = {}

    @property
    def producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("OutputProducer.start() was not called")
        return self._producer

    async def start(self) -> None:
        """Create and connect the producer (inside the running event loop); a no-op once started."""
        if self.started:
            return
        self._producer = AIOKafkaProducer(
            bootstrap_servers=self.servers,
            acks="all",
            linger_ms=self.linger_ms,
            max_batch_size=256 * 1024,
            max_request_size=8 * 1024 * 1024,
            **self.client_kwargs,
        )
        try:
            await self._producer.start()
        except KafkaConnectionError as exc:
            raise SinkUnavailable(f"cannot reach Kafka: {exc}") from exc
        self.started = True

    async def stop(self) -> None:
        """Flush and disconnect (a no-op unless started)."""
        if self._producer is not None and self.started:
            self.started = False
            await self._producer.stop()

    async def partitions_for(self, topic: str) -> list[int]:
        return sorted(await self.producer.partitions_for(topic))

    def partition_of(self, key: bytes, partitions: list[int]) -> int:
        """The partition Kafka's default partitioner gives ``key`` (murmur2, like the JVM)."""
        return int(self._partitioner(key, partitions, partitions))

    async def send(
        self, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None
    ) -> None:
        try:
            fut = await self.producer.send(topic, value, key=key, partition=partition)
        except CONTENT_ERRORS as exc:
            self._refuse(topic, len(value), exc)
            return
        self._pending.append((topic, fut))

    async def send_records(self, topic: str, records: Iterable[tuple[int, bytes, bytes | None]]) -> None:
        """Send ``(partition, key, value)`` records (a ``None`` value is a tombstone) to ``topic``
        as one record batch per partition through aiokafka's batch API (no per-message future);
        ``flush`` waits for them like for ``send``.  A record too large for a batch goes alone,
        so a content refusal (logged and counted by ``flush``) costs that record only."""
        builders: dict[int, Any] = {}
        try:
            for partition, key, value in records:
                batch = builders.get(partition)
                if batch is None or batch.append(timestamp=None, key=key, value=value) is None:
                    if batch is not None:
                        await self._send_built(topic, partition, batch)
                    batch = builders[partition] = self.producer.create_batch()
                    batch.append(timestamp=None, key=key, value=value)
            for partition, batch in builders.items():
                await self._send_built(topic, partition, batch)
        except KafkaError as exc:
            raise SinkUnavailable(f"cannot publish to Kafka: {exc!r}") from exc

    async def _send_built(self, topic: str, partition: int, batch: Any) -> None:
        batch.close()
        self._pending.append((topic, await self.producer.send_batch(batch, topic, partition=partition)))

    async def publish_acked(self, messages: Sequence[tuple[str, int, bytes]]) -> None:
        """Send ``(topic, partition, value)`` messages and return once the broker acknowledged
        every one of them, independently of other callers' sends; ``SinkUnavailable`` when any
        was not (none of them counts as stored then)."""
        futures = []
        try:
            for topic, partition, value in messages:
                futures.append(await self.producer.send(topic, value, partition=partition))
        except CONTENT_ERRORS as exc:
            raise SinkUnavailable(f"Kafka refused a message for its content: {exc!r}") from exc
        except KafkaError as exc:
            raise SinkUnavailable(f"cannot publish to Kafka: {exc!r}") from exc
        results = await asyncio.gather(*futures, return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors:
            raise SinkUnavailable(f"{len(errors)} of {len(futures)} Kafka sends failed, first: {errors[0]!r}")

    def _refuse(self, topic: str, size: int, exc: BaseException) -> None:
        self.refused[topic] = self.refused.get(topic, 0) + 1
        log.error("Kafka refused a %d-byte message to %s for its content (%r); it is skipped", size, topic, exc)

    async def flush(self) -> None:
        """Wait until every send so far is acknowledged; raises SinkUnavailable if any failed
        for a reason other than the message's content (those are logged and counted)."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        results = await asyncio.gather(*(f for _, f in pending), return_exceptions=True)
        errors = []
        for (topic, _), r in zip(pending, results, strict=True):
            if isinstance(r, CONTENT_ERRORS):
                self._refuse(topic, -1, r)
            elif isinstance(r, BaseException):
                errors.append(r)
        if errors:
            raise SinkUnavailable(f"{len(errors)} Kafka sends failed, first: {errors[0]!r}")
