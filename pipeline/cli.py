"""The ``taskpulse`` command line: typer glue only.  The local stack lives in ``local``, the
query client in ``query``, how results are shown in ``output``."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import orjson
import typer
from rich.live import Live

from pipeline.errors import TaskpulseError
from pipeline.local import embedded, spawn_worker, stop, up_loop
from pipeline.output import (
    console,
    err,
    fail,
    print_findings,
    print_replay_report,
    print_rows,
    print_schema_status,
)
from pipeline.query import Querier, auth_headers, get_status, worker_answers, worker_call
from pipeline.settings import Settings, install_log_redaction, load_settings, secret_values

cli = typer.Typer(
    name="taskpulse",
    help="See what fleets of AI agents and task runners are doing.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
alerts_app = typer.Typer(help="Alert rules and alert history.", no_args_is_help=True)
export_app = typer.Typer(help="Export data (CSV).", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (TASKPULSE_API_TOKENS_FILE).", no_args_is_help=True)
dlq_app = typer.Typer(help="Rejected input: list, show, replay after a fix.", no_args_is_help=True)
cli.add_typer(dlq_app, name="dlq")
cli.add_typer(alerts_app, name="alerts")
cli.add_typer(export_app, name="export")
cli.add_typer(token_app, name="token")
privacy_app = typer.Typer(help="One person's data: export it (portability) or erase it.", no_args_is_help=True)
cli.add_typer(privacy_app, name="privacy")


def _settings() -> Settings:
    try:
        settings = load_settings()
    except TaskpulseError as exc:
        fail(str(exc))
    install_log_redaction(secret_values(settings))
    return settings


# --------------------------------------------------------------------------- worker


@cli.command()
def worker(
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR")] = "",
    roles: Annotated[
        str, typer.Option(help="Comma-separated: ingest, correlate, alerts, metrics (default: all; TASKPULSE_ROLES)")
    ] = "",
) -> None:
    """Run the pipeline worker (Faust): ingest, correlate, alert and export metrics."""
    settings = _settings()
    if roles:
        settings = settings.model_copy(update={"roles": roles})
    if not settings.kafka_url:
        fail(
            "the worker needs TASKPULSE_KAFKA_URL (e.g. kafka://127.0.0.1:9092); "
            "`taskpulse up` starts an embedded broker and a worker for you"
        )
    from pipeline import worker as process

    level = (log_level or settings.log_level).upper()
    try:
        pipeline = process.build(settings, level)
    except (ValueError, TaskpulseError) as exc:
        fail(str(exc))
    process.run(pipeline, level)


@cli.command("api")
def api_command(
    log_level: Annotated[str, typer.Option(help="DEBUG, INFO, WARNING, ERROR")] = "",
) -> None:
    """Serve the HTTP API alone (no pipeline): queries through the read-only ClickHouse user
    (TASKPULSE_CLICKHOUSE_READ_URL), HTTP ingest to Kafka (TASKPULSE_KAFKA_URL); scale it freely."""
    settings = _settings()
    import logging

    import uvicorn

    from pipeline.roles import api

    level = (log_level or settings.log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("taskpulse.api").warning("starting API with settings %s", json.dumps(settings.masked()))
    try:
        app, _ = api.standalone(settings)
    except TaskpulseError as exc:
        fail(str(exc))
    uvicorn.run(app, host=settings.api_host, port=settings.api_port, **api.uvicorn_options(settings))


# --------------------------------------------------------------------------- up


@cli.command()
def up(
    demo: Annotated[bool, typer.Option(help="Publish realistic demo traffic.")] = True,
    rate: Annotated[float, typer.Option(help="Demo tasks started per second.")] = 20.0,
    duration: Annotated[float, typer.Option(help="Stop after this many seconds (0: run until Ctrl-C).")] = 0.0,  # noqa: E501
) -> None:
    """Start the embedded stack (broker, ClickHouse, worker), demo traffic and a live status view."""
    settings = _settings()
    if _answers(settings):
        fail(
            f"a taskpulse worker already answers at {settings.effective_api_url}: stop it first, or give this "
            "stack another port (TASKPULSE_API_PORT=6067 for `up` and the commands you run beside it)"
        )
    if not settings.clickhouse_url:
        from pipeline.query import refuse_if_held

        refuse_if_held((settings.data_dir / "clickhouse").resolve(), settings)
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_path = settings.data_dir / "worker.log"
    _interrupt_on(signal.SIGTERM, signal.SIGHUP)  # until the live view takes them over
    proc = None
    try:
        with embedded(settings) as (kafka_url, broker_pid):
            console.print(f"[bold]taskpulse[/] broker {kafka_url}, ClickHouse {settings.effective_clickhouse_url}")
            console.print(f"worker log: {log_path}; API: {settings.effective_api_url}")
            try:
                proc = spawn_worker(settings, kafka_url, log_path)
                asyncio.run(up_loop(settings, kafka_url, proc, demo, rate, duration, broker_pid))
            finally:
                if proc is not None:
                    console.print("stopping worker…")
                    stop(proc)
    except KeyboardInterrupt:
        pass
    console.print("stopped.")


def _interrupt_on(*signals: signal.Signals) -> None:
    """Make these signals stop `up` like Ctrl-C (a KeyboardInterrupt), so the worker and the
    embedded broker are stopped too, also while the stack is still starting."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for sig in signals:
        signal.signal(sig, interrupt)


