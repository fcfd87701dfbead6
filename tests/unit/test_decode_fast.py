"""The decoder's fast path (strict msgspec mirrors) against its pydantic path: the same results.

Every input goes through two decoders, one with the fast path off (``fast = False``: the
pydantic path alone, the reference), and their outputs must be equal: the same
NormalizedEvent values of the same types (and the same JSON bytes, key order included), the
same rejections.  Inputs: the demo fleet, the seeds' shapes, the field corpus of
test_decode, and hypothesis variations of valid events with hostile values.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core import jsonbytes
from pipeline.core.ingest.decode import Decoder, Limits
from pipeline.core.ingest.strict import PAYLOAD_MIRRORS
from pipeline.core.privacy import Privacy
from pipeline.demo import DemoFleet
from pipeline.events import PAYLOADS, NormalizedEvent, Rejected
from tests.unit.helpers import DAY0_MS, VALID_STATES, iso, make_event
from tests.unit.test_decode import ALIASES, FIELD_CORPUS, hostile_events, hostile_values, nest, raw_json

NOW = DAY0_MS + 3_600_000
SMALL = Limits(max_depth=5, max_id_length=16, max_dimension_length=8, min_event_ms=0)


def _serialized(item: NormalizedEvent) -> bytes | str:
    try:
        return jsonbytes.dumps(vars(item))
    except (TypeError, ValueError) as exc:
        return f"unserializable: {type(exc).__name__}"


def same(
    raw: bytes | None, now: int = NOW, limits: Limits | None = None, privacy: Privacy | None = None
) -> list[NormalizedEvent | Rejected]:
    """Decode ``raw`` on both paths; assert the results are equal; return the fast path's."""
    reference = Decoder(limits=limits, privacy=privacy)
    reference.fast = False
    expected = reference.decode("t", 2, 9, raw, now)
    fast = Decoder(limits=limits, privacy=privacy)
    assert fast.fast or (limits is not None and limits.max_depth < 4)
    got = fast.decode("t", 2, 9, raw, now)
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        assert type(g) is type(e)
        if isinstance(e, Rejected):
            assert g.model_dump() == e.model_dump()
            continue
        assert vars(g) == vars(e)
        assert [type(v) for v in vars(g).values()] == [type(v) for v in vars(e).values()]
        assert _serialized(g) == _serialized(e)
    return got


def fast_accepts(doc: dict[str, Any], now: int = NOW, shallow: bool = False) -> bool:
    return Decoder()._fast(copy.deepcopy(doc), now, shallow) is not None


# --------------------------------------------------------------------------- known inputs

DEMO = DemoFleet(seed=1).take(3000, DAY0_MS)
DEMO_NOW = DAY0_MS + 3 * 86_400_000


def test_every_payload_model_has_a_mirror() -> None:
    assert set(PAYLOAD_MIRRORS) == set(PAYLOADS)


def test_demo_fleet_takes_the_fast_path_with_the_same_results() -> None:
    now = max(Decoder().decode("t", 0, 0, raw_json(ev), DEMO_NOW)[0].event_time_ms for ev in DEMO[-50:]) + 1
    assert all(fast_accepts(ev, now) for ev in DEMO)
    for i in range(0, len(DEMO), 100):
        out = same(raw_json(DEMO[i : i + 100]), now)
        assert all(isinstance(x, NormalizedEvent) for x in out)
    for ev in DEMO[:300]:
        same(raw_json(ev), now)


@pytest.mark.parametrize("event_type", sorted(VALID_STATES))
def test_every_event_type_takes_the_fast_path(event_type: str) -> None:
    doc = make_event("e1", event_type, entity_type=event_type.split(".")[0])
    assert fast_accepts(doc)
    [ev] = same(raw_json(doc))
    assert isinstance(ev, NormalizedEvent)


@pytest.mark.parametrize(("event_type", "state", "expected"), ALIASES)
def test_seed_shapes(event_type: str, state: dict, expected: dict) -> None:
    doc = make_event("s1", event_type, state=copy.deepcopy(state), entity_type=event_type.split(".")[0])
    same(raw_json(doc))
    same(raw_json([make_event("c0"), doc, make_event("c1")]))


@pytest.mark.parametrize(("doc", "reason", "path"), FIELD_CORPUS)
def test_field_corpus(doc: Any, reason: str, path: str | None) -> None:
    [r] = same(raw_json(doc))
    assert isinstance(r, Rejected) and r.reason == reason


