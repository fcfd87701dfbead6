"""Every consumer of the worker waits at most ``FETCH_MAX_WAIT_MS`` on a fetch that finds
nothing new: on the embedded broker that wait is latency (it answers only when it runs out).
Faust sets its own consumer's to 1,500 ms; taskpulse's transport overrides it."""

from __future__ import annotations

import asyncio
import inspect
from types import SimpleNamespace

from aiokafka import AIOKafkaConsumer

from pipeline.app import FETCH_MAX_WAIT_MS, LeanApp
from pipeline.roles import runtime
from pipeline.settings import Settings


def test_faust_s_consumer_waits_at_most_the_worker_s_fetch_wait() -> None:
    async def build() -> int:
        app = LeanApp("taskpulse-test", broker="kafka://127.0.0.1:1", store="memory://",
                      value_serializer="raw", key_serializer="raw")  # fmt: skip
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    assert FETCH_MAX_WAIT_MS < 1500
    assert asyncio.run(build()) == FETCH_MAX_WAIT_MS
    # the attribute set is the one aiokafka hands its Fetcher when the consumer starts
    assert "fetch_max_wait_ms=self._fetch_max_wait_ms" in inspect.getsource(AIOKafkaConsumer.start)


def test_a_role_s_consumer_waits_the_same() -> None:
    async def build() -> int:
        p = SimpleNamespace(settings=Settings(), kafka_servers="127.0.0.1:1", kafka_kwargs={})
        consumer = runtime.consumer(p, "ingest", ["t"], auto_commit=False)  # type: ignore[arg-type]
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    assert asyncio.run(build()) == FETCH_MAX_WAIT_MS
