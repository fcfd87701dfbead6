"""The correlation role sends one batch while it applies the next: what ``stage`` built for a
batch (ClickHouse rows, lifecycle records, emitted events, changelog bytes) must be a snapshot
that the next batches, ticks and restarts applied to the same correlator cannot change, and
the same as what was staged when each batch waited for its write (the former path)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any
from unittest import mock

from hypothesis import given, settings

from pipeline.core.tasks.correlation import CorrelationConfig, Correlator
from pipeline.roles import runtime
from pipeline.roles.correlate import _Role, _Staged
from pipeline.sinks.kafka import OutputProducer
from tests.unit.test_correlation_fast import T0, _stream


def _role(cfg: CorrelationConfig) -> _Role:
    role = _Role.__new__(_Role)
    role.correlator = Correlator(cfg)
    role.producer = OutputProducer("127.0.0.1:1")  # only its partitioner is used: nothing connects
    role.tasks = SimpleNamespace(changelog_topic_name="tasks-changelog", data={})
    role.agents = SimpleNamespace(changelog_topic_name="agents-changelog", data={})
    role._changelog_parts = {"tasks-changelog": [0, 1, 2, 3], "agents-changelog": [0, 1, 2, 3]}

    async def refresh() -> None:
        return None

    role.erasures = SimpleNamespace(refresh=refresh, keep_rows=lambda rows: rows, keep_messages=lambda m: m)
    role.unwritable = 0
    role.exported = {}
    gauge = SimpleNamespace(labels=lambda *a: SimpleNamespace(set=lambda v: None, inc=lambda v: None))
    role.p = SimpleNamespace(metrics=SimpleNamespace(state_bytes=gauge, state_entries=gauge, state_dropped=gauge))
    return role


def _comparable(staged: _Staged) -> Any:
    """A staged batch as plain values (rows hold datetimes: compared as they are)."""
    return (staged.rows, staged.messages, [(r.reason, r.original) for r in staged.letters], staged.state)


def _staged_run(cfg: CorrelationConfig, steps: list[tuple[str, Any]], pipelined: bool) -> list[Any]:
    """Every step's staged writes; ``pipelined``: compared only at the end (the next steps
    ran in between), else copied at once (the former path: sent before the next step).  The
    clock the rows read is the step's wall time, so two runs can be compared."""
    role = _role(cfg)
    wall = T0
    kept: list[tuple[_Staged, Any]] = []
    for action, arg in steps:
        if action == "restart":  # a new correlator from the persisted state (the tables' contents)
            wall += arg
            tasks = {k: s.to_json() for k, s in role.correlator.tasks.items()}
            agents = {k: a.to_json() for k, a in role.correlator.agents.items()}
            role.correlator = Correlator(cfg)
            role.correlator.restore(tasks, agents, wall)
            continue
        if action == "apply":
            batch, dt = arg
            wall += dt
            out = role.correlator.apply(batch, wall)
        else:
            wall += arg
            out = role.correlator.tick(wall)
        now = datetime.fromtimestamp(wall / 1000, UTC)
        clock = SimpleNamespace(now=lambda tz, now=now: now)
        with mock.patch("pipeline.roles.correlate._wall_ms", lambda wall=wall: wall), \
                mock.patch("pipeline.roles.correlate.datetime", clock):  # fmt: skip
            staged = asyncio.run(role.stage(out))
        kept.append((staged, None if pipelined else copy.deepcopy(_comparable(staged))))
    return [_comparable(s) if pipelined else snapshot for s, snapshot in kept]


@settings(max_examples=150, deadline=None)
@given(_stream())
def test_a_staged_batch_is_not_changed_by_the_batches_after_it(case: tuple[CorrelationConfig, Any]) -> None:
    cfg, steps = case
    at_once = _staged_run(cfg, steps, pipelined=False)
    at_the_end = _staged_run(cfg, steps, pipelined=True)
    assert at_the_end == at_once


def test_a_task_changed_by_the_next_batch_keeps_its_staged_state() -> None:
    """The plain case the property covers: batch 2 changes the task batch 1 staged."""
    from tests.unit.test_correlation_fast import _event

    cfg = CorrelationConfig(reorder_window_s=2.0)
    first = [_event("task.created", "t1", T0, "e1", {"task_type": "code"}),
             _event("task.queued", "t1", T0 + 5, "e2", {})]  # fmt: skip
    second = [_event("task.assigned", "t1", T0 + 9, "e3", {"agent_id": "a1"})]
    steps: list[tuple[str, Any]] = [("apply", (first, 0)), ("apply", (second, 10)), ("tick", 60_000)]
    at_once = _staged_run(cfg, steps, pipelined=False)
    assert _staged_run(cfg, steps, pipelined=True) == at_once
    (_, task_records), _ = at_once[0][3]
    (_, task_records_2), _ = at_once[1][3]
    assert task_records and task_records_2 and task_records[0][2] != task_records_2[0][2]  # the slot did change


class _Exited(BaseException):
    """What the mocked ``os._exit`` raises: the process would be gone."""


def test_a_send_that_fails_for_no_sink_reason_exits_at_once_and_is_never_acked() -> None:
    """Raised in the checkpoint's task, the error would wait for the next commit (on a quiet
    stream: for ever) while the batch stays unwritten and unacked: the process exits instead
    (replayed after a restart); a cancellation (shutdown) is no such error."""
    role = _role(CorrelationConfig())
    acked: list[str] = []
    exits: list[int] = []

    async def ack() -> None:
        acked.append("acked")

    def exit_now(code: int) -> None:
        exits.append(code)
        raise _Exited

    async def broken(staged: _Staged) -> None:
        raise RuntimeError("a client in a broken state")

    async def slow(staged: _Staged) -> None:
        await asyncio.sleep(60)

    async def run(send: Any) -> None:
        role.send = send  # type: ignore[method-assign]
        checkpoint = runtime.Checkpoint()
        await checkpoint.commit(functools.partial(role.send_or_exit, _Staged()), ack, lambda: None)
        task = checkpoint._task
        assert task is not None
        await asyncio.sleep(0.01)
        if not task.done():  # the slow send: cancelled like at shutdown
            checkpoint.cancel()
        with contextlib.suppress(_Exited, asyncio.CancelledError):
            await task  # only to collect it: nothing else awaits it on a quiet stream

    with mock.patch("pipeline.roles.runtime.os._exit", exit_now), mock.patch("logging.shutdown"):
        asyncio.run(run(broken))
        assert (exits, acked) == ([70], [])
        asyncio.run(run(slow))
        assert (exits, acked) == ([70], [])