# Values the mirrors take but that the models change or refuse: each must end as the
# reference says (the fast path declines them).
TRICKY = [
    ("agent.heartbeat", {"cpu_percent": 2**53 + 1}),  # a float field: written back as a float
    ("agent.heartbeat", {"memory_mb": 2**64 - 1}),
    ("agent.heartbeat", {"active_tasks": 2**32}),
    ("agent.heartbeat", {"active_tasks": 2**70}),  # orjson reads it as a float
    ("agent.heartbeat", {"active_tasks": True}),
    ("agent.heartbeat", {"active_tasks": 3.0}),
    ("agent.heartbeat", {"agent_id": "x" * 300, "task_type": 7}),  # extras as dimensions
    ("task.assigned", {"evaluations": {"a": 2**60 + 1, "b": 1}}),
    ("task.assigned", {"evaluations": {"a": 1, "b": 0.5}, "confidence": 1}),
    ("task.status_changed", {"status": "executing"}),
    ("task.status_changed", {"status": "EXECUTING "}),
    ("task.status_changed", {"status": "EXECUTING", "agent": "a"}),
    ("task.review", {"passed": "passed"}),
    ("task.review", {"passed": None, "quality_score": 100}),
    ("task.completed", {"success": "false"}),
    ("task.completed", {"success": False, "error": {"error_type": "E"}}),
    ("task.completed", {"success": 0}),
    ("task.failed", {"retry_count": "2"}),
    ("task.failed", {"retry_count": 2**32 - 1, "will_retry": True}),
    ("task.created", {"deadline": "1899-12-31T23:59:59Z"}),
    ("task.created", {"deadline": "2299-12-31T23:59:59.999Z", "requester_id": "r" * 256}),
    ("task.created", {"deadline": "garbage", "requester_id": "r" * 257}),
    ("task.progress", {"percentage": 100.0, "step": None}),
    ("task.progress", {"percentage": "50"}),
    ("task.started", {"agent_id": "a" * 128, "task_type": "t" * 129}),
    ("task.started", {"agent_id": None, "task_type": None, "group": "g"}),
    ("agent.self_report", {"status": "timeout", "progress": 1}),
    ("agent.self_report", {"status": "Timeout"}),
    ("user.feedback", {"score": 10, "task_id": "t" * 257}),
    ("user.feedback", {"score": -0.0, "user_id": None}),
    ("system.metric", {"name": "n", "value": 1e308}),
    ("system.metric", {"name": "n", "value": -(2**63)}),
    ("system.metric", {"name": "n", "value": 2**63 + 1}),
    ("system.health", {"status": "ok", "score": 0}),
    ("system.error", {"message": None, "error": "x"}),
]


@pytest.mark.parametrize(("event_type", "state"), TRICKY)
def test_tricky_values(event_type: str, state: dict) -> None:
    doc = make_event("t1", event_type, state=state, entity_type=event_type.split(".")[0])
    same(raw_json(doc))
    same(raw_json([make_event("c0"), doc, make_event("c1")]))
    same(raw_json(doc), limits=SMALL)