def _answers(settings: Settings) -> bool:
    """Whether anything listens on the API port already (another `up` or worker)."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(settings.effective_api_url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 80), timeout=2):
            return True
    except OSError:
        return False


# --------------------------------------------------------------------------- producers


@cli.command()
def emit(
    event_type: Annotated[str, typer.Argument(help="e.g. task.created")],
    entity_id: Annotated[str, typer.Argument(help="the task / agent / component / user id")],
    state: Annotated[str, typer.Option("--state", "-s", help="current_state as JSON")] = "{}",
    metrics: Annotated[str, typer.Option(help="metrics as JSON, e.g. '{\"duration_ms\": 150}'")] = "{}",
    metadata: Annotated[str, typer.Option(help="metadata as JSON")] = "{}",
    timestamp: Annotated[str, typer.Option(help="event time: ISO 8601 or epoch s/ms; default now")] = "",
    validate: Annotated[bool, typer.Option("--validate/--no-validate", help="Check the event with the "
                                           "pipeline's decoder first (exit 1 when it would be rejected).")] = True,
) -> None:
    """Publish one event (checked first: exit 1 and the reason when the pipeline would reject it)."""
    from pipeline.publish import decoder_for, describe, rejects
    from pipeline.sdk import TaskpulseProducer, make_event
    from pipeline.topics import RAW_TOPICS

    settings = _settings()
    url = _require_kafka(settings)
    parsed: dict[str, Any] = {}
    for name, text in (("state", state), ("metrics", metrics), ("metadata", metadata)):
        try:
            parsed[name] = orjson.loads(text)
        except orjson.JSONDecodeError as exc:
            fail(f"--{name} is not valid JSON ({exc}); give an object, e.g. '{{\"task_type\": \"research\"}}'")
        if not isinstance(parsed[name], dict):
            fail(f"--{name} must be a JSON object ({{...}}), got {type(parsed[name]).__name__}: {text[:60]}")
    event = make_event(
        event_type, entity_id, parsed["state"], metrics=parsed["metrics"], metadata=parsed["metadata"],
        timestamp=_timestamp_arg(timestamp) if timestamp else None,
    )  # fmt: skip
    if validate:
        topic = RAW_TOPICS.get(str(event["entity_type"]), RAW_TOPICS["system"])
        bad = rejects(decoder_for(settings), topic, orjson.dumps(event))
        if bad:
            err.print(f"[bold red]rejected, not published:[/] {describe(bad[0])}", soft_wrap=True, highlight=False)
            err.print("(the pipeline would dead-letter it; --no-validate sends it anyway)", style="dim")
            raise typer.Exit(1)

    async def go() -> None:
        async with TaskpulseProducer(url, batch_size=1, security=_kafka_security(settings)) as p:
            await p.send(event)

    _publish(url, go)
    console.print(f"published {event_type} {entity_id} id={event['id']}")


def _timestamp_arg(value: str) -> str | int | float:
    """``--timestamp``: an epoch number stays a number (the decoder reads s/ms/µs/ns)."""
    try:
        return int(value)
    except ValueError:
        try:
            return float(value)
        except ValueError:
            return value


def _publish(url: str, work: Any) -> Any:
    """Run a producer coroutine; an unreachable broker is one line and exit 2."""
    from pipeline.output import quiet_client_logs
    from pipeline.publish import run_publisher

    quiet_client_logs()
    try:
        return run_publisher(url, work)
    except TaskpulseError as exc:
        fail(str(exc))


def _kafka_security(settings: Settings) -> Any:
    """The TLS / SASL of TASKPULSE_KAFKA_* for the SDK producers the commands use."""
    from pipeline.kafka_security import KafkaSecurity, client_kwargs

    security = KafkaSecurity.from_settings(settings)
    try:
        client_kwargs(security)  # unreadable CA / certificate files, SASL without a user: say so
    except TaskpulseError as exc:
        fail(str(exc))
    return security


def _require_kafka(settings: Settings) -> str:
    if not settings.kafka_url:
        fail(
            "set TASKPULSE_KAFKA_URL to the broker (the URL `taskpulse up` printed, "
            "or your Kafka cluster, e.g. kafka://127.0.0.1:9092)"
        )
    return settings.kafka_url


@cli.command("demo")
def demo_cmd(
    events: Annotated[int, typer.Option(help="Publish this many events, then finish the tasks begun.")] = 10_000,
    rate: Annotated[float, typer.Option(help="Tasks started per second.  0 (default): backfill — the "
                                        "events end at about now, published at full speed; >0: "
                                        "real time from now at this load.")] = 0.0,
    run_id: Annotated[str, typer.Option(help="In every task and group id (task-<run>-…); default: random")] = "",
    batch_size: Annotated[int, typer.Option(help="Events per Kafka message (1: one each).")] = 100,
    seed: Annotated[int | None, typer.Option(help="Random seed (the same run id and seed re-send the "
                                             "same events, counted once); default: random")] = None,
) -> None:
    """Publish realistic synthetic traffic (a fleet taking tasks through the lifecycle).
    Never stamps an event in the future; runs beside others without mixing their tasks."""
    import random

    from rich.progress import Progress

    from pipeline.demo import DemoFleet
    from pipeline.publish import DemoRun, backfill_start, demo_producer, new_run_id, publish_demo

    settings = _settings()
    url = _require_kafka(settings)
    run = DemoRun(run_id or new_run_id())
    fleet = DemoFleet(seed=random.randrange(2**31) if seed is None else seed, run_id=run.run_id,
                      tasks_per_s=rate or 20.0)  # fmt: skip
    now_ms = int(time.time() * 1000)
    start = now_ms if rate else backfill_start(fleet, events, now_ms)

    async def go() -> None:
        async with demo_producer(url, _kafka_security(settings), batch_size) as p:
            with Progress(console=err, transient=True) as bar:
                task = bar.add_task(f"demo run {run.run_id}", total=events)
                await publish_demo(p, fleet, start, run, events, lambda r: bar.update(task, completed=r.published))

    try:
        _publish(url, go)
    except KeyboardInterrupt:
        pass
    span = ""
    if run.first_ms is not None and run.last_ms is not None:
        span = f", event times {_utc(run.first_ms)} .. {_utc(run.last_ms)} UTC"
    console.print(
        f"published {run.published:,} events of demo run {run.run_id}: {len(run.per_task):,} tasks "
        f"(task-{run.run_id}-…, groups batch-{run.run_id}-…){span}", soft_wrap=True,
    )  # fmt: skip


def _utc(ms: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


@cli.command()
def ingest(
    path: Annotated[Path, typer.Argument(help="A file, or a directory of seed 004 logs (agent-log) or CSVs")],
    fmt: Annotated[str, typer.Option("--format", help="ndjson (taskpulse events), agent-log (seed 004 NDJSON "
                                     "logs), task-csv (seed 001 CSV); default: from the path")] = "auto",
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep reading appended lines (rotation and "
                                         "truncation handled; the position survives a restart).")] = False,
    state: Annotated[Path | None, typer.Option(help="Where --follow keeps its position (default: under "
                                               "TASKPULSE_DATA_DIR/follow/)")] = None,
    validate: Annotated[bool, typer.Option("--validate/--no-validate", help="Check each line with the "
                                           "pipeline's decoder; rejected ndjson lines are not sent.")] = True,
) -> None:
    """Publish the events of a file (or a directory).  ndjson: each line is checked with the
    pipeline's decoder first, rejected lines are printed (line number, reason, field) and not
    sent.  agent-log / task-csv: each line is mapped to taskpulse events with ids derived from
    its fields (reading again never counts twice); lines of unknown shape go to the DLQ with
    their reason.  The exit code is 1 when any line was rejected."""
    from pipeline.follow import Follower
    from pipeline.logsource import FORMATS, Problem, detect_format, files_of, ingest, state_file
    from pipeline.publish import decoder_for
    from pipeline.sdk import TaskpulseProducer

    settings = _settings()
    url = _require_kafka(settings)
    if not path.exists():
        fail(f"{path}: no such file or directory")
    kind = detect_format(path) if fmt == "auto" else fmt
    if kind not in FORMATS:
        fail(f"--format {fmt}: use one of {', '.join(FORMATS)} (or leave it out: chosen from the path)")
    files = files_of(path, kind)
    if not files:
        fail(f"{path}: no {'*.csv' if kind == 'task-csv' else '*.ndjson'} files in it")
    store = (state or state_file(settings.data_dir, path, kind)) if follow else None
    try:
        follower = Follower(files, store)
    except ValueError as exc:
        fail(str(exc))
    decoder = decoder_for(settings) if validate else None
    shown = {"n": 0}

    def problem(p: Problem) -> None:
        shown["n"] += 1
        if shown["n"] <= 50:
            where = f"{p.path}:{p.lineno}" if p.lineno else f"task {p.path}"
            verb = "rejected: " if kind == "ndjson" else ""
            err.print(f"{where}: {verb}{p.text}", soft_wrap=True, highlight=False, markup=False)

    result: dict[str, Any] = {}

    async def go() -> None:
        # ndjson lines go as they are (a line may be an array): one message each
        batch = 1 if kind == "ndjson" else 100
        async with TaskpulseProducer(url, batch_size=batch, security=_kafka_security(settings)) as p:
            result["counts"] = await ingest(p, follower, kind, decoder, follow=follow, on_problem=problem,
                                            discover=(lambda: files_of(path, kind)) if path.is_dir() else None)

    with contextlib.suppress(KeyboardInterrupt):
        _publish(url, go)
    follower.close()
    for note in follower.notes:
        err.print(note, soft_wrap=True, highlight=False, markup=False)
    c = result.get("counts")
    if c is None:
        return
    if kind == "ndjson":
        summary = f"published {c.events:,} lines from {path}"
        if c.not_sent:
            err.print(f"{summary}; {c.not_sent:,} rejected lines not sent (--no-validate sends them)",
                      soft_wrap=True, highlight=False)  # fmt: skip
            raise typer.Exit(1)
        console.print(summary, soft_wrap=True)
        return
    skipped = ", ".join(f"{n} {k}" for k, n in sorted(c.skipped.items()))
    summary = (f"published {c.events:,} events from {c.lines:,} lines of {path} ({kind})"
               + (f"; skipped: {skipped}" if skipped else ""))  # fmt: skip
    if c.dead_lettered or c.rejected_events:
        err.print(f"{summary}; to the DLQ with their reason: {c.dead_lettered:,} lines that map to no event, "
                  f"{c.rejected_events:,} events the decoder rejects", soft_wrap=True, highlight=False)  # fmt: skip
        raise typer.Exit(1)
    console.print(summary, soft_wrap=True)


# --------------------------------------------------------------------------- analysts


@cli.command()
def sql(
    query: Annotated[str, typer.Argument(help="A ClickHouse SQL query")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table, tsv or json")] = "table",
) -> None:
    """Run a SQL query on the taskpulse ClickHouse (through the running worker if there is one)."""
    settings = _settings()
    columns, rows = Querier(settings)(query)
    print_rows(columns, rows, fmt)


@cli.command()
def migrate(
    status_only: Annotated[bool, typer.Option("--status", help="List applied and pending steps and the TTLs "
                                              "against the settings; change nothing.")] = False,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json (--status)")] = "table",
) -> None:
    """Bring the ClickHouse schema to this version: pending migration steps, then TTL changes."""
    settings = _settings()
    if status_only:
        answer = worker_call(settings, "GET", "/api/schema")
        status = answer[1] if answer is not None and answer[0] == 200 else _direct_schema_status(settings)
        if fmt == "json":
            sys.stdout.write(json.dumps(status) + "\n")
        else:
            print_schema_status(status)
        return
    if settings.effective_clickhouse_url.startswith("chdb") and worker_answers(settings):
        _migrated_by_worker(settings)
        return
    from pipeline.sinks.clickhouse import ClickHouseStore

    if not settings.clickhouse_url:
        from pipeline.query import refuse_if_held

        refuse_if_held((settings.data_dir / "clickhouse").resolve(), settings, for_migrate=True)
    try:
        store = ClickHouseStore.from_settings(settings)
        before = store.schema_status()
        ran = store.migrate(applied_by="taskpulse migrate")
        after = store.schema_status()
    except TaskpulseError as exc:
        fail(str(exc))
        return
    for step in before["steps"]:
        if step["state"] == "pending":
            console.print(f"applied step {step['version']}: {step['name']}")
    for stmt in ran:
        if " MODIFY TTL " in stmt:
            console.print(f"retention: {stmt}")
    console.print(
        f"schema of {settings.clickhouse_database} at version {after['db_version']} "
        f"({len(before['pending'])} step(s) applied, {len(ran)} statements)"
    )


def _migrated_by_worker(settings: Settings) -> None:
    """chDB is open in the running worker (one engine per process): it migrated at start;
    say so, or what is left and how to apply it."""
    answer = worker_call(settings, "GET", "/api/schema")
    status = answer[1] if answer is not None and answer[0] == 200 else {}
    differs = [t["table"] for t in status.get("ttl", []) if t["state"] == "differs"]
    if not status or status["pending"] or differs:
        fail(
            f"the embedded database is open in the worker at {settings.effective_api_url} (pending steps: "
            f"{status.get('pending')}, TTLs that differ: {differs}); restart the worker with "
            "TASKPULSE_AUTO_MIGRATE=true, or stop it and run `taskpulse migrate`"
        )
    console.print(f"schema of {settings.clickhouse_database} at version {status['db_version']}: applied by the "
                  "running worker at start, nothing pending")


def _direct_schema_status(settings: Settings) -> dict[str, Any]:
    from pipeline.sinks.clickhouse import ClickHouseStore

    try:
        return ClickHouseStore.from_settings(settings).schema_status()
    except TaskpulseError as exc:
        fail(str(exc))
        raise


@cli.command()
def status(
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh every second.")] = False,
    group: Annotated[str, typer.Option("--group", "-g", help="Progress of one task group (batch, week, correlation id)")] = "",  # noqa: E501
) -> None:
    """Show the running worker's status, or the live progress of a task group."""
    from pipeline.status import RateTracker, render, render_group

    settings = _settings()
    api = settings.effective_api_url
    if group:
        from pipeline.core.tasks.queries import group_states, group_summary

        query = Querier(settings)
        db = settings.clickhouse_database

        def frame() -> Any:
            cols, rows = query(*group_summary(db, group))
            _, states = query(*group_states(db, group))
            if not rows:
                fail(f"no tasks in group {group!r} (groups come from the task's `group` or correlation id)")
            return render_group(dict(zip(cols, rows[0], strict=True)), {str(k): int(n) for k, n in states})

        with contextlib.suppress(KeyboardInterrupt):
            if not watch:
                console.print(frame())
                return
            with Live(frame(), console=console) as live:
                while True:
                    time.sleep(1)
                    live.update(frame())
        return

    async def go() -> None:
        rates = RateTracker()
        headers = auth_headers(settings)
        async with aiohttp.ClientSession() as s:
            st = await get_status(s, api, headers)
            if st is None:
                fail(f"no worker answers at {api} (start one with `taskpulse up`)")
                return
            if not watch:  # rates need two samples: take the second a second later
                render(st, rates)
                await asyncio.sleep(1)
                console.print(render(await get_status(s, api, headers) or st, rates))
                return
            with Live(render(st, rates), console=console) as live:
                while True:
                    await asyncio.sleep(1)
                    st = await get_status(s, api, headers) or st
                    live.update(render(st, rates))

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(go())


