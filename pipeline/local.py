"""The local stack of ``taskpulse up``: an embedded broker (unless TASKPULSE_KAFKA_URL names
one), a worker process, demo traffic and the live status view, started and stopped together."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
from rich.live import Live

from pipeline.embedded import terminate
from pipeline.output import console, fail
from pipeline.query import auth_headers, get_status
from pipeline.settings import Settings


@contextlib.contextmanager
def embedded(settings: Settings) -> Iterator[tuple[str, int | None]]:
    """(Kafka URL, embedded broker pid): the configured broker, or an embedded one."""
    if settings.kafka_url:
        yield settings.kafka_url, None
        return
    from pipeline.embedded import EmbeddedBroker

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    with EmbeddedBroker(log_path=settings.data_dir / "tansu.log") as broker:
        yield broker.url, broker.proc.pid if broker.proc else None


def spawn_worker(settings: Settings, kafka_url: str, log_path: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TASKPULSE_KAFKA_URL": kafka_url}
    if settings.embedded_kafka:  # the embedded broker speaks PLAINTEXT whatever the environment says
        env["TASKPULSE_KAFKA_SECURITY_PROTOCOL"] = "PLAINTEXT"
    out = open(log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline", "worker"], stdout=out, stderr=subprocess.STDOUT, env=env
    )


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> None:
    """Stop the worker: SIGTERM, then SIGKILL after ``timeout_s``."""
    terminate(proc, timeout_s, 5)


async def up_loop(
    settings: Settings,
    kafka_url: str,
    proc: subprocess.Popen[bytes],
    demo: bool,
    rate: float,
    duration: float,
    broker_pid: int | None = None,
) -> None:
    import psutil

    from pipeline.status import RateTracker, render

    def broker_mib() -> int | None:
        # Tansu's memory storage keeps every message (it does not apply retention.ms):
        # show its size so a long demo run does not surprise anyone.
        if broker_pid is None:
            return None
        with contextlib.suppress(psutil.Error):
            return int(psutil.Process(broker_pid).memory_info().rss / 2**20)
        return None

    import signal

    # SIGTERM (`timeout`, a service manager) and SIGHUP (the terminal closed) stop like
    # Ctrl-C: the worker and the embedded broker with it, never left behind
    stopping = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGHUP):
        asyncio.get_running_loop().add_signal_handler(sig, stopping.set)
    api = settings.effective_api_url
    headers = auth_headers(settings)
    published = [0]
    demo_task: asyncio.Task[None] | None = None
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        with console.status("starting the worker (opening ClickHouse, joining the consumer group)…"):
            while (status := await get_status(session, api, headers)) is None and not stopping.is_set():
                if proc.poll() is not None:
                    fail(f"the worker exited with code {proc.returncode}; see {settings.data_dir / 'worker.log'}")
                await asyncio.sleep(0.5)
        if status is None:  # stopped while starting
            return
        console.print(f"[bold]web UI: {api}/[/]  (open it in a browser: cards, task board, agents, charts)")
        if demo:
            from pipeline.publish import new_run_id

            run_id = new_run_id()
            console.print(f"demo traffic: run {run_id} (tasks task-{run_id}-…, groups batch-{run_id}-…), "
                          f"{rate:g} tasks/s in real time", soft_wrap=True)  # fmt: skip
            demo_task = asyncio.create_task(demo_traffic(settings, kafka_url, rate, published, run_id))
        rates = RateTracker()
        hint = f"web UI {api}/ · Ctrl-C to stop · taskpulse sql \"SELECT …\" in another terminal"
        try:
            with Live(render(status, rates), console=console, refresh_per_second=2) as live:
                while (not duration or time.monotonic() - started < duration) and not stopping.is_set():
                    await asyncio.sleep(1.0)
                    if proc.poll() is not None:
                        fail(f"the worker exited with code {proc.returncode}; see {settings.data_dir / 'worker.log'}")
                    status = await get_status(session, api, headers) or status
                    extra = {"published": published[0], "hint": hint, "broker_mib": broker_mib()}
                    live.update(render(status, rates, extra))
        finally:
            if demo_task:
                demo_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await demo_task


async def demo_traffic(
    settings: Settings, kafka_url: str, tasks_per_s: float, published: list[int], run_id: str = ""
) -> None:
    """Publish the demo fleet's events in real time (event time = now), under a run id of
    its own so a `taskpulse demo` beside it never mixes with its tasks."""
    import random

    from pipeline.demo import DemoFleet
    from pipeline.kafka_security import KafkaSecurity
    from pipeline.publish import DemoRun, demo_producer, new_run_id, publish_demo

    run = DemoRun(run_id or new_run_id())
    fleet = DemoFleet(seed=random.randrange(2**31), tasks_per_s=tasks_per_s, run_id=run.run_id)
    security = None if settings.embedded_kafka else KafkaSecurity.from_settings(settings)

    def progress(r: DemoRun) -> None:
        published[0] = r.published
        r.per_task.clear()  # runs forever: keep no per-task counts

    async with demo_producer(kafka_url, security, batch_size=50) as producer:
        await publish_demo(producer, fleet, int(time.time() * 1000), run, on_progress=progress)