TIMESTAMPS = [iso(NOW), iso(NOW + 300_000), iso(NOW + 300_001), "1969-12-31T23:59:59Z", "1999-12-31T23:59:59.999Z",
              "2000-01-01T00:00:00Z", "2025-11-03T01:00:00+14:00", "2025-11-03 01:00:00", (NOW // 1000), NOW,
              NOW * 1000, NOW * 1_000_000, NOW / 1000, str(NOW), str(NOW / 1000), " " + iso(NOW), 0, -1, 1e300,
              True, None, [], {}, "", "0001-01-01T00:00:00Z", "9999-12-31T23:59:59.999Z"]  # fmt: skip


@pytest.mark.parametrize("ts", TIMESTAMPS, ids=repr)
def test_timestamps(ts: Any) -> None:
    same(raw_json(make_event("ts", ts=ts)))
    same(raw_json(make_event("ts", ts=ts)), limits=SMALL)


@pytest.mark.parametrize(
    "doc",
    [
        {**make_event("x"), "extra_top": 1},
        {**make_event("x"), "metadata": {"tags": ["a"], "other": {"k": [1, 2]}}},
        {**make_event("x"), "metadata": {"triggered_by": "u" * 257}},
        {**make_event("x"), "metadata": None},
        {**make_event("x"), "metrics": {"duration_ms": 5, "resource_usage": {"cpu": 1}, "cost": 0.1, "tokens": 7}},
        {**make_event("x"), "metrics": {"duration_ms": 1e12 + 1}},
        {**make_event("x"), "metrics": {"duration_ms": 2**70}},
        {**make_event("x"), "previous_state": {"status": "CREATED"}},
        {**make_event("x"), "previous_state": None},
        {**make_event("x"), "current_state": {}},
        {**make_event("x"), "id": "i" * 256, "entity_id": "e" * 256},
        {**make_event("x"), "entity_id": "e" * 257},
        {**make_event("x"), "current_state": {**VALID_STATES["task.created"], "deep": nest(60)}},
        {**make_event("x"), "current_state": {**VALID_STATES["task.created"], "deep": nest(63)}},
        {**make_event("x"), "metrics": {"resource_usage": nest(62)}},
        {**make_event("x"), "metrics": {"resource_usage": nest(61, [])}},
        {**make_event("x"), "metadata": {"x": nest(62)}},
        {**make_event("x"), "current_state": {**VALID_STATES["task.created"], "wide": list(range(5000))}},
        {k: v for k, v in make_event("x").items() if k not in ("previous_state", "metadata", "metrics")},
    ],
)
def test_envelope_shapes(doc: dict) -> None:
    neighbour = make_event("c1", state={"n": nest(30)})
    for raw in (raw_json(doc), raw_json([doc]), raw_json([make_event("c0"), doc, neighbour])):
        same(raw)
        same(raw, limits=SMALL)


@pytest.mark.parametrize(
    "raw",
    [b"", b"  ", b"[]", b"{}", b"[1]", b"null", b"\xff\xfe", b'{"id": "\xed\xa0\x80"}', b'[{"a": 1e400}]',
     b"[" * 2000 + b"]" * 2000, b'{"id": 18446744073709551616}', b'{"id": "x", "id": "y"}'],
)  # fmt: skip
def test_malformed_bytes(raw: bytes) -> None:
    same(raw)


def test_bad_element_in_the_middle_keeps_its_neighbours() -> None:
    good = DEMO[:5]
    bad = {**DEMO[5], "current_state": {"n": nest(300)}}
    out = same(raw_json([*good[:2], bad, *good[2:]]), DEMO_NOW)
    assert [type(x) for x in out] == [NormalizedEvent] * 2 + [Rejected] + [NormalizedEvent] * 3
    assert out[2].source.index == 2 and out[2].reason == "too_deep"
    assert [x.id for x in out if isinstance(x, NormalizedEvent)] == [ev["id"] for ev in good]
    out = same(raw_json([good[0], {**good[1], "entity_type": "robot"}, good[2]]), DEMO_NOW)
    assert [type(x) for x in out] == [NormalizedEvent, Rejected, NormalizedEvent]


def test_long_dimensions_are_cut_once_on_the_fast_path() -> None:
    doc = make_event("d", "task.completed", state={"agent_id": "a" * 200, "task_type": "t" * 129})
    assert fast_accepts(doc)
    [ev] = same(raw_json([doc, doc]))[:1]
    assert ev.current_state["agent_id_raw"] == "a" * 200 and ev.agent == "a" * 128


def test_fast_path_declines_without_touching_the_event() -> None:
    doc = make_event("d", "task.completed", state={"agent_id": "a" * 200, "success": "yes"})
    before = copy.deepcopy(doc)
    assert Decoder()._fast(doc, NOW, False) is None
    assert doc == before


# --------------------------------------------------------------------------- hypothesis

_VALID = [make_event(f"v-{et}", et, entity_type=et.split(".")[0]) for et in sorted(PAYLOADS)] + DEMO[:60]
_STATE_KEYS = sorted({n for m in PAYLOADS.values() for n in m.model_fields} | {"error_message", "type", "agent",
                      "extra_key", "droid_id", "assignment"})  # fmt: skip
_NUMBERS = [0, 1, -1, 0.5, 100, 101, 2**32 - 1, 2**32, 2**53, 2**53 + 1, 2**63 - 1, 2**64 - 1, 2**70, -(2**63),
            1e12, 1e12 + 1, 1e308, -0.0, 5e-324]  # fmt: skip
_WORDS = ["EXECUTING", "executing", "in_progress", "ok", "online", "busy", "waiting", "passed", "true", "false",
          "12", "1.5", "", "x" * 130, "y" * 260, "2025-11-03T00:00:00Z", "1899-01-01T00:00:00Z"]  # fmt: skip
plausible = st.one_of(
    st.sampled_from(_NUMBERS), st.sampled_from(_WORDS), st.booleans(), st.none(),
    st.integers(min_value=-(2**64), max_value=2**64), st.floats(allow_nan=False, allow_infinity=False),
    st.dictionaries(st.sampled_from(["a", "b", "coder"]), st.sampled_from(_NUMBERS), max_size=3),
    st.lists(st.sampled_from(_WORDS), max_size=3),
    st.integers(min_value=55, max_value=70).map(nest),
)  # fmt: skip
values = plausible | hostile_values


@st.composite
def variations(draw: st.DrawFn) -> Any:
    """A valid event with one to four of its values replaced, mostly by plausible ones."""
    doc = copy.deepcopy(draw(st.sampled_from(_VALID)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        where = draw(st.sampled_from(["top", "state", "state", "state", "metadata", "metrics"]))
        value = draw(values)
        if where == "top":
            key = draw(st.sampled_from(["id", "timestamp", "entity_id", "entity_type", "previous_state", "x"]))
            doc[key] = value
        elif where == "state":
            et = doc["event_type"]
            own = sorted(PAYLOADS[et].model_fields)
            doc["current_state"][draw(st.sampled_from(own) if draw(st.booleans()) else st.sampled_from(_STATE_KEYS))] = value  # noqa: E501
        else:
            keys = ["duration_ms", "resource_usage", "x"] if where == "metrics" else ["triggered_by", "tags", "x"]
            doc.setdefault(where, {})[draw(st.sampled_from(keys))] = value
    return doc


HYP = settings(max_examples=400, deadline=None, suppress_health_check=list(HealthCheck))
CANARIES = [make_event("canary-0", "task.assigned", state={**VALID_STATES["task.assigned"], "evaluations": {"a": 1}}),
            make_event("canary-1", "agent.heartbeat")]  # fmt: skip


@HYP
@given(variations() | hostile_events(), st.sampled_from([None, SMALL]))
def test_variations_match(doc: Any, limits: Limits | None) -> None:
    raw = raw_json(doc)
    same(raw, limits=limits)
    # in an array with neighbours: bracket count over the depth limit, each element walked
    out = same(raw_json([*CANARIES * 10, doc, *CANARIES]), limits=limits)
    if limits is None:
        assert all(isinstance(x, NormalizedEvent) for i, x in enumerate(out) if i != 20)


@HYP
@given(st.lists(variations() | hostile_values, min_size=1, max_size=6))
def test_arrays_match(docs: list) -> None:
    same(raw_json(docs))


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.binary(max_size=400))
def test_arbitrary_bytes_match(raw: bytes) -> None:
    same(raw)


#: the worker's default (redaction of free text, no key) and pseudonyms with a key
PRIVACY = [Privacy.build(None), Privacy.build("k" * 32, extra_fields=["customer_id"])]
PRIVATE_DOCS = [
    make_event("task.created", state={"task_type": "t", "request": "mail me at a.b@example.com, +1 415 555 0100",
                                      "user_id": "u-1", "requester": {"id": "r-9", "email": "r@example.org"}}),
    make_event("task.failed", state={"error": "password=hunter2 Bearer abcdefghijklmnop", "customer_id": "c-7"}),
    make_event("user.created", entity_id="alice@example.com"),
]


@pytest.mark.parametrize("privacy", PRIVACY, ids=["redact", "pseudonyms"])
def test_privacy_on_both_paths_gives_the_same_results(privacy: Privacy) -> None:
    """Privacy rewrites the event before either path validates it; the worker runs with it on
    by default, so the fast path must hold there."""
    now = max(Decoder().decode("t", 0, 0, raw_json(ev), DEMO_NOW)[0].event_time_ms for ev in DEMO[-50:]) + 1
    for i in range(0, 1000, 100):
        assert all(isinstance(x, NormalizedEvent) for x in same(raw_json(DEMO[i : i + 100]), now, privacy=privacy))
    for doc in PRIVATE_DOCS:  # they take the fast path
        private = copy.deepcopy(doc)
        privacy.apply(private)
        assert Decoder(privacy=privacy)._fast(private, NOW, False) is not None
    out = same(raw_json([*PRIVATE_DOCS, {"event_type": "task.created", "user_id": "x@example.com"}]), privacy=privacy)
    assert isinstance(out[-1], Rejected)
    text = b"".join(jsonbytes.dumps(vars(x)) for x in out if isinstance(x, NormalizedEvent))
    assert b"example.com" not in text.replace(b"alice@example.com", b"") or privacy.hashing


@HYP
@given(st.lists(variations() | hostile_values, min_size=1, max_size=6))
def test_arrays_match_with_privacy(docs: list) -> None:
    same(raw_json(docs), privacy=PRIVACY[1])


def test_tiny_depth_limits_and_kept_originals_take_the_pydantic_path() -> None:
    assert Decoder().fast
    assert Decoder(privacy=PRIVACY[1]).fast
    assert not Decoder(privacy=PRIVACY[1], keep_original=True).fast  # it copies each element as sent first
    assert not Decoder(limits=Limits(max_depth=3)).fast
    same(raw_json(make_event("d", state={"n": nest(2)})), limits=Limits(max_depth=3))