@cli.command()
def schemas(
    out: Annotated[Path, typer.Option(help="Where to write them")] = Path("schemas"),
) -> None:
    """Write the JSON Schemas of the event models and the ClickHouse DDL to schemas/, and
    .env.example and docker-compose.yml's settings block (from pipeline/settings.py) next to it."""
    from pipeline.envfile import write_env_files
    from pipeline.schema_export import write_schemas

    files = write_schemas(out)
    console.print(f"wrote {len(files)} files under {out}/")
    for path in write_env_files(out.resolve().parent):
        console.print(f"wrote {path}")


# --------------------------------------------------------------------------- export (correlation)


@export_app.command("csv")
def export_csv(
    since: Annotated[str, typer.Option(help="From this request time: ISO 8601, or 24h / 7d back from now")] = "",
    until: Annotated[str, typer.Option(help="Before this request time (same forms)")] = "",
    agent: Annotated[str, typer.Option(help="Only tasks assigned to this agent")] = "",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here (default: stdout)")] = None,
    page_rows: Annotated[int, typer.Option(help="Rows per query page (memory bound)")] = 10_000,
) -> None:
    """Export finished tasks as the task-log CSV (one row per task, streamed page by page)."""
    import csv

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

    from pipeline.core.tasks.export import CSV_HEADER, csv_row, parse_time
    from pipeline.core.tasks.queries import export_count, export_page

    settings = _settings()
    now_ms = int(time.time() * 1000)
    try:
        since_ms = parse_time(since, now_ms) if since else None
        until_ms = parse_time(until, now_ms) if until else None
    except ValueError as exc:
        fail(f"--since/--until: {exc}")
        return
    db = settings.clickhouse_database
    query = Querier(settings)
    total = int(query(*export_count(db, since_ms, until_ms, agent or None))[1][0][0])
    fh = output.open("w", newline="", encoding="utf-8") if output else sys.stdout
    show = output is not None and err.is_terminal
    written = 0
    try:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(CSV_HEADER)
        with Progress(
            "[progress.description]{task.description}", BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=err, disable=not show,
        ) as bar:  # fmt: skip
            job = bar.add_task("exporting tasks", total=total)
            after: tuple[str, str] | None = None
            while True:
                _, rows = query(*export_page(db, since_ms, until_ms, agent or None, after, page_rows))
                for row in rows:
                    fields, after = csv_row(row)
                    writer.writerow(fields)
                written += len(rows)
                bar.update(job, completed=written)
                if len(rows) < page_rows:
                    break
    finally:
        if output:
            fh.close()
    if output:
        err.print(f"wrote {written:,} tasks to {output}")


