"""Publishing from the command line (``emit``, ``ingest``, ``demo`` and the demo of ``up``):
input is checked with the pipeline's own decoder before it is sent, rejects are described
by reason and field path, and a broker that cannot be reached is one line naming the URL
and the fix.  Demo traffic is backfilled into the past or paced in real time, never ahead
of the wall clock."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pipeline.core.ingest.decode import Decoder
from pipeline.demo import DemoFleet
from pipeline.errors import TaskpulseError
from pipeline.events import Rejected
from pipeline.kafka_security import KafkaSecurity
from pipeline.sdk import TaskpulseProducer
from pipeline.settings import Settings, redact

T = TypeVar("T")


class BrokerUnreachable(TaskpulseError):
    """The Kafka broker did not answer."""


def decoder_for(settings: Settings) -> Decoder:
    """The decoder the ingest role runs, with the same limits (TASKPULSE_MAX_*)."""
    from pipeline.roles.ingest import decode_limits
    from pipeline.sinks.privacy import privacy_of

    return Decoder(limits=decode_limits(settings), privacy=privacy_of(settings),
                   keep_original=settings.dlq_keep_original)


def rejects(decoder: Decoder, topic: str, value: bytes, now_ms: int | None = None) -> list[Rejected]:
    """What the pipeline would dead-letter of this message (empty: all accepted)."""
    now = int(time.time() * 1000) if now_ms is None else now_ms
    return [r for r in decoder.decode(topic, 0, 0, value, now) if isinstance(r, Rejected)]


def describe(rejected: Rejected) -> str:
    """``reason: detail`` (the detail names the field path for schema violations)."""
    return f"{rejected.reason.value}: {rejected.detail}"


def broker_error(url: str, exc: BaseException) -> BrokerUnreachable:
    """One line: which broker, what happened, what to do."""
    cause = str(exc).split(": ", 1)[-1] if str(exc) else type(exc).__name__
    return BrokerUnreachable(
        f"cannot reach the Kafka broker at {redact(url)} ({cause[:160]}); is it running? "
        "Set TASKPULSE_KAFKA_URL to the URL `taskpulse up` printed, or to your cluster's "
        "(and TASKPULSE_KAFKA_SECURITY_PROTOCOL / _SASL_* for a managed one)"
    )


def run_publisher(url: str, work: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """``asyncio.run(work())`` with a broker that cannot be reached as ``BrokerUnreachable``."""
    from aiokafka.errors import KafkaConnectionError, KafkaError

    try:
        return asyncio.run(work())
    except (KafkaConnectionError, KafkaError, OSError, TimeoutError) as exc:
        raise broker_error(url, exc) from None


# --------------------------------------------------------------------------- demo


def new_run_id() -> str:
    """A short random run id (6 hex digits)."""
    import secrets

    return secrets.token_hex(3)


@dataclass
class DemoRun:
    """What a demo run published (also what ``up`` shows while it runs)."""

    run_id: str
    published: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    per_task: dict[str, int] = field(default_factory=dict)


def backfill_start(fleet: DemoFleet, events: int, now_ms: int) -> int:
    """Where a backfill of ``events`` events starts so that it ends at about ``now_ms``
    (10 % margin; whatever would still be ahead of the clock waits for it)."""
    span_ms = int(events / fleet.events_per_s() * 1000 * 1.1) + 60_000
    return now_ms - span_ms


async def publish_demo(
    producer: TaskpulseProducer,
    fleet: DemoFleet,
    start_ms: int,
    run: DemoRun,
    events: int | None = None,
    on_progress: Callable[[DemoRun], None] | None = None,
    clock: Callable[[], float] = time.time,
) -> DemoRun:
    """Publish the fleet's events from ``start_ms``: ``events`` of them (and the rest of the
    tasks begun), or forever.  An event is never sent before the wall clock reaches its
    time: past events go at full speed (backfill), the others in real time."""
    last_flush = time.monotonic()
    stream: Iterator[tuple[int, dict[str, Any]]] = fleet.timed(start_ms, events)
    for ts, event in stream:
        ahead = ts / 1000 - clock()
        while ahead > 0:
            await producer.flush()
            await asyncio.sleep(min(ahead, 1.0))
            ahead = ts / 1000 - clock()
        await producer.send(event)
        run.published += 1
        run.first_ms = ts if run.first_ms is None else run.first_ms
        run.last_ms = ts
        if event["entity_type"] == "task":
            run.per_task[event["entity_id"]] = run.per_task.get(event["entity_id"], 0) + 1
        if time.monotonic() - last_flush > 0.2:
            await producer.flush()
            last_flush = time.monotonic()
            if on_progress:
                on_progress(run)
    await producer.flush()
    return run


def demo_producer(url: str, security: KafkaSecurity | None, batch_size: int = 100) -> TaskpulseProducer:
    return TaskpulseProducer(url, batch_size=batch_size, linger_ms=50, security=security)
