"""``Tracker`` (synchronous: a background thread sends) and ``AsyncTracker`` (a task in the
caller's event loop sends): tasks, agents, self-reports, heartbeats.

Emitting never waits for the network: the event is appended to the spool (one ``write``) and
the sender delivers it from there in order, batching what accumulated.  Both trackers are
thread-safe; handles may be used from any thread.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import inspect
import logging
import os
import socket
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import orjson

from taskpulse.envelope import envelope
from taskpulse.spool import FsyncPolicy, Spool
from taskpulse.transport import HttpTransport, KafkaTransport, Transport, TransportUnavailable

log = logging.getLogger("taskpulse")
F = TypeVar("F", bound=Callable[..., Any])

#: the longest stack trace kept on a task.failed event (its end: where it was raised)
MAX_TRACE_CHARS = 16_000
#: open tracked tasks remembered for durations and active counts (beyond: the oldest forgotten)
MAX_OPEN_TASKS = 100_000


class ConfigError(Exception):
    """The tracker's configuration is missing or wrong (the message names the variable)."""


@dataclass
class TrackerStats:
    emitted: int = 0
    #: events the transport acknowledged (duplicates included)
    sent: int = 0
    #: events the endpoint refused for their content, by reason (HTTP transport)
    rejected: dict[str, int] = field(default_factory=dict)
    #: in the spool, not acknowledged yet
    pending: int = 0
    #: deleted unsent because the spool was full (counted, logged)
    dropped: int = 0
    transport: str = ""
    spool_dir: str = ""
    #: the last delivery error while the transport is failing ("" once it delivers again)
    last_error: str = ""


def _rss_mb() -> float | None:
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1_048_576
    except (OSError, ValueError, IndexError):
        return None


