"""Adversarial checks of the issue-14 performance changes (hostile situations the authors'
tests did not shape)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.core.ingest.decode import Decoder, Limits
from pipeline.core.ingest.rows import EVENT_JSON
from pipeline.core.privacy import Privacy
from pipeline.errors import SinkUnavailable
from pipeline.events import NormalizedEvent, Rejected
from pipeline.sinks.clickhouse import ClickHouseStore
from tests.unit.helpers import DAY0_MS, make_event


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


# --------------------------------------------------------------------------- privacy

REDACT, PSEUDONYMS = Privacy.build(None), Privacy.build("k" * 32)
NOW = DAY0_MS + 3_600_000


def _deep(n: int, leaf: Any) -> Any:
    for _ in range(n):
        leaf = {"k": leaf}
    return leaf


@pytest.mark.parametrize("privacy", [REDACT, PSEUDONYMS], ids=["redact", "pseudonyms"])
def test_a_too_deep_event_keeps_no_personal_data_in_its_dead_letter(privacy: Privacy) -> None:
    """A message rejected as too deep keeps its bytes as the DLQ original, scrubbed by the
    privacy rules: the walks stopped 64 levels down, so text and ids below were kept as sent."""
    doc = make_event("d1", "task.created", state={"task_type": "t", "n": _deep(70, {
        "request": "mail me at a.b@example.com", "user_id": "alice-secret"})})  # fmt: skip
    for raw in (orjson.dumps(doc), orjson.dumps([make_event("c"), doc])):
        [*_, r] = Decoder(privacy=privacy).decode("t", 0, 1, raw, NOW)
        assert isinstance(r, Rejected) and r.reason == "too_deep"
        assert b"example.com" not in r.original
        assert b"alice-secret" not in r.original or not privacy.hashing
        assert r.original_redacted or r.original_cut


def test_an_event_as_deep_as_the_depth_limit_allows_is_redacted_all_the_way_down() -> None:
    """TASKPULSE_MAX_DEPTH goes up to 250: every level of an accepted event is redacted."""
    doc = make_event("d2", "task.created", state={"task_type": "t", "n": _deep(200, {
        "request": "mail me at a.b@example.com", "user_id": "alice-secret"})})  # fmt: skip
    for privacy in (REDACT, PSEUDONYMS):
        decoder = Decoder(limits=Limits(max_depth=250), privacy=privacy)
        [ev] = decoder.decode("t", 0, 1, orjson.dumps(doc), NOW)
        assert isinstance(ev, NormalizedEvent)
        text = orjson.dumps(ev.current_state)
        assert b"example.com" not in text
        assert b"alice-secret" not in text or not privacy.hashing


def test_escapes_do_not_hide_personal_data_in_a_message_that_is_not_json() -> None:
    """A message that does not parse is scrubbed as text: an escaped key or character must not
    hide an identifier or an e-mail address from the patterns."""
    raw = b'{"id":"x","current_state":{"\\u0075ser_id":"alice-secret","request":"a.b\\u0040example.com",' \
          b'"user_id":"bob\\"secret"}'
    [r] = Decoder(privacy=PSEUDONYMS).decode("t", 0, 1, raw, NOW)
    assert isinstance(r, Rejected) and r.reason == "invalid_json"
    assert b"alice-secret" not in r.original and b"example.com" not in r.original and b"bob" not in r.original
    assert r.original_redacted
    clean = b'{"event_type":"task.created","current_state":{"task_type":"\\u0074"'  # nothing to scrub: kept as sent
    [r] = Decoder(privacy=PSEUDONYMS).decode("t", 0, 1, clean, NOW)
    assert r.original == clean and not r.original_redacted
