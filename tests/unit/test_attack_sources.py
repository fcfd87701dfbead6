"""Attack: seed 001 CSV files as spreadsheets write them."""

from __future__ import annotations

import pytest

from pipeline.core.ingest.sources import CSV_COLUMNS, TaskCsv

ROW = {"timestamp": "2025-01-15T10:30:00Z", "user_id": "u1", "request": 'Say "hi", then\nstop',
       "assigned_agent": "researcher", "confidence": "0.9", "other_agents_confidence": "", "success": "true",
       "execution_time": "12.5", "error_message": ""}  # fmt: skip


def _csv(columns: list[str], bom: str) -> list[str]:
    def cell(v: str) -> str:
        return '"' + v.replace('"', '""') + '"' if any(c in v for c in ',"\n') else v

    text = bom + ",".join(columns) + "\r\n" + ",".join(cell(ROW[c]) for c in columns) + "\r\n"
    return text.splitlines(keepends=True)


@pytest.mark.parametrize("bom", ["", "\ufeff"])
@pytest.mark.parametrize("columns", [list(CSV_COLUMNS), [*CSV_COLUMNS[1:], "timestamp"]], ids=["seed", "reordered"])
def test_a_header_with_a_bom_or_in_another_order_is_read_as_the_header(bom: str, columns: list[str]) -> None:
    # attack: Excel's "CSV UTF-8" starts with a BOM: the header was taken for a row (a DLQ entry
    # "bad_timestamp: '\ufefftimestamp'"), and a header in another column order was never
    # recognised, so every row was read in the seed's order and dead-lettered
    parser = TaskCsv()
    out = [m for line in _csv(columns, bom) if (m := parser.feed(line)) is not None]
    assert [m.skipped for m in out] == ["header", ""]
    assert not out[1].problem and out[1].dead_letter is None
    events = out[1].events
    assert [e["event_type"] for e in events] == ["task.created", "task.assigned", "task.started", "task.completed"]
    assert events[0]["current_state"]["request"] == ROW["request"]
    assert events[1]["current_state"]["agent_id"] == "researcher"
    assert events[-1]["metrics"]["duration_ms"] == 12_500


def test_a_row_that_would_finish_after_year_9999_is_dead_lettered_not_a_crash() -> None:
    # attack: start + execution_time past 9999-12-31 raised OverflowError out of the parser:
    # `taskpulse ingest` died, and a follower died again on the same line at every restart
    parser = TaskCsv()
    out = parser.feed("9999-12-31T23:59:59Z,u1,req,Grok,92,,true,45.2,\n")
    assert out is not None and out.dead_letter is not None and "bad_timestamp" in out.problem
    after = parser.feed("2024-01-15T10:30:00Z,u2,next,Grok,92,,true,1,\n")  # the canary behind it
    assert after is not None and [e["event_type"] for e in after.events][-1] == "task.completed"