class _Core:
    """What both trackers share: event building, the spool, the sender loop."""

    def __init__(
        self,
        transport: Transport,
        *,
        spool: Spool | None = None,
        spool_dir: str | os.PathLike[str] | None = None,
        spool_max_bytes: int = 256 * 1024 * 1024,
        fsync: FsyncPolicy = "interval",
        agent: str | None = None,
        run_id: str | None = None,
        batch_size: int = 500,
        linger_s: float = 0.02,
        retry_max_s: float = 5.0,
        sync_interval_s: float = 1.0,
    ) -> None:
        self.transport = transport
        if spool is None:
            base = Path(spool_dir) if spool_dir else default_spool_base()
            spool = Spool.open_pool(base, "tracker", max_bytes=spool_max_bytes, fsync=fsync)
        self.spool = spool
        self.agent_id = agent or os.environ.get("TASKPULSE_AGENT_ID") or os.environ.get("DROID_ID") or \
            f"agent-{socket.gethostname()}"  # fmt: skip
        self.run_id = run_id if run_id is not None else os.environ.get("TASKPULSE_RUN_ID", "")
        self.batch_size = batch_size
        self.linger_s = linger_s
        self.retry_max_s = retry_max_s
        self.sync_interval_s = sync_interval_s
        self.stats_ = TrackerStats(transport=transport.name, spool_dir=str(spool.directory))
        self._lock = threading.Lock()
        self._active: dict[str, int] = {}
        self._started_at: dict[str, tuple[float, str]] = {}
        self._heartbeats: dict[str, tuple[float, float]] = {}  # agent → (interval, next due)
        self._cpu_mark = (time.monotonic(), time.process_time())
        self._wake: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False
        #: while stopping: return at the first failed delivery instead of retrying
        self._give_up = False
        self._closed = False

    # ------------------------------------------------------------------ emitting

    def emit(
        self,
        event_type: str,
        entity_id: str,
        current_state: Mapping[str, Any] | None = None,
        *,
        metrics: Mapping[str, Any] | None = None,
        metadata: Mapping[str, Any] | None = None,
        timestamp: str | int | float | None = None,
        event_id: str | None = None,
    ) -> str:
        """Spool one event (returns its id); the sender delivers it."""
        event = envelope(event_type, entity_id, current_state, metrics=metrics, metadata=metadata,
                         timestamp=timestamp, event_id=event_id)  # fmt: skip
        self.send_events([event])
        return str(event["id"])

    def send_events(self, events: list[Mapping[str, Any]]) -> None:
        """Spool ready-made envelopes (``id`` and the rest as the envelope schema says)."""
        if self._closed:
            raise RuntimeError("the tracker is closed; events emitted now would be lost")
        # values JSON has no form for (a custom result object, bytes, a set) are sent as their text
        lines = [orjson.dumps(e, default=str) for e in events]
        self.spool.append(lines)
        with self._lock:
            self.stats_.emitted += len(lines)

    def task_key(self, task_id: str) -> str:
        """The entity id of a task: ``run_id/task_id`` when the tracker has a run id (task ids
        such as "1.1" repeat across runs), else the task id."""
        return f"{self.run_id}/{task_id}" if self.run_id and "/" not in task_id else task_id

    def _task_started(self, key: str, agent: str) -> None:
        with self._lock:
            if len(self._started_at) >= MAX_OPEN_TASKS:  # started, never finished: forget the oldest
                old_key = next(iter(self._started_at))
                _, old_agent = self._started_at.pop(old_key)
                self._active[old_agent] = max(0, self._active.get(old_agent, 1) - 1)
            self._started_at[key] = (time.monotonic(), agent)
            self._active[agent] = self._active.get(agent, 0) + 1

    def _task_finished(self, key: str) -> float | None:
        with self._lock:
            started = self._started_at.pop(key, None)
            if started is None:
                return None
            self._active[started[1]] = max(0, self._active.get(started[1], 1) - 1)
            return round((time.monotonic() - started[0]) * 1000, 3)

    def active_tasks(self, agent: str) -> int:
        with self._lock:
            return self._active.get(agent, 0)

    # ------------------------------------------------------------------ sending

    def _sample_usage(self) -> tuple[float, float | None]:
        now, cpu = time.monotonic(), time.process_time()
        then, cpu_then = self._cpu_mark
        self._cpu_mark = (now, cpu)
        return round(max(0.0, (cpu - cpu_then) / max(now - then, 1e-6) * 100), 1), _rss_mb()

    def _beat_due(self) -> None:
        now = time.monotonic()
        for agent, (interval, due) in list(self._heartbeats.items()):
            if now >= due:
                self._heartbeats[agent] = (interval, now + interval)
                cpu, mem = self._sample_usage()
                self.emit("agent.heartbeat", agent, {"cpu_percent": cpu, "memory_mb": mem and round(mem, 1),
                                                     "active_tasks": self.active_tasks(agent)})  # fmt: skip

    async def _run_sender(self) -> None:
        """Deliver the spool in order, forever (until close): read a batch, send it, commit;
        on failure rewind and retry with backoff."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        backoff, last_sync, failing_since = 0.1, time.monotonic(), 0.0
        while True:
            if self._heartbeats:
                self._beat_due()
            if time.monotonic() - last_sync >= self.sync_interval_s:
                await asyncio.to_thread(self.spool.sync)
                last_sync = time.monotonic()
            records, pos = self.spool.read(self.batch_size)
            if not records:
                if self._stopping:
                    return
                await self._sleep(self.linger_s)
                continue
            try:
                delivery = await self.transport.send(records)
            except TransportUnavailable as exc:
                self.spool.rewind()
                if not failing_since:
                    failing_since = time.monotonic()
                    log.warning("taskpulse: %s; events are kept in the spool %s and sent when it answers",
                                exc, self.spool.directory)  # fmt: skip
                with self._lock:
                    self.stats_.last_error = str(exc)
                if self._stopping and self._give_up:
                    return
                await self._sleep(exc.retry_after if exc.retry_after is not None else backoff)
                backoff = min(backoff * 2, self.retry_max_s)
                continue
            self.spool.commit(pos, len(records))
            with self._lock:
                self.stats_.sent += delivery.accepted + delivery.duplicates
                for reason, n in delivery.rejected.items():
                    self.stats_.rejected[reason] = self.stats_.rejected.get(reason, 0) + n
                self.stats_.last_error = ""
            if failing_since:
                log.warning("taskpulse: %s delivers again (after %.0f s)", self.transport.name,
                            time.monotonic() - failing_since)  # fmt: skip
                failing_since = 0.0
            backoff = 0.1

    async def _sleep(self, seconds: float) -> None:
        assert self._wake is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._wake.wait(), seconds)
        self._wake.clear()

    def _poke(self) -> None:
        """Wake the sender (from any thread)."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(wake.set)

    def stats(self) -> TrackerStats:
        sp = self.spool.stats()
        with self._lock:
            s = self.stats_
            return TrackerStats(s.emitted, s.sent, dict(s.rejected), sp.pending, sp.dropped, s.transport,
                                sp.directory, s.last_error)  # fmt: skip

    def _final_words(self) -> None:
        sp = self.spool.stats()
        if sp.pending:
            log.warning("taskpulse: %d events not delivered yet are kept in the spool %s; a tracker started "
                        "on it sends them (%s)", sp.pending, sp.directory,
                        self.stats_.last_error or "closing")  # fmt: skip

    # ------------------------------------------------------------------ handles

    def task(self, task_type: str = "", task_id: str | None = None, **kw: Any) -> TaskHandle:
        return TaskHandle(self, task_type, task_id, **kw)

    def agent(self, agent_id: str | None = None) -> AgentHandle:
        return AgentHandle(self, agent_id or self.agent_id)

    def track(self, task_type: str | None = None, **kw: Any) -> Callable[[F], F]:
        """Decorator: each call of the function is a tracked task (sync or async functions)."""

        def wrap(fn: F) -> F:
            kind = task_type or fn.__name__
            if inspect.iscoroutinefunction(fn):

                @functools.wraps(fn)
                async def run_async(*a: Any, **k: Any) -> Any:
                    async with self.task(kind, **kw) as t:
                        t.result = await fn(*a, **k)
                        return t.result

                return run_async  # type: ignore[return-value]

            @functools.wraps(fn)
            def run(*a: Any, **k: Any) -> Any:
                with self.task(kind, **kw) as t:
                    t.result = fn(*a, **k)
                    return t.result

            return run  # type: ignore[return-value]

        return wrap

    def assign(self, task_id: str, agent: str, evaluations: Mapping[str, float] | None = None, *,
               confidence: float | None = None, method: str | None = None,
               task_type: str | None = None) -> str:  # fmt: skip
        """``task.assigned``: the chosen agent and every evaluated agent's confidence (seed 001)."""
        evals = {str(a): float(c) for a, c in (evaluations or {}).items()}
        if confidence is None:
            confidence = evals.get(agent)
        return self.emit("task.assigned", self.task_key(task_id), {
            "agent_id": agent, "confidence": confidence, "evaluations": evals or None, "method": method,
            "task_type": task_type}, metadata={"triggered_by": "system"})  # fmt: skip

    def start_heartbeat(self, agent: str | None = None, interval_s: float = 30.0) -> None:
        """Send ``agent.heartbeat`` every ``interval_s`` from the sender (process CPU and memory,
        the agent's open tracked tasks) until close."""
        self._heartbeats[agent or self.agent_id] = (interval_s, 0.0)
        self._poke()

    def stop_heartbeat(self, agent: str | None = None) -> None:
        self._heartbeats.pop(agent or self.agent_id, None)

    # seed 004's names ---------------------------------------------------------------

    def report_task_start(self, task_id: str, description: str = "", context: Mapping[str, Any] | None = None, *,
                          agent: str | None = None, task_type: str | None = None) -> str:  # fmt: skip
        """Seed 004: a task begins (created, assigned to this agent, started); returns its key."""
        key = self.task_key(task_id)
        who = agent or self.agent_id
        ctx = dict(context or {})
        base = {"task_type": task_type or ctx.pop("task_type", None), "agent_id": who, "group": self.run_id or None}
        meta = {"triggered_by": who}
        self.send_events([
            envelope("task.created", key, {**base, "request": description or None, "task_id": task_id, **ctx},
                     metadata=meta),
            envelope("task.assigned", key, base, metadata=meta),
            envelope("task.started", key, base, metadata=meta),
        ])  # fmt: skip
        self._task_started(key, who)
        return key

    def report_task_progress(self, task_id: str, progress: float, message: str | None = None) -> str:
        """Seed 004: progress as a fraction 0..1 (``0.5``); a value above 1 is read as percent."""
        pct = float(progress) * 100 if 0 <= float(progress) <= 1 else float(progress)
        return self.emit("task.progress", self.task_key(task_id), {"percentage": round(pct, 3), "step": message,
                                                                   "agent_id": self.agent_id})  # fmt: skip

    def report_task_completion(self, task_id: str, result: Any = None, success: bool = True) -> str:
        """Seed 004: the task finished (``success=False``: a failure with ``result`` as its error)."""
        key = self.task_key(task_id)
        duration = self._task_finished(key)
        if success:
            return self.emit("task.completed", key, {"success": True, "result": result, "agent_id": self.agent_id},
                             metrics={"duration_ms": duration})  # fmt: skip
        err = result.get("error") if isinstance(result, dict) and result.get("error") else result
        return self.emit("task.failed", key, {"error": err, "result": result, "agent_id": self.agent_id},
                         metrics={"duration_ms": duration})  # fmt: skip

    def report_error(self, task_id: str, error: BaseException | str | Mapping[str, Any],
                     context: Mapping[str, Any] | None = None, *, will_retry: bool = False) -> str:  # fmt: skip
        """Seed 004: the task failed with ``error`` (an exception keeps its type and stack)."""
        key = self.task_key(task_id)
        duration = self._task_finished(key)
        return self.emit("task.failed", key, {"error": error_object(error), "will_retry": will_retry,
                                              "agent_id": self.agent_id, "context": dict(context or {}) or None},
                         metrics={"duration_ms": duration})  # fmt: skip

    def report_status(self, status: str, details: Mapping[str, Any] | None = None) -> str:
        """Seed 004: this agent's self-report (initializing, ready, executing, waiting, completed,
        failed, abandoned, timeout); ``details`` may hold task_id, progress (0..1), message."""
        return self.agent().report_status(status, **dict(details or {}))

    def report_resource_usage(self, cpu_percent: float | None = None, memory_mb: float | None = None,
                              disk_io_mb: float | None = None) -> str:  # fmt: skip
        """Seed 004: resource usage, as an ``agent.heartbeat``."""
        return self.agent().report_resource_usage(cpu_percent, memory_mb, disk_io_mb)


