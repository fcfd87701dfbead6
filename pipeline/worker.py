"""One worker process: checks the API tokens, creates the topics, tunes the event loop and
the garbage collector, builds the pipeline, registers its roles and runs Faust's worker."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import json
import logging
import os
from typing import Any

import faust

from pipeline.app import Pipeline, build_pipeline
from pipeline.kafka_security import KafkaSecurity, client_kwargs
from pipeline.roles import register_roles
from pipeline.roles.api import load_tokens
from pipeline.settings import Settings, kafka_bootstrap
from pipeline.sinks.kafka import ensure_topics
from pipeline.topics import ALL_TOPICS

#: mallopt's parameter for the number of arenas (glibc malloc.h)
_M_ARENA_MAX = -8
#: chDB's jemalloc options (it reads ``JE_MALLOC_CONF`` when it loads), unless the environment
#: sets its own: pages chDB frees (each INSERT's, each merge's) go back to the system after
#: 1 s instead of chDB's default 5 s: 25-40 MiB less RSS at the peak.  (0, at once, saves
#: 20 MiB more but costs about 7 µs of CPU per event: chDB faults its pages in again.)
CHDB_MALLOC_CONF = "dirty_decay_ms:1000"


def build(settings: Settings, level: str) -> Pipeline:
    """Everything up to the running worker; raises ``TaskpulseError`` (or ``ValueError`` for
    an unknown role) before anything runs."""
    load_tokens(settings)  # refuses a non-loopback API without a token before anything starts
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log = logging.getLogger("taskpulse.worker")
    log.warning("starting worker with settings %s", json.dumps(settings.masked()))
    asyncio.run(
        ensure_topics(
            kafka_bootstrap(settings.kafka_url),
            ALL_TOPICS,
            settings.partitions,
            settings.topic_retention_ms,
            settings.topic_retention_bytes,
            client_kwargs=client_kwargs(KafkaSecurity.from_settings(settings)),
        )
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    libc = _bound_malloc()
    bound_chdb_malloc()  # before the store loads chDB
    _use_uvloop()
    # Each batch allocates hundreds of thousands of short-lived dicts; the default gen0
    # threshold (700) makes the collector run thousands of times per batch.
    gc.set_threshold(100_000, 50, 100)
    asyncio.set_event_loop(asyncio.new_event_loop())
    pipeline = build_pipeline(settings, settings.kafka_url, settings.effective_clickhouse_url)
    # faust's App logs through the logger of its (sub)class's module
    for name in ("faust.app.base", type(pipeline.app).__module__):
        logging.getLogger(name).addFilter(_drop_sensor_noise)
    register_roles(pipeline, settings.role_list)
    if libc is not None:
        _trim_every(pipeline, libc, 10.0)
    return pipeline


def _bound_malloc() -> Any:
    """glibc's malloc, told to keep two arenas (not eight per core: every thread that
    touched memory, chDB's and the write threads', kept its own, each holding freed memory);
    None where the C library is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_ARENA_MAX, 2)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
    except (OSError, AttributeError):
        return None
    return libc


def bound_chdb_malloc() -> None:
    """chDB's allocator returns the pages it frees within a second (``CHDB_MALLOC_CONF``)."""
    os.environ.setdefault("JE_MALLOC_CONF", CHDB_MALLOC_CONF)


def _trim_every(pipeline: Pipeline, libc: Any, interval_s: float) -> None:
    """Hand memory freed after each batch back to the system now and then: a batch of
    20,000 events allocates and frees a few hundred MiB, which glibc otherwise keeps."""

    @pipeline.app.timer(interval=interval_s)  # type: ignore[misc]
    async def malloc_trim() -> None:
        await asyncio.to_thread(libc.malloc_trim, 0)


def run(pipeline: Pipeline, level: str) -> None:
    """Run the worker until it is stopped (SIGTERM, Ctrl-C)."""
    w = _Worker(pipeline.app, loglevel=level, quiet=True, redirect_stdouts=False)
    w.execute_from_commandline()


class _Worker(faust.Worker):  # type: ignore[misc]
    """A Faust worker without the terminal spinner (it forces DEBUG on the root logger)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.spinner = None


def _drop_sensor_noise(record: logging.LogRecord) -> bool:
    """Faust warns "Missing sensor state for rebalance" on every rebalance of an app without
    sensors' rebalance hooks (ours: metrics come from our own registry): noise, not a fault."""
    return "Missing sensor state for rebalance" not in str(record.msg)


def _use_uvloop() -> None:
    """uvloop makes Faust's per-message scheduling cheaper; plain asyncio if it is missing."""
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
