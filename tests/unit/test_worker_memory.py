"""What bounds the worker's memory besides reference cycles (``test_memory_cycles``): chDB's
allocator returns freed pages within a second, the events table merges a column at a time,
and a batch waiting for its write holds its events' JSON, not their parsed documents."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from pathlib import Path

from pipeline.core.ingest.aggregates import SketchMapping
from pipeline.core.ingest.batch import BatchProcessor, RawMessage
from pipeline.core.ingest.decode import Decoder
from pipeline.core.ingest.dedup import SeenIds
from pipeline.sinks.clickhouse import ClickHouseStore
from pipeline.worker import CHDB_MALLOC_CONF
from tests.unit.helpers import DAY0_MS, TOPIC, dumps, iso, make_event

_JEMALLOC_OPTS = """
import sys
from pipeline.worker import bound_chdb_malloc
bound_chdb_malloc()
from pipeline.sinks.clickhouse import ClickHouseStore
store = ClickHouseStore(f"chdb://{sys.argv[1]}", "taskpulse")
stats = store.rows("SELECT stats FROM system.jemalloc_stats")[0][0]
print(next(line.strip() for line in stats.splitlines() if line.strip().startswith("opt.dirty_decay_ms")))
"""


def _dirty_decay(tmp_path: Path, **env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k != "JE_MALLOC_CONF"}
    out = subprocess.run(
        [sys.executable, "-c", _JEMALLOC_OPTS, str(tmp_path / "ch")],
        env={**clean, **env}, capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    return out.stdout.strip()


def test_the_worker_tells_chdb_to_return_freed_pages_within_a_second(tmp_path: Path) -> None:
    assert CHDB_MALLOC_CONF == "dirty_decay_ms:1000"
    assert _dirty_decay(tmp_path).startswith("opt.dirty_decay_ms: 1000 ")
    # an operator's own JE_MALLOC_CONF wins
    assert _dirty_decay(tmp_path, JE_MALLOC_CONF="dirty_decay_ms:3000").startswith("opt.dirty_decay_ms: 3000 ")


def test_the_events_table_merges_a_column_at_a_time(tmp_path: Path) -> None:
    store = ClickHouseStore(f"chdb://{tmp_path / 'ch'}", "taskpulse")
    try:
        store.migrate()
        create = store.command("SHOW CREATE TABLE taskpulse.events")
    finally:
        store.close()
    assert "vertical_merge_algorithm_min_rows_to_activate = 1" in create
    assert "vertical_merge_algorithm_min_columns_to_activate = 1" in create


def test_a_processed_batch_holds_its_events_json_not_their_documents() -> None:
    bp = BatchProcessor(Decoder(), SeenIds(1000), SketchMapping())
    docs = [make_event(f"e{i}", "task.completed", iso(DAY0_MS + i), state={"agent_id": "a", "deep": {"x": [i]}},
                       metadata={"tags": ["t"], "triggered_by": "cron"}) for i in range(50)]  # fmt: skip
    out = bp.process([RawMessage(TOPIC, 0, i, dumps(d)) for i, d in enumerate(docs)], DAY0_MS + 86_400_000)
    assert len(out.events) == 50
    for a in out.events:
        # text, numbers and the JSON bytes only: no event object, no dict or list of its document
        assert {type(o) for o in gc.get_referents(a) if o is not type(a)} <= {str, int, bytes}