@cli.command()
def report(
    kind: Annotated[str, typer.Argument(metavar="daily|weekly|monthly|custom", help="The last 24 hours, the last "
                                        "7 days, the calendar month to date, or --since … --until")] = "daily",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here: FILE.html (self-"
                                                "contained, with charts) or FILE.md (markdown)")] = None,
    directory: Annotated[Path | None, typer.Option("--dir", help="Write both <type>-<end>.html and .md into this "
                                                   "directory")] = None,
    since: Annotated[str, typer.Option(help="custom: start (ISO 8601, or 2h / 3d back)")] = "",
    until: Annotated[str, typer.Option(help="End the period here instead of now (ISO 8601, or 2h / 3d back)")] = "",
    end: Annotated[str, typer.Option(help="Same as --until (kept for older scripts)", hidden=True)] = "",
    filters: Annotated[list[str] | None, typer.Option("--filter", help="Only these tasks: agent=NAME, "
                                                      "task_type=TYPE or group=KEY (repeatable)")] = None,
    group: Annotated[list[str] | None, typer.Option("--group", help="Add this group's forecast ETA (repeatable)")]
    = None,
    tz: Annotated[str, typer.Option(help="Time zone of month boundaries and shown times (IANA name)")] = "UTC",
) -> None:
    """A report with seed 000's sections for its type: KPIs, rankings, trends, quality, cost,
    calibration, forecasts; HTML with charts and markdown."""
    from rich.markdown import Markdown

    from pipeline.core.analytics.queries import parse_filters
    from pipeline.core.tasks.export import parse_time
    from pipeline.reports import build_report, report_period, write_report

    settings = _settings()
    now_ms = int(time.time() * 1000)
    try:
        since_ms = parse_time(since, now_ms) if since else None
        until_ms = parse_time(until or end, now_ms) if (until or end) else None
        p = report_period(kind, now_ms, since_ms, until_ms, tz)
        wanted = parse_filters(filters or [])
    except ValueError as exc:
        fail(str(exc))
        return
    if output is not None and output.suffix not in (".html", ".htm", ".md"):
        fail(f"--output {output}: name a .html or .md file (or use --dir for both)")
    query = Querier(settings)
    rendered = build_report(lambda q, prm: query(q, prm)[1], settings.clickhouse_database, kind, p, wanted, now_ms,
                            tuple(group or ()))  # fmt: skip
    if directory is not None:
        html_path, md_path = write_report(directory, rendered)
        err.print(f"wrote the {kind} report ({p.describe()}) to {html_path} and {md_path}", soft_wrap=True)
    if output is not None:
        output.write_text(rendered.html if output.suffix in (".html", ".htm") else rendered.markdown, encoding="utf-8")
        err.print(f"wrote the {kind} report ({p.describe()}) to {output}", soft_wrap=True)
    if output is None and directory is None:
        if console.is_terminal:
            console.print(Markdown(rendered.markdown))
        else:
            sys.stdout.write(rendered.markdown)


