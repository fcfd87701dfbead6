"""Peer: a Faust agent with four windowed tables (tumbling 1m / 5m / 1h / 1d counts per event
type), the way Faust's docs build windowed aggregation, over the same raw topics.  Each event
is validated with taskpulse's pydantic envelope, like the ceiling.  Writes
``<count> <first event monotonic s> <last event monotonic s>`` to STATS_FILE once a second;
the bench stops it once it has counted N.

    python faust_tables.py BOOTSTRAP STATS_FILE TOPIC [TOPIC…]
"""

from __future__ import annotations

import sys
import time
from datetime import timedelta
from pathlib import Path

import faust
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pipeline.core.timestamps import to_epoch_ms  # noqa: E402
from pipeline.events import Envelope  # noqa: E402


def main() -> None:
    bootstrap, stats_file, topics = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
    app = faust.App(
        f"faust-peer-{time.time_ns()}", broker=f"kafka://{bootstrap}", store="memory://",
        topic_partitions=4, web_enabled=False, consumer_auto_offset_reset="earliest",
        broker_session_timeout=6, broker_heartbeat_interval=1,  # a new group joins in seconds on Tansu
        value_serializer="raw", key_serializer="raw",
    )  # fmt: skip
    source = app.topic(*topics, value_type=bytes, key_type=bytes)
    tables = [
        app.Table(f"count_{name}", default=int, partitions=4).tumbling(
            timedelta(seconds=size), expires=timedelta(days=2)
        )
        for name, size in (("1m", 60), ("5m", 300), ("1h", 3600), ("1d", 86400))
    ]
    state = {"n": 0, "first": 0.0, "last": 0.0}

    @app.agent(source)
    async def count(stream: faust.StreamT) -> None:  # type: ignore[name-defined]
        async for value in stream:
            doc = orjson.loads(value)
            for item in doc if isinstance(doc, list) else [doc]:
                ev = Envelope.model_validate(item)
                to_epoch_ms(ev.timestamp)
                for table in tables:
                    table[ev.event_type] += 1
                if not state["n"]:
                    state["first"] = time.monotonic()
                state["n"] += 1
            state["last"] = time.monotonic()

    @app.timer(interval=1.0)
    async def report() -> None:
        with open(stats_file, "w") as f:  # noqa: ASYNC230 - a few bytes once a second
            f.write(f"{state['n']} {state['first']} {state['last']}")

    sys.argv = [sys.argv[0], "worker", "-l", "warn", "--without-web"]
    app.main()


if __name__ == "__main__":
    main()
