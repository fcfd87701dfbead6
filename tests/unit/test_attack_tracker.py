"""Attack: what an agent's own data can hold, through the Tracker into its spool."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from taskpulse import Tracker
from taskpulse.transport import HttpTransport

BAD = "notes-\udcff.md"  # os.listdir's name for a file whose name is not UTF-8 (surrogateescape)


def _spooled(directory: Path) -> list[dict[str, object]]:
    return [orjson.loads(line) for seg in sorted(directory.rglob("seg-*.ndjson"))
            for line in seg.read_bytes().splitlines()]  # fmt: skip


def test_an_undecodable_file_name_in_a_result_or_an_error_is_tracked(tmp_path: Path) -> None:
    # a lone surrogate made orjson raise TypeError inside the tracker: the task's completion
    # was never recorded (stuck EXECUTING), and in a failing task the agent's own exception
    # was replaced by the SDK's TypeError
    tp = Tracker(HttpTransport("http://127.0.0.1:9"), spool_dir=tmp_path, retry_max_s=0.1)  # nothing listens
    try:
        with tp.task("research", task_id="ok-1", agent="a1") as t:
            t.result = {"files_created": [BAD]}
        with pytest.raises(KeyError, match="boom"), tp.task("research", task_id="bad-1", agent="a1", request=BAD):
            raise KeyError("boom")
        tp.emit("task.progress", "ok-1", {"message": BAD, BAD: 1})
    finally:
        tp.close(timeout_s=0.5)
    events = _spooled(tmp_path)
    done = {(e["event_type"], e["entity_id"]) for e in events}
    assert {("task.completed", "ok-1"), ("task.failed", "bad-1"), ("task.progress", "ok-1")} <= done
    text = orjson.dumps(events).decode()
    assert "notes-\\\\udcff.md" in text  # the surrogate kept as text, not dropped