@cli.command()
def forecast(
    group: Annotated[list[str] | None, typer.Option("--group", help="Also the ETA of this group (repeatable)")] = None,
    hours: Annotated[int, typer.Option(help="Hours of task volume to forecast")] = 12,
    filters: Annotated[list[str] | None, typer.Option("--filter", help="agent=NAME, task_type=TYPE or group=KEY")]
    = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Forecasts from history: next hours' task volume, expected completion time per task type
    (each with its error on held-out history), and a group's ETA."""
    import dataclasses

    from pipeline.core.analytics import forecast as fc
    from pipeline.core.analytics import queries as aq
    from pipeline.reports import FORECAST_DAYS

    settings = _settings()
    now_ms = int(time.time() * 1000)
    try:
        wanted = aq.parse_filters(filters or [])
    except ValueError as exc:
        fail(str(exc))
        return
    query = Querier(settings)
    db = settings.clickhouse_database
    hist = {n: query(*q)[1] for n, q in aq.history_queries(db, now_ms, FORECAST_DAYS, wanted).items()}
    volume = fc.volume_forecast(fc.hourly_series(hist["hourly_volume"], now_ms - FORECAST_DAYS * 86_400_000, now_ms),
                                hours_ahead=hours)  # fmt: skip
    completion = fc.ewma_forecasts(hist["cycle_times"])
    etas = [fc.group_eta(g, query(*aq.group_open_tasks(db, g))[1], completion, now_ms) for g in group or []]
    if as_json:
        doc = {"volume": {k: v for k, v in dataclasses.asdict(volume).items() if k != "history"},
               "completion": [dataclasses.asdict(c) for c in completion],
               "groups": [dataclasses.asdict(e) for e in etas]}
        sys.stdout.write(json.dumps(doc) + "\n")
        return
    total = sum(v for _, v in volume.points)
    console.print(f"Task volume, next {hours} h: {total:,.1f} tasks ({volume.method})")
    if volume.mae is not None:
        console.print(f"  error on the held-out last {volume.holdout_hours} h: MAE {volume.mae:.2f} tasks/h "
                      f"(naive 'same as last hour': {volume.baseline_mae:.2f})")  # fmt: skip
    for c in completion:
        err_txt = f", held-out MAE {c.mae_ms / 1000:.1f} s over {c.holdout} tasks" if c.mae_ms is not None else ""
        console.print(f"Expected completion of {c.task_type or '(none)'}: {c.expected_ms / 1000:.1f} s "
                      f"(EWMA of {c.tasks} tasks{err_txt})")  # fmt: skip
    for e in etas:
        when = "unknown" if e.eta_ms is None else time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(e.eta_ms / 1000))
        console.print(f"Group {e.group}: {e.open_tasks} open ({e.executing} executing), ETA {when}")