def error_object(error: BaseException | str | Mapping[str, Any] | None) -> Any:
    """An error as seed 004's error category: ``{"error_type", "message", "stack_trace"}``."""
    if isinstance(error, BaseException):
        trace = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        return {"error_type": type(error).__name__, "message": str(error) or type(error).__name__,
                "stack_trace": trace[-MAX_TRACE_CHARS:]}  # fmt: skip
    return dict(error) if isinstance(error, Mapping) else error


def default_spool_base() -> Path:
    """``TASKPULSE_SPOOL_DIR``, else ``<TASKPULSE_DATA_DIR or ./.taskpulse>/spool``."""
    explicit = os.environ.get("TASKPULSE_SPOOL_DIR")
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("TASKPULSE_DATA_DIR") or ".taskpulse") / "spool"


def transport_from_env(env: Mapping[str, str] | None = None) -> Transport:
    """TASKPULSE_HTTP_URL (+ TASKPULSE_API_TOKEN) when set, else TASKPULSE_KAFKA_URL (+ the
    TASKPULSE_KAFKA_SECURITY_PROTOCOL / _SASL_* / _SSL_CAFILE of a managed Kafka)."""
    e = os.environ if env is None else env
    if e.get("TASKPULSE_HTTP_URL"):
        return HttpTransport(e["TASKPULSE_HTTP_URL"], e.get("TASKPULSE_API_TOKEN", ""))
    if e.get("TASKPULSE_KAFKA_URL"):
        return KafkaTransport(e["TASKPULSE_KAFKA_URL"], **kafka_options(e))
    raise ConfigError("set TASKPULSE_KAFKA_URL (e.g. kafka://127.0.0.1:9092, the URL `taskpulse up` printed) "
                      "or TASKPULSE_HTTP_URL (a taskpulse API, e.g. http://127.0.0.1:6066, with "
                      "TASKPULSE_API_TOKEN)")  # fmt: skip


