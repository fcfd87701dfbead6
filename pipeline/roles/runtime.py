"""What every role shares: its Kafka consumer's set-up, the checkpoint (one batch written at a
time, acknowledged only after its write), the offsets it has processed (its lag), and the
start-up retry.  A role module says only what it consumes, computes and writes.

The model is quix-streams' ``Checkpoint.commit``: flush the sinks, then commit the offsets,
in one place.  Retries wait with ``pipeline.backoff.Backoff``; sink writes go through
``SinkRetry`` (the exception type decides the policy); metrics register into the worker's
one registry (``Pipeline.registry``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener

from pipeline.app import FETCH_MAX_WAIT_MS, Pipeline
from pipeline.backoff import Backoff
from pipeline.errors import SinkUnavailable

log = logging.getLogger(__name__)

Step = Callable[[], Awaitable[None]]


def consumer(
    p: Pipeline,
    group_suffix: str,
    topics: Iterable[str],
    listener: ConsumerRebalanceListener | None = None,
    *,
    auto_commit: bool,
    max_poll_records: int = 5000,
    **tuning: Any,
) -> AIOKafkaConsumer:
    """A subscribed (not yet started) consumer of ``topics`` in the group
    ``<TASKPULSE_CONSUMER_GROUP>-<group_suffix>``, with the worker's Kafka security, session
    timeout and heartbeat; from the earliest retained record when the group is new.
    ``auto_commit``: offsets committed every ``commit_interval_s`` (else the role commits)."""
    s = p.settings
    if auto_commit:
        tuning["auto_commit_interval_ms"] = int(s.commit_interval_s * 1000)
    tuning.setdefault("fetch_max_wait_ms", FETCH_MAX_WAIT_MS)
    c = AIOKafkaConsumer(
        bootstrap_servers=p.kafka_servers,
        **p.kafka_kwargs,
        group_id=f"{s.consumer_group}-{group_suffix}",
        enable_auto_commit=auto_commit,
        auto_offset_reset="earliest",
        session_timeout_ms=int(s.session_timeout_s * 1000),
        heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
        max_poll_records=max_poll_records,
        **tuning,
    )
    c.subscribe(list(topics), **({} if listener is None else {"listener": listener}))
    return c


class Checkpoint:
    """One batch in flight: batch N+1 is computed while batch N is written; a batch is
    acknowledged (acked or committed) only after its write, and batches stay in order."""

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None

    async def commit(self, write: Step, ack: Step | None = None, done: Callable[[], None] | None = None) -> None:
        """Wait for the batch in flight, then start writing this one: ``write``, ``ack`` (if
        any: a timer's batch acknowledges no message), then ``done`` (bookkeeping, if any)."""
        await self.wait()

        async def run() -> None:
            await write()
            if ack is not None:
                await ack()
            if done is not None:
                done()

        self._task = asyncio.create_task(run())

    async def wait(self) -> None:
        """Until the batch in flight (if any) is written and acknowledged."""
        task, self._task = self._task, None
        if task is not None:
            await task

    def cancel(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()


async def or_exit(step: Step, what: str) -> None:
    """Run ``step`` (a batch's write); an error no sink retry handles (a bug, a client in a
    broken state, which a fresh process may cure) exits the process (70).  Stalling would
    hide it, skipping would lose data, and raised inside a ``Checkpoint``'s task it would
    surface only at the next commit (on a quiet stream: never), the batch unacked.  A restart
    replays from the last committed offset (the watermarks and the correlator's deterministic
    records keep that exact)."""
    try:
        await step()
    except asyncio.CancelledError:
        raise
    except Exception:
        log.critical("cannot write %s; exiting so it is replayed", what, exc_info=True)
        logging.shutdown()
        os._exit(70)


def record_offsets(last: dict[tuple[str, int], int], processed: Iterable[tuple[str, int, int]]) -> None:
    """Move each partition's last processed offset forward (never back) to what was processed."""
    for topic, partition, offset in processed:
        tp = (topic, partition)
        if offset > last.get(tp, -1):
            last[tp] = offset


def faust_acker(stream: Any, events: Sequence[Any], last: dict[tuple[str, int], int]) -> Step:
    """The ack of a Faust micro-batch: ack every event (their offsets may then be committed)
    and record the offsets as processed."""

    async def ack() -> None:
        for e in events:
            await stream.ack(e)
        record_offsets(last, ((e.message.topic, e.message.partition, e.message.offset) for e in events))

    return ack


async def until_ready(step: Step, what: str, on_error: Callable[[str], None] | None = None) -> None:
    """Run ``step`` until it does not raise ``SinkUnavailable`` (ClickHouse or Kafka away),
    waiting with backoff in between; ``on_error`` sees each error's text."""
    backoff = Backoff(0.2, 5.0)
    while True:
        try:
            await step()
            return
        except SinkUnavailable as exc:
            log.warning("%s; retrying %s in %.1fs", exc, what, backoff.delay)
            if on_error is not None:
                on_error(str(exc))
            await backoff.sleep()