# --------------------------------------------------------------------------- tokens


@token_app.command("create")
def token_create(
    name: Annotated[str, typer.Argument(help="Who uses the token (recorded as the source of what it sends)")],
    role: Annotated[str, typer.Option(help="reader, writer, operator or admin")] = "reader",
) -> None:
    """Make a new API token: prints the secret (once; it is not stored) and the line to add to
    TASKPULSE_API_TOKENS_FILE."""
    import secrets

    from pipeline.core.auth import TokenFileError, token_line

    secret = secrets.token_urlsafe(32)
    try:
        line = token_line(name, role, secret)
    except TokenFileError as exc:
        fail(str(exc).replace("tokens file line 1: ", ""))
        return
    sys.stdout.write(f"secret: {secret}\nline:   {line}\n")
    err.print(
        "Give the secret to the client (it sends Authorization: Bearer <secret>; the CLI reads "
        "TASKPULSE_API_TOKEN); it is shown once and not stored. Add the line to TASKPULSE_API_TOKENS_FILE "
        "and restart the worker.",
        highlight=False,
    )


# --------------------------------------------------------------------------- alerts


@alerts_app.command("check")
def alerts_check(
    file: Annotated[Path, typer.Argument(help="The rules YAML file (e.g. deploy/alerts/rules.yml)")],
) -> None:
    """Validate an alert rules file without starting anything (exit 0: valid, 2: not)."""
    from pipeline.core.alerts.rules import RulesError, parse_rules

    if not file.is_file():
        fail(f"{file}: no such file")
    try:
        rules = parse_rules(file.read_text(), str(file))
    except RulesError as exc:
        fail(str(exc))
        return
    console.print(f"{file}: OK, {len(rules.rules)} rules")
    for r in rules.rules:
        cond = f"{r.measure} anomaly (z > {r.anomaly_settings.z})" if r.type == "anomaly" else (
            f"{r.measure} {r.op} {r.threshold:g}"
        )
        by = f" by {','.join(r.group_by)}" if r.group_by else ""
        console.print(f"  {r.name}: {cond}{by} over {r.window}, for {r.for_:g}s, {r.severity}"
                      f" -> {', '.join(rules.notifiers_for(r.severity))}")