def kafka_options(e: Mapping[str, str]) -> dict[str, Any]:
    """aiokafka keyword arguments for TLS / SASL from the pipeline's TASKPULSE_KAFKA_* variables."""
    protocol = e.get("TASKPULSE_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT").upper()
    if protocol == "PLAINTEXT":
        return {}
    out: dict[str, Any] = {"security_protocol": protocol}
    if "SSL" in protocol:
        import ssl

        ctx = ssl.create_default_context(cafile=e.get("TASKPULSE_KAFKA_SSL_CAFILE") or None)
        if e.get("TASKPULSE_KAFKA_SSL_CERTFILE"):
            ctx.load_cert_chain(e["TASKPULSE_KAFKA_SSL_CERTFILE"], e.get("TASKPULSE_KAFKA_SSL_KEYFILE") or None,
                                e.get("TASKPULSE_KAFKA_SSL_KEY_PASSWORD") or None)  # fmt: skip
        out["ssl_context"] = ctx
    if protocol.startswith("SASL"):
        out.update(sasl_mechanism=e.get("TASKPULSE_KAFKA_SASL_MECHANISM", "PLAIN"),
                   sasl_plain_username=e.get("TASKPULSE_KAFKA_SASL_USERNAME", ""),
                   sasl_plain_password=e.get("TASKPULSE_KAFKA_SASL_PASSWORD", ""))  # fmt: skip
    return out


