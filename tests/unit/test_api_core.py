"""The pure parts of the HTTP API: keyset cursors, session cookies, HTTP ingest's reading of a
body and judging of its events, a task's timeline, and the KPI query's parameters."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pipeline.core.auth import Role, TokenTable, parse_tokens, token_line
from pipeline.core.ingest.decode import Decoder
from pipeline.core.ingest.http_batch import UNPARSED, BodyError, TooMany, batch_messages, prepare, split_body
from pipeline.core.paging import BadCursor, Cursor, page
from pipeline.core.periods import period
from pipeline.core.tasks.kpis import KPIS, kpi_query
from pipeline.core.tasks.timeline import timeline
from pipeline.topics import RAW_SYSTEM, RAW_TOPICS

NOW = 1_790_000_000_000


# --------------------------------------------------------------------------- paging


@given(st.lists(st.integers(-(2**62), 2**62) | st.text(max_size=20), min_size=1, max_size=4))
def test_a_cursor_reads_back_its_key(key: list[int | str]) -> None:
    c = Cursor("-last_event_at", tuple(key))
    assert Cursor.decode(c.encode(), "-last_event_at", len(key)) == c


@pytest.mark.parametrize("text", ["", "!!!", "bm90IGpzb24", Cursor("x", (1, 2)).encode()])
def test_a_foreign_or_altered_cursor_is_refused(text: str) -> None:
    with pytest.raises(BadCursor):
        Cursor.decode(text, "-last_event_at", 2)


def test_a_cursor_of_another_sort_says_so() -> None:
    with pytest.raises(BadCursor, match="sort='created_at'"):
        Cursor.decode(Cursor("created_at", (1, "a")).encode(), "-last_event_at", 2)


def test_pages_visit_every_row_once() -> None:
    rows = list(range(23))
    seen, after = [], None
    while True:
        chunk = [r for r in rows if after is None or r > after][:6]  # what the query returns: limit + 1
        shown, nxt = page(chunk, 5, "n", lambda r: (r,))
        seen += shown
        if nxt is None:
            break
        after = Cursor.decode(nxt, "n", 1).key[0]
    assert seen == rows


# --------------------------------------------------------------------------- sessions


def _table() -> TokenTable:
    return TokenTable(parse_tokens(token_line("ui.user@x", "reader", "secret-one-0123456789")))


def test_a_session_stands_for_its_token_until_it_expires() -> None:
    t = _table()
    cookie = t.session("ui.user@x", 1000, 60)
    who = t.from_session(cookie, 1059)
    assert who is not None and (who.name, who.role) == ("ui.user@x", Role.READER)
    assert t.from_session(cookie, 1060) is None  # expired


def test_a_forged_or_revoked_session_is_refused() -> None:
    t = _table()
    cookie = t.session("ui.user@x", 1000, 60)
    name, expires, mac = cookie.rsplit(".", 2)
    assert t.from_session(f"{name}.{int(expires) + 999}.{mac}", 1001) is None  # longer life: MAC differs
    assert t.from_session(f"{name}.{expires}.{mac[:-1]}A", 1001) is None
    assert t.from_session("garbage", 1001) is None
    other = TokenTable(parse_tokens(token_line("ui.user@x", "reader", "a-new-secret-0123456789")))
    assert other.from_session(cookie, 1001) is None  # the token's secret changed: its sessions end
    assert TokenTable([]).from_session(cookie, 1001) is None


# --------------------------------------------------------------------------- HTTP ingest


def _event(i: int, **over: object) -> dict[str, object]:
    return {"id": f"e{i}", "timestamp": NOW - 1000, "event_type": "system.health", "entity_type": "system",
            "entity_id": f"svc{i}", "current_state": {"status": "ok"}, **over}  # fmt: skip


def test_ndjson_lines_and_batches_are_events_blank_lines_are_not() -> None:
    body = b"\n".join([orjson.dumps(_event(1)), b"", b"  ", orjson.dumps([_event(2), _event(3)]), b"{oops"])
    items = split_body(body, True, 10)
    assert [d["id"] if isinstance(d, dict) else d for _, d in items] == ["e1", "e2", "e3", UNPARSED]
    with pytest.raises(TooMany):
        split_body(body, True, 3)


@pytest.mark.parametrize("body", [b"nope", b"42", b'"text"'])
def test_a_json_body_that_is_not_events_is_a_bad_request(body: bytes) -> None:
    with pytest.raises(BodyError):
        split_body(body, False, 10)


def test_each_event_is_judged_by_the_decoder_sourced_and_routed() -> None:
    items = split_body(orjson.dumps([
        _event(1), _event(1), _event(2, timestamp="soon"), _event(3, entity_type="agent", event_type="agent.online"),
        _event(4, metadata={"source": "spoofed", "session_id": "s"}), "just text",
    ]), False, 10)  # fmt: skip
    out = prepare(items, Decoder(), "svc-a", RAW_TOPICS, RAW_SYSTEM, NOW)
    answer = out.answer()
    assert (answer["accepted"], answer["duplicates"], answer["rejected"]) == (3, 1, 2)
    assert [(r["status"], r["reason"]) for r in answer["results"]] == [
        ("accepted", None), ("accepted", None), ("rejected", "bad_timestamp"), ("accepted", None),
        ("accepted", None), ("rejected", "schema_violation"),
    ]  # fmt: skip
    # the duplicate is published once; the rejected are published for the DLQ
    assert [(t, k) for t, k, _, _ in out.messages] == [
        (RAW_SYSTEM, b"svc1"), (RAW_SYSTEM, b"svc2"), (RAW_TOPICS["agent"], b"svc3"), (RAW_SYSTEM, b"svc4"),
        (RAW_SYSTEM, b""),
    ]  # fmt: skip
    sent = [orjson.loads(v) for _, _, v, _ in out.messages[:4]]
    assert all(e["metadata"]["source"] == "svc-a" for e in sent)  # the token's name, not what was claimed
    assert sent[3]["metadata"]["session_id"] == "s"


@given(st.lists(st.integers(0, 30), min_size=1, max_size=60), st.integers(200, 3000), st.integers(1, 8))
def test_batches_hold_every_event_once_in_order_per_partition(entities: list[int], max_bytes: int,
                                                             max_elements: int) -> None:  # fmt: skip
    items = [(b"", _event(i, entity_id=f"svc{e}")) for i, e in enumerate(entities)] + [(b"{bad", UNPARSED)]
    prepared = prepare(items, Decoder(), "s", RAW_TOPICS, RAW_SYSTEM, NOW)
    msgs = batch_messages(prepared.messages, lambda topic, key: hash(key) % 3, max_bytes, max_elements)
    per_partition: dict[int, list[str]] = {}
    for topic, part, value in msgs:
        assert topic == RAW_SYSTEM
        results = Decoder().decode(topic, part, 0, value, NOW)
        assert len(value) <= max_bytes or len(results) == 1  # only a lone event may exceed the cap
        assert len(results) <= max(1, max_elements)
        per_partition.setdefault(part, []).extend(getattr(r, "id", "<rejected>") for r in results)
    sent = [i for ids in per_partition.values() for i in ids]
    assert sorted(sent) == sorted([f"e{i}" for i in range(len(entities))] + ["<rejected>"])
    for part, ids in per_partition.items():  # each partition's events in request order
        order = [f"e{i}" for i, e in enumerate(entities) if hash(f"svc{e}".encode()) % 3 == part]
        assert [i for i in ids if i != "<rejected>"] == order


# --------------------------------------------------------------------------- timeline


def test_the_timeline_is_in_event_time_order_with_invalid_transitions_marked() -> None:
    events = [
        ("c", "task.completed", 3000, {"success": True}, {}),
        ("a", "task.created", 1000, {}, {}),
        ("p", "task.progress", 2500, {"percentage": 50}, {}),
        ("n", "task.note", 2600, {}, {}),
    ]
    steps = timeline(events)
    assert [s.event_id for s in steps] == ["a", "p", "n", "c"]
    assert [(s.from_state, s.to_state, s.valid) for s in steps] == [
        (None, "CREATED", True), ("CREATED", "EXECUTING", False), ("EXECUTING", None, True),
        ("EXECUTING", "COMPLETED", True),
    ]  # fmt: skip


# --------------------------------------------------------------------------- KPIs


def test_the_kpi_query_spans_the_period_and_names_every_kpi() -> None:
    p = period("daily", NOW)
    sql, params = kpi_query("taskpulse", p)
    assert (params["start"], params["end"], params["hours"]) == (NOW - 86_400_000, NOW, 24)
    assert all(f" AS {k.name}" in sql for k in KPIS) and "{agents_online}" not in sql
    assert kpi_query("taskpulse", p.prev)[1]["end"] == p.start_ms


# --------------------------------------------------------------------------- gzip


def test_gzip_bodies_every_member_bounded_and_whole() -> None:
    import gzip
    import zlib

    from pipeline.roles.api_ingest import gunzip

    two = gzip.compress(b"a" * 10) + gzip.compress(b"b" * 5)  # `cat x.gz y.gz` is one gzip file
    assert gunzip(two, 15) == b"a" * 10 + b"b" * 5
    assert gunzip(two, 14) is None
    assert gunzip(gzip.compress(b"z" * 10_000_000), 1000) is None  # a bomb stops at the limit
    with pytest.raises(zlib.error):
        gunzip(two[:-3], 100)
    with pytest.raises(zlib.error):
        gunzip(b"not gzip", 100)