@alerts_app.command("list")
def alerts_list(
    firing: Annotated[bool, typer.Option("--firing", help="Only alerts firing now (latest state per alert).")] = False,
    limit: Annotated[int, typer.Option(help="Most recent state changes to show.")] = 50,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
) -> None:
    """Show alert state changes, newest first (through the running worker if there is one)."""
    from pipeline.core.alerts.queries import alert_history_query

    settings = _settings()
    columns, rows = Querier(settings)(*alert_history_query(settings.clickhouse_database, limit, firing))
    if fmt != "json" and not rows:
        console.print("no firing alerts" if firing else "no alert state changes recorded")
        return
    print_rows(columns, rows, "json" if fmt == "json" else "table", null="")


# --------------------------------------------------------------------------- doctor


@cli.command()
def doctor(fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table") -> None:
    """Check the broker, topics, lag per role, ClickHouse, schema, TTLs, disk, alert rules,
    notifiers and clocks; print each finding with its fix; exit 1 when any is a problem."""
    from pipeline import doctor as checks
    from pipeline.core.doctor import exit_code

    findings = checks.run(_settings())
    if fmt == "json":
        sys.stdout.write(json.dumps([f.to_json() for f in findings]) + "\n")
    else:
        print_findings(findings)
    raise typer.Exit(exit_code(findings))


# --------------------------------------------------------------------------- DLQ


def _dlq_filters(reason: str, since: str, topic: str, limit: int, entry: str = "") -> dict[str, Any]:
    from pipeline.core.tasks.export import parse_time

    try:
        since_ms = parse_time(since, int(time.time() * 1000)) if since else None
    except ValueError as exc:
        fail(f"--since: {exc}")
    return {"reason": reason, "topic": topic, "since_ms": since_ms, "limit": limit, "id": entry or None}


def _dlq_direct(settings: Settings) -> Any:
    from pipeline.sinks.clickhouse import ClickHouseStore

    try:
        store = ClickHouseStore.from_settings(settings)
        store.ensure_schema(settings.auto_migrate, applied_by="taskpulse dlq")
    except TaskpulseError as exc:
        fail(str(exc))
    return store


def _dlq_entries(settings: Settings, body: dict[str, Any]) -> list[dict[str, Any]]:
    from urllib.parse import urlencode

    from pipeline.core.ingest.replay import Filters
    from pipeline.roles import dlq

    query = urlencode({k: v for k, v in body.items() if v not in (None, "")})
    answer = worker_call(settings, "GET", f"/api/dlq?{query}")
    if answer is not None:
        status, data = answer
        if status != 200:
            fail(data.get("error", f"HTTP {status}") if isinstance(data, dict) else f"HTTP {status}")
        return list(data["entries"])
    try:
        return dlq.listing(_dlq_direct(settings), Filters.from_json(body))
    except (ValueError, TaskpulseError) as exc:
        fail(str(exc))


@dlq_app.command("list")
def dlq_list(
    reason: Annotated[str, typer.Option(help="Only this reason (bad_timestamp, schema_violation, …)")] = "",
    since: Annotated[str, typer.Option(help="Received since: ISO 8601, or 24h / 7d back from now")] = "",
    topic: Annotated[str, typer.Option(help="Only entries from this source topic")] = "",
    limit: Annotated[int, typer.Option(help="At most this many entries (oldest first)")] = 50,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
) -> None:
    """List DLQ entries (through the running worker if there is one)."""
    rows = _dlq_entries(_settings(), _dlq_filters(reason, since, topic, limit))
    if fmt == "json":
        sys.stdout.write(json.dumps(rows) + "\n")
        return
    if not rows:
        console.print("no DLQ entries match")
        return
    cols = ["id", "received_at", "reason", "source", "detail", "replay"]
    print_rows(cols, [[r[c] for c in cols] for r in rows])


@dlq_app.command("show")
def dlq_show(entry: Annotated[str, typer.Argument(help="The entry id `dlq list` shows")]) -> None:
    """Everything about one DLQ entry, its original included."""
    rows = _dlq_entries(_settings(), _dlq_filters("", "", "", 1, entry))
    if not rows:
        fail(f"no DLQ entry {entry}")
    sys.stdout.write(json.dumps(rows[0], indent=2, ensure_ascii=False) + "\n")


@dlq_app.command("replay")
def dlq_replay(
    reason: Annotated[str, typer.Option(help="Only this reason")] = "",
    since: Annotated[str, typer.Option(help="Received since: ISO 8601, or 24h / 7d back from now")] = "",
    topic: Annotated[str, typer.Option(help="Only entries from this source topic")] = "",
    limit: Annotated[int, typer.Option(help="At most this many entries")] = 10_000,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be replayed; publish nothing.")] = False,
    wait: Annotated[float, typer.Option(help="Seconds to wait for the pipeline's verdict on the replayed "
                                        "messages (0: do not wait)")] = 30.0,
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
) -> None:
    """Publish DLQ entries again to their source topics (after an emitter or config fix):
    once per entry, however often it runs; reports what was accepted and what was rejected again."""
    settings = _settings()
    body = {**_dlq_filters(reason, since, topic, limit), "dry_run": dry_run, "wait_s": wait}
    answer = worker_call(settings, "POST", "/api/dlq/replay", body, timeout_s=wait + 120)
    if answer is not None:
        status, report = answer
        if status != 200:
            fail(report.get("error", f"HTTP {status}") if isinstance(report, dict) else f"HTTP {status}")
    else:
        report = _replay_direct(settings, body)
    if fmt == "json":
        sys.stdout.write(json.dumps(report) + "\n")
        return
    print_replay_report(report)


def _replay_direct(settings: Settings, body: dict[str, Any]) -> dict[str, Any]:
    from pipeline.core.ingest.replay import Filters
    from pipeline.kafka_security import KafkaSecurity, client_kwargs
    from pipeline.roles.dlq import Replayer

    _require_kafka(settings)
    store = _dlq_direct(settings)
    try:
        kwargs = client_kwargs(KafkaSecurity.from_settings(settings))
        replayer = Replayer(settings, store, kwargs)
        report = asyncio.run(replayer.run(Filters.from_json(body), bool(body["dry_run"]), float(body["wait_s"]), "cli"))
    except (ValueError, TaskpulseError) as exc:
        fail(str(exc))
    return report.to_json()


@privacy_app.command("export")
def privacy_export(
    user: Annotated[str, typer.Option("--user", help="The person's id as producers sent it, or its pseudonym (pn_…)")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the JSON here (default: stdout)")] = None,
    direct: Annotated[bool, typer.Option("--direct", help="Not through the running worker: straight to ClickHouse "
                                         "with TASKPULSE_CLICKHOUSE_URL's user (a server's taskpulse_writer may not "
                                         "ALTER … DELETE; use a user that may)")] = False,
) -> None:
    """Everything stored about one person, in every table and the DLQ, as JSON (audited)."""
    from urllib.parse import urlencode

    settings = _settings()
    answer = None if direct else worker_call(
        settings, "GET", f"/api/v1/privacy/export?{urlencode({'user': user})}", timeout_s=300
    )
    if answer is not None:
        status, data = answer
        if status != 200:
            fail(_api_error(data, status))
    else:
        data = _privacy_direct(settings, "export", user)
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    if out is None:
        sys.stdout.write(text)
    else:
        out.write_text(text)
        console.print(f"{data['rows']} rows about {user!r} written to {out}")


@privacy_app.command("erase")
def privacy_erase(
    user: Annotated[str, typer.Option("--user", help="The person's id as producers sent it, or its pseudonym (pn_…)")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="table or json")] = "table",
    direct: Annotated[bool, typer.Option("--direct", help="Not through the running worker: straight to ClickHouse "
                                         "with TASKPULSE_CLICKHOUSE_URL's user (a server's taskpulse_writer may not "
                                         "ALTER … DELETE; use a user that may)")] = False,
) -> None:
    """Delete one person's rows from every table and the DLQ (waited for and verified), and put
    them on the erasure list so nothing brings them back (admin token; audited)."""
    settings = _settings()
    answer = None if direct else worker_call(settings, "POST", "/api/v1/privacy/erase", {"user": user}, timeout_s=600)
    if answer is not None:
        status, data = answer
        if status != 200:
            fail(_api_error(data, status))
    else:
        data = _privacy_direct(settings, "erase", user)
    if fmt == "json":
        sys.stdout.write(json.dumps(data) + "\n")
        return
    console.print(f"erased {data['rows']} rows naming {', '.join(data['subjects'])}")
    print_rows(["table", "rows deleted"], [[t, n] for t, n in sorted(data["deleted"].items())])


def _api_error(data: Any, status: int) -> str:
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return str(data["error"].get("message") or f"HTTP {status}")
    return f"HTTP {status}"


def _privacy_direct(settings: Settings, action: str, user: str) -> dict[str, Any]:
    from pipeline.sinks import privacy as priv

    store = _dlq_direct(settings)
    rules = priv.privacy_of(settings)
    try:
        if action == "export":
            data = priv.export(store, rules, user)
            priv.audit(store, "cli", "admin", "export", ",".join(data["subjects"]), data["rows"])
        else:
            data = priv.erase(store, rules, user, "cli", settings.erasure_refresh_s)
            priv.audit(store, "cli", "admin", "erase", ",".join(data["subjects"]), data["rows"], 200,
                       json.dumps(data["deleted"]))
    except (ValueError, RuntimeError, TaskpulseError) as exc:
        fail(str(exc))
    return data


def main() -> None:
    cli()
