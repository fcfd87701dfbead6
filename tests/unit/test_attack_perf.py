"""Adversarial checks of the issue-14 performance changes (hostile situations the authors'
tests did not shape)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pytest

from pipeline.core.ingest.rows import EVENT_JSON
from pipeline.errors import SinkUnavailable
from pipeline.sinks.clickhouse import ClickHouseStore


def test_a_failed_write_of_the_lines_file_leaves_no_temp_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """chDB reads the events lines from a temp file.  When writing that file fails (disk
    full), the insert is an outage and is retried: each attempt must not leave its partial
    file behind, or a full disk fills further with every retry."""
    import clickhouse_connect

    calls: list[str] = []

    class Client:
        def command(self, sql: str, **kwargs: Any) -> None:
            calls.append(sql)

    monkeypatch.setattr(clickhouse_connect, "get_client", lambda **kwargs: Client())
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    real = tempfile.NamedTemporaryFile

    class Full:
        def __init__(self, fh: Any) -> None:
            self.fh, self.name = fh, fh.name

        def __enter__(self) -> Full:
            self.fh.__enter__()
            return self

        def __exit__(self, *exc: Any) -> Any:
            return self.fh.__exit__(*exc)

        def write(self, data: bytes) -> int:
            self.fh.write(data[:10])
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(tempfile, "NamedTemporaryFile", lambda **kw: Full(real(**kw)))
    store = ClickHouseStore("chdb:///nowhere", "taskpulse")
    for _ in range(3):
        with pytest.raises(SinkUnavailable, match="No space left"):
            store.insert("events", [b'{"id":"a"}', b'{"id":"b"}'], EVENT_JSON)
    assert calls == []
    assert list(tmp_path.iterdir()) == []