def _env_options(env: Mapping[str, str]) -> dict[str, Any]:
    opts: dict[str, Any] = {}
    if env.get("TASKPULSE_SPOOL_MAX_BYTES"):
        try:
            opts["spool_max_bytes"] = int(env["TASKPULSE_SPOOL_MAX_BYTES"])
        except ValueError:
            raise ConfigError(f"TASKPULSE_SPOOL_MAX_BYTES must be a number of bytes, not "
                              f"{env['TASKPULSE_SPOOL_MAX_BYTES']!r}") from None  # fmt: skip
    if env.get("TASKPULSE_SPOOL_FSYNC"):
        if env["TASKPULSE_SPOOL_FSYNC"] not in ("always", "interval", "never"):
            raise ConfigError("TASKPULSE_SPOOL_FSYNC must be always, interval or never")
        opts["fsync"] = env["TASKPULSE_SPOOL_FSYNC"]
    return opts


# --------------------------------------------------------------------------- the trackers


class Tracker(_Core):
    """Synchronous tracker: no event loop needed from the caller.  A daemon thread runs the
    sender; ``close()`` (also at interpreter exit) delivers what it can within its timeout and
    leaves the rest in the spool for the next tracker on it."""

    def __init__(self, transport: Transport, **kw: Any) -> None:
        super().__init__(transport, **kw)
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._thread_main, name="taskpulse-sender", daemon=True)
        self._thread.start()
        self._ready.wait(5)
        ref = weakref.ref(self)
        atexit.register(_close_at_exit, ref)

    @classmethod
    def from_env(cls, **kw: Any) -> Tracker:
        """Configured by TASKPULSE_KAFKA_URL or TASKPULSE_HTTP_URL + TASKPULSE_API_TOKEN,
        TASKPULSE_SPOOL_DIR / _MAX_BYTES / _FSYNC, TASKPULSE_AGENT_ID, TASKPULSE_RUN_ID."""
        return cls(transport_from_env(), **{**_env_options(os.environ), **kw})

    def _thread_main(self) -> None:
        async def main() -> None:
            task = asyncio.create_task(self._run_sender())
            await asyncio.sleep(0)
            self._ready.set()
            try:
                await task
            finally:
                await self.transport.close()

        asyncio.run(main())

    def flush(self, timeout_s: float = 30.0) -> bool:
        """Wait until everything emitted so far was delivered (True), or ``timeout`` (False: it
        stays in the spool and is still being sent)."""
        target = self.spool.end()
        self._poke()
        deadline = time.monotonic() + timeout_s
        while not self.spool.acknowledged(target):
            if time.monotonic() >= deadline or not self._thread.is_alive():
                return False
            time.sleep(0.005)
        return True

    def close(self, timeout_s: float = 10.0) -> None:
        """Deliver within ``timeout``, stop the sender, release the spool.  Never drops: what
        was not delivered stays in the spool (logged with the count)."""
        if self._closed:
            return
        delivered = self.flush(timeout_s)
        self._closed = True
        self._stopping = True
        self._give_up = True
        self._poke()
        self._thread.join(max(5.0, self.transport_timeout()))
        if not delivered:
            self._final_words()
        self.spool.close()

    def transport_timeout(self) -> float:
        return float(getattr(self.transport, "request_timeout_s", getattr(self.transport, "timeout_s", 10.0))) * 2

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTracker(_Core):
    """Asyncio tracker: the sender runs as a task of the caller's loop (``await start()`` or
    ``async with``).  Emitting is a plain call (it appends to the spool, never awaits)."""

    _sender: asyncio.Task[None] | None = None

    @classmethod
    def from_env(cls, **kw: Any) -> AsyncTracker:
        return cls(transport_from_env(), **{**_env_options(os.environ), **kw})

    async def start(self) -> AsyncTracker:
        if self._sender is None:
            self._sender = asyncio.create_task(self._run_sender())
            await asyncio.sleep(0)
        return self

    async def flush(self, timeout_s: float = 30.0) -> bool:
        target = self.spool.end()
        self._poke()
        deadline = time.monotonic() + timeout_s
        while not self.spool.acknowledged(target):
            if time.monotonic() >= deadline or self._sender is None or self._sender.done():
                return False
            await asyncio.sleep(0.005)
        return True

    async def close(self, timeout_s: float = 10.0) -> None:
        if self._closed:
            return
        delivered = await self.flush(timeout_s)
        self._closed = True
        self._stopping = True
        self._give_up = True
        self._poke()
        if self._sender is not None:
            try:
                await asyncio.wait_for(self._sender, 25)
            except (TimeoutError, asyncio.CancelledError):
                pass
        await self.transport.close()
        if not delivered:
            self._final_words()
        self.spool.close()

    async def __aenter__(self) -> AsyncTracker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


