"""Which log a topic's partitions belong to: the cluster id and topic id the broker reports.

Kafka (2.8+) and Tansu give every topic a UUID when it is created (Metadata v10+); a
topic that is deleted and created again, or the same name on another cluster or on a
fresh embedded broker, has another id.  aiokafka speaks Metadata only up to v5 (cluster
id, no topic id), so the v10 request and response are declared here with aiokafka's own
protocol types.  A broker without Metadata v10 gives the cluster id alone.
"""

from __future__ import annotations

import asyncio
import uuid
from io import BytesIO
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from aiokafka.protocol.abstract import AbstractType
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Schema,
    TaggedFields,
)

from pipeline.core.ingest.logs import log_identity
from pipeline.errors import SinkUnavailable

_ZERO_UUID = bytes(16)


class _Uuid(AbstractType[bytes]):
    """Kafka's UUID: 16 raw bytes."""

    @classmethod
    def encode(cls, value: bytes) -> bytes:
        return value

    @classmethod
    def decode(cls, data: BytesIO) -> bytes:
        return data.read(16)


class _MetadataResponseV10(Response):
    API_KEY = 3
    API_VERSION = 10
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        ("brokers", CompactArray(
            ("node_id", Int32), ("host", CompactString("utf-8")), ("port", Int32),
            ("rack", CompactString("utf-8")), ("tags", TaggedFields),
        )),
        ("cluster_id", CompactString("utf-8")),
        ("controller_id", Int32),
        ("topics", CompactArray(
            ("error_code", Int16), ("name", CompactString("utf-8")), ("topic_id", _Uuid),
            ("is_internal", Boolean),
            ("partitions", CompactArray(
                ("error_code", Int16), ("partition_index", Int32), ("leader_id", Int32),
                ("leader_epoch", Int32), ("replica_nodes", CompactArray(Int32)),
                ("isr_nodes", CompactArray(Int32)), ("offline_replicas", CompactArray(Int32)),
                ("tags", TaggedFields),
            )),
            ("topic_authorized_operations", Int32), ("tags", TaggedFields),
        )),
        ("cluster_authorized_operations", Int32),
        ("tags", TaggedFields),
    )  # fmt: skip


class _MetadataRequestV10(RequestStruct):
    FLEXIBLE_VERSION = True
    API_KEY = 3
    API_VERSION = 10
    RESPONSE_TYPE = _MetadataResponseV10
    SCHEMA = Schema(
        ("topics", CompactArray(("topic_id", _Uuid), ("name", CompactString("utf-8")), ("tags", TaggedFields))),
        ("allow_auto_topic_creation", Boolean),
        ("include_cluster_authorized_operations", Boolean),
        ("include_topic_authorized_operations", Boolean),
        ("tags", TaggedFields),
    )


class _MetadataV10(Request[_MetadataRequestV10]):
    API_KEY = 3

    def __init__(self, topics: list[str]) -> None:
        self.topics = topics

    def build(self, request_struct_class: type[_MetadataRequestV10]) -> _MetadataRequestV10:
        return request_struct_class([(_ZERO_UUID, t, {}) for t in self.topics], False, False, False, {})


def _identities(obj: dict[str, Any], topics: list[str]) -> dict[str, str]:
    cluster = obj.get("cluster_id") or ""
    found: dict[str, str] = {}
    for t in obj.get("topics") or []:
        if t["error_code"] == 0 and t["name"] in topics:
            tid = t["topic_id"]
            found[t["name"]] = str(uuid.UUID(bytes=tid)) if tid and tid != _ZERO_UUID else ""
    return {name: log_identity(cluster, found[name]) for name in topics if name in found}


async def topic_identities(
    servers: str, topics: list[str], timeout_s: float = 30.0, client_kwargs: dict[str, Any] | None = None
) -> dict[str, str]:
    """topic → its log identity (``cluster/topic-uuid``; ``cluster/`` when the broker reports
    no topic id).  Topics the broker does not know are left out.  ``client_kwargs``: the
    TLS / SASL arguments (``pipeline.kafka_security.client_kwargs``)."""
    admin = AIOKafkaAdminClient(
        bootstrap_servers=servers, request_timeout_ms=int(timeout_s * 1000), **(client_kwargs or {})
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        try:
            resp = await asyncio.wait_for(admin._send_request(_MetadataV10(topics)), timeout_s)  # noqa: SLF001
            return _identities(resp.to_object(), topics)
        except NotImplementedError:  # the broker has no Metadata v10: cluster id only
            cluster = (await admin.describe_cluster()).get("cluster_id") or ""
            described = await admin.describe_topics(topics)
            return {
                t["topic"]: log_identity(cluster, "") for t in described if t["error_code"] == 0
            }
    except (TimeoutError, KafkaError, OSError) as exc:
        raise SinkUnavailable(f"cannot read topic ids from Kafka at {servers}: {exc!r}") from exc
    finally:
        await admin.close()
