"""The per-task CSV: rows, the keyset, time arguments."""

from __future__ import annotations

import csv
import io

import pytest
from clickhouse_connect.driver.binding import finalize_query

from pipeline.core.tasks.export import CSV_HEADER, csv_row, parse_time, read_text_cell, text_cell
from pipeline.core.tasks.queries import export_count, export_page

NOW = 1_762_164_000_000  # 2025-11-03T10:00:00Z


def test_a_row_has_the_seed_columns_and_round_trips_through_csv() -> None:
    row = ["2025-11-03 10:00:00.123000", "t-1", "u-1", 'Say "hi", then\nbye', "coder", 0.8,
           {"writer": 0.4, "tester": 0.75, "ops": 0.4}, True, 1520.0, ""]  # fmt: skip
    fields, keyset = csv_row(row)
    assert keyset == ("2025-11-03 10:00:00.123000", "t-1")
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(CSV_HEADER)
    w.writerow(fields)
    [back] = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert back == {
        "timestamp": "2025-11-03T10:00:00.123Z", "user_id": "u-1", "request": 'Say "hi", then\nbye',
        "assigned_agent": "coder", "confidence": "0.8", "other_agents_confidence": "tester:0.75;ops:0.4;writer:0.4",
        "success": "true", "execution_time": "1.52", "error_message": "",
    }  # fmt: skip


def test_missing_values_are_empty_fields() -> None:
    fields, _ = csv_row(["2025-11-03 10:00:00.000000", "t", None, None, "", None, {}, False, None, "OOM"])
    assert fields == ["2025-11-03T10:00:00.000Z", "", "", "", "", "", "false", "", "OOM"]


@pytest.mark.parametrize(
    ("text", "ms"),
    [("24h", NOW - 86_400_000), ("7d", NOW - 7 * 86_400_000), ("30m", NOW - 1_800_000),
     ("2025-11-03", NOW - 10 * 3_600_000), ("2025-11-03T10:00:00Z", NOW), ("2025-11-03T12:00:00+02:00", NOW)],
)  # fmt: skip
def test_since_and_until_accept_iso_and_spans(text: str, ms: int) -> None:
    assert parse_time(text, NOW) == ms


def test_an_unreadable_time_names_the_accepted_forms() -> None:
    with pytest.raises(ValueError, match="ISO 8601"):
        parse_time("yesterday", NOW)


def test_pages_continue_after_the_keyset_and_bind_filters_as_parameters() -> None:
    sql, params = export_page("taskpulse", NOW, None, "o'brien", ("2025-11-03 10:00:00.000000", "t-9"), 100)
    assert "agent = %(agent)s" in sql and "o'brien" not in sql
    assert "> (toDateTime64(%(after_ts)s, 3, 'UTC'), %(after_id)s)" in sql
    assert sql.endswith("LIMIT %(limit)s")
    assert params == {"since": NOW, "agent": "o'brien", "after_ts": "2025-11-03 10:00:00.000000", "after_id": "t-9",
                      "limit": 100}  # fmt: skip
    # bound by the client library: quotes escaped, the date format's % kept
    bound = finalize_query(sql, params)
    assert "agent = 'o\\'brien'" in bound and "'%Y-%m-%d %H:%i:%S.%f'" in bound
    count_sql, count_params = export_count("taskpulse", None, NOW, None)
    assert "< fromUnixTimestamp64Milli(%(until)s, 'UTC')" in count_sql and count_params == {"until": NOW}


@pytest.mark.parametrize("lead", ["=", "+", "-", "@", "\t", "\r"])
def test_formula_leading_text_is_neutralised_and_reads_back(lead: str) -> None:
    evil = f"{lead}HYPERLINK(\"http://x\",\"y\")"
    row = ["2025-11-03 10:00:00.000000", "t", evil, evil, evil, -0.5, {evil: 0.1}, False, -1500.0, evil]
    fields, _ = csv_row(row)
    user, request, agent, conf, others, _, exec_s, error = fields[1:]
    assert user == request == agent == error == "'" + evil
    assert others.startswith("'")
    assert (conf, exec_s) == ("-0.5", "-1.5")  # numbers stay numbers, negative ones too
    buf = io.StringIO()
    csv.writer(buf).writerow(fields)
    [back] = list(csv.reader(io.StringIO(buf.getvalue())))
    assert [read_text_cell(c) for c in back[1:4]] == [evil, evil, evil]


@pytest.mark.parametrize("text", ["plain", "'quoted'", "'=already", "''=twice", "", "a=b", "-"])
def test_text_cells_round_trip_exactly(text: str) -> None:
    cell = text_cell(text)
    assert not cell.lstrip("'").startswith(("=", "+", "-", "@")) or cell.startswith("'")
    assert read_text_cell(cell) == text