def _close_at_exit(ref: weakref.ref[Tracker]) -> None:
    tracker = ref()
    if tracker is not None:
        tracker.close()


# --------------------------------------------------------------------------- handles


class TaskHandle:
    """One tracked task: ``with`` (or ``async with``) emits created, assigned and started on
    entry; completed on a normal exit (with ``result`` and the duration); failed with the
    error's type, message and stack when an exception leaves the block (re-raised); cancelled
    when the block is cancelled or interrupted."""

    def __init__(
        self,
        core: _Core,
        task_type: str = "",
        task_id: str | None = None,
        *,
        request: str | None = None,
        agent: str | None = None,
        group: str | None = None,
        requester: str | None = None,
        requester_type: str | None = None,
        priority: str | None = None,
        evaluations: Mapping[str, float] | None = None,
        confidence: float | None = None,
        correlation_id: str | None = None,
        retry_count: int = 0,
        **extra: Any,
    ) -> None:
        import uuid

        self.core = core
        self.task_type = task_type or None
        self.key = core.task_key(task_id or f"task-{uuid.uuid4()}")
        self.agent = agent or core.agent_id
        self.group = group or core.run_id or None
        self.request, self.requester, self.requester_type, self.priority = request, requester, requester_type, priority
        self.evaluations = {str(a): float(c) for a, c in (evaluations or {}).items()}
        self.confidence = confidence if confidence is not None else self.evaluations.get(self.agent)
        self.retry_count = retry_count
        self.extra = extra
        self.result: Any = None
        self.finished = False
        self._meta = {"triggered_by": self.agent, "correlation_id": correlation_id}

    @property
    def task_id(self) -> str:
        return self.key

    def _base(self) -> dict[str, Any]:
        return {"task_type": self.task_type, "agent_id": self.agent, "group": self.group}

    def start(self) -> TaskHandle:
        b = self._base()
        self.core.send_events([
            envelope("task.created", self.key, {**b, "request": self.request, "requester_id": self.requester,
                                                "requester_type": self.requester_type, "priority": self.priority,
                                                **self.extra}, metadata=self._meta),
            envelope("task.assigned", self.key, {**b, "confidence": self.confidence,
                                                 "evaluations": self.evaluations or None}, metadata=self._meta),
            envelope("task.started", self.key, b, metadata=self._meta),
        ])  # fmt: skip
        self.core._task_started(self.key, self.agent)
        return self

    def progress(self, percentage: float, step: str | None = None) -> str:
        """``task.progress``: percent done (0..100) and the current step."""
        return self.core.emit("task.progress", self.key, {**self._base(), "percentage": float(percentage),
                                                          "step": step}, metadata=self._meta)  # fmt: skip

    def complete(self, result: Any = None, *, success: bool = True) -> str:
        if result is not None:
            self.result = result
        self.finished = True
        duration = self.core._task_finished(self.key)
        return self.core.emit("task.completed", self.key, {**self._base(), "success": success, "result": self.result},
                              metrics={"duration_ms": duration}, metadata=self._meta)  # fmt: skip

    def fail(self, error: BaseException | str | Mapping[str, Any], *, will_retry: bool = False) -> str:
        self.finished = True
        duration = self.core._task_finished(self.key)
        return self.core.emit("task.failed", self.key, {**self._base(), "error": error_object(error),
                                                        "retry_count": self.retry_count, "will_retry": will_retry,
                                                        "result": self.result},
                              metrics={"duration_ms": duration}, metadata=self._meta)  # fmt: skip

    def cancel(self, reason: str = "") -> str:
        self.finished = True
        self.core._task_finished(self.key)
        return self.core.emit("task.cancelled", self.key, {**self._base(), "reason": reason or None},
                              metadata=self._meta)  # fmt: skip

    def _exit(self, e: BaseException | None) -> None:
        if self.finished:
            return
        if e is None:
            self.complete()
        elif isinstance(e, Exception):
            self.fail(e)
        else:  # CancelledError, KeyboardInterrupt, SystemExit
            self.cancel(type(e).__name__)

    def __enter__(self) -> TaskHandle:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None) -> None:
        self._exit(e)

    async def __aenter__(self) -> TaskHandle:
        return self.start()

    async def __aexit__(self, et: type[BaseException] | None, e: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        self._exit(e)


class AgentHandle:
    """An agent's own events: online / offline, heartbeats, self-reports, resource usage."""

    def __init__(self, core: _Core, agent_id: str) -> None:
        self.core = core
        self.agent_id = agent_id

    def _emit(self, event_type: str, state: Mapping[str, Any], metrics: Mapping[str, Any] | None = None) -> str:
        return self.core.emit(event_type, self.agent_id, state, metrics=metrics,
                              metadata={"triggered_by": self.agent_id})  # fmt: skip

    def online(self, capabilities: list[str] | None = None) -> str:
        return self._emit("agent.online", {"capabilities": capabilities})

    def offline(self, reason: str | None = None) -> str:
        return self._emit("agent.offline", {"reason": reason})

    def heartbeat(self, cpu_percent: float | None = None, memory_mb: float | None = None,
                  active_tasks: int | None = None, **extra: Any) -> str:  # fmt: skip
        """``agent.heartbeat``; ``active_tasks`` defaults to the agent's open tracked tasks."""
        if active_tasks is None:
            active_tasks = self.core.active_tasks(self.agent_id)
        return self._emit("agent.heartbeat", {"cpu_percent": cpu_percent, "memory_mb": memory_mb,
                                              "active_tasks": active_tasks, **extra})  # fmt: skip

    def report_status(self, status: str, task_id: str | None = None, progress: float | None = None,
                      message: str | None = None, **details: Any) -> str:  # fmt: skip
        """``agent.self_report`` (seed 004's statuses; ``progress`` is a fraction 0..1)."""
        key = self.core.task_key(task_id) if task_id else None
        return self._emit("agent.self_report", {"status": status, "task_id": key, "progress": progress,
                                                "message": message, **details})  # fmt: skip

    def report_resource_usage(self, cpu_percent: float | None = None, memory_mb: float | None = None,
                              disk_io_mb: float | None = None) -> str:  # fmt: skip
        usage = {"cpu_percent": cpu_percent, "memory_mb": memory_mb, "disk_io_mb": disk_io_mb}
        return self._emit("agent.heartbeat", {"cpu_percent": cpu_percent, "memory_mb": memory_mb,
                                              "active_tasks": self.core.active_tasks(self.agent_id)},
                          metrics={"resource_usage": {k: v for k, v in usage.items() if v is not None}})  # fmt: skip


__all__ = ["AgentHandle", "AsyncTracker", "ConfigError", "TaskHandle", "Tracker", "TrackerStats", "error_object"]
