"""The ingest hot path's speed-ups (17e6dd2, 5d8bc92, 8ca3dc9) against the behaviour before
them (8b38a33): inputs found to give another result, held to the old one.

- A top-level field named like the ``_raw`` twin of a text name (``error_raw``, an extra
  field) was not free text before; ``apply_measured`` took it for one.
- An ISO-looking timestamp with trailing whitespace that does not parse was named stripped
  in its ``bad_timestamp`` detail; the ISO-first branch named it as sent.
- A depth limit past the redaction walk's reach (``Limits.max_depth`` >= 252, beyond what
  the settings allow): the walk did not see the levels past it and called the event
  measured, so the fast path accepted an event nested deeper than the limit.

One difference is intended and held the new way: a chat token with no digit
(``xoxa-bbbbbbbbbb``) was let through unredacted by the old guard.

The reference functions below are the pre-17e6dd2 code, copied.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.ingest.decode import Decoder, Limits, nests_deeper
from pipeline.core.privacy import _ENVELOPE_IDS, TOO_DEEP, UNMEASURED, Privacy, redact_text
from pipeline.core.timestamps import (
    _MAX_EPOCH_DIGITS,
    _MAX_MS,
    _MIN_MS,
    TimestampError,
    _is_number,
    epoch_to_ms,
    iso_to_ms,
    to_epoch_ms,
)
from pipeline.events import NormalizedEvent, Rejected, RejectReason
from tests.unit.helpers import DAY0_MS, dumps, make_event

NOW = DAY0_MS + 86_400_000


# --------------------------------------------------------------------------- reference (8b38a33)


def _ref_redact(privacy: Privacy, doc: dict[str, Any]) -> bool:
    """``Privacy.apply``'s redaction before 17e6dd2 (no keys, no drop paths)."""
    changed = False
    text_names = privacy.text_names
    for name, node in doc.items():
        t = type(node)
        if t is dict or t is list:
            if name not in _ENVELOPE_IDS:
                changed |= _ref_walk(privacy, node, name in text_names, 0)
        elif t is str and name in text_names and name not in _ENVELOPE_IDS:
            new_text = redact_text(node)
            if new_text != node:
                doc[name] = new_text
                changed = True
    return changed


def _ref_walk(privacy: Privacy, node: Any, inside: bool, depth: int) -> bool:
    changed = False
    if depth > 250:
        return False
    text_keys = privacy.text_names | {f"{n}_raw" for n in privacy.text_names}
    items = node.items() if type(node) is dict else enumerate(node)
    for k, v in items:
        t = type(v)
        if t is str:
            if inside or k in text_keys:
                new = redact_text(v)
                if new != v:
                    node[k] = new
                    changed = True
        elif t is dict or t is list:
            changed |= _ref_walk(privacy, v, inside or k in text_keys, depth + 1)
    return changed


def _ref_to_epoch_ms(value: object) -> int:
    """``to_epoch_ms`` before 17e6dd2."""
    if isinstance(value, bool):
        raise TimestampError("a boolean is not a timestamp")
    if isinstance(value, int | float):
        ms = epoch_to_ms(value)
    elif isinstance(value, str):
        stripped = value.strip()
        if len(stripped) > 4 and stripped[4] == "-":
            ms = iso_to_ms(stripped)
        elif stripped.isascii() and stripped.isdigit():
            if len(stripped) > _MAX_EPOCH_DIGITS:
                raise TimestampError(f"epoch value of {len(stripped)} digits is too large for any unit (s, ms, µs, ns)")
            ms = epoch_to_ms(int(stripped))
        elif stripped and stripped[0].isdigit() and _is_number(stripped):
            ms = epoch_to_ms(float(stripped))
        else:
            ms = iso_to_ms(stripped)
    else:
        raise TimestampError(f"a {type(value).__name__} is not a timestamp")
    if not _MIN_MS <= ms <= _MAX_MS:
        raise TimestampError(f"{value!r} lies outside the years 1 to 9999")
    return ms


def _outcome(fn: Any, value: object) -> tuple[str, object]:
    try:
        return "ok", fn(value)
    except TimestampError as exc:
        return "error", str(exc)


# --------------------------------------------------------------------------- top-level _raw names

SECRET = "mail bob@example.com or call +1 555 123 4567"


def test_a_top_level_raw_twin_of_a_text_name_is_no_free_text() -> None:
    doc = {"error_raw": SECRET, "request_raw": [SECRET, {"k": SECRET}], "text_raw": {"k": SECRET, "error": SECRET}}
    before = copy.deepcopy(doc)
    _ref_redact(Privacy.build(None), before)
    Privacy.build(None).apply(doc)
    assert doc == before
    assert doc["error_raw"] == SECRET and doc["request_raw"] == [SECRET, {"k": SECRET}]
    assert doc["text_raw"] == {"k": SECRET, "error": "mail [email] or call [phone]"}


@pytest.mark.parametrize("array", [False, True])
def test_a_top_level_raw_twin_reaches_the_event_extra_as_before(array: bool) -> None:
    doc = make_event("e1", "task.started", error_raw=SECRET, message=SECRET)
    out = Decoder(privacy=Privacy.build(None)).decode("t", 0, 0, dumps([doc] if array else doc), NOW)
    (event,) = out
    assert isinstance(event, NormalizedEvent)
    assert event.extra == {"error_raw": SECRET, "message": "mail [email] or call [phone]"}


_TEXTS = st.sampled_from([SECRET, "a@b.io", "+1 555 010 0199", "xoxb-1234567890", "ok", "4111 1111 1111 1111", ""])
_NAMES = st.sampled_from(["error", "error_raw", "result_raw", "message", "text_raw", "id", "timestamp", "x", "k"])


def _tree() -> st.SearchStrategy[Any]:
    return st.recursive(
        st.one_of(_TEXTS, st.integers(), st.none()),
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_NAMES, inner, max_size=3)),
        max_leaves=20,
    )


@settings(max_examples=400, deadline=None)
@given(doc=st.dictionaries(_NAMES, _tree(), max_size=5), limit=st.integers(min_value=1, max_value=12))
def test_redaction_matches_the_walk_before(doc: dict[str, Any], limit: int) -> None:
    privacy = Privacy.build(None)
    expected = copy.deepcopy(doc)
    changed = _ref_redact(privacy, expected)
    plain = copy.deepcopy(doc)
    assert privacy.apply(plain) == changed
    assert plain == expected
    privacy.apply_measured(doc, limit)
    assert doc == expected


# --------------------------------------------------------------------------- timestamps


@pytest.mark.parametrize(
    "value",
    ["2024-13-01T00:00:00Z ", "2024-01-01T25:00:00Z\t\n", "abcd- ", "2024-01-01T00:00:00Z\u3000", "2024-01-01 "],
)
def test_an_iso_timestamp_with_trailing_space_reads_as_before(value: str) -> None:
    assert _outcome(to_epoch_ms, value) == _outcome(_ref_to_epoch_ms, value)


def test_its_bad_timestamp_detail_names_it_stripped_as_before() -> None:
    doc = make_event("e1", "task.started", "2024-13-01T00:00:00Z ")
    (rejected,) = Decoder().decode("t", 0, 0, dumps(doc), NOW)
    assert isinstance(rejected, Rejected) and rejected.reason is RejectReason.bad_timestamp
    assert rejected.detail == "timestamp: '2024-13-01T00:00:00Z' is not ISO 8601 or an epoch number"


@settings(max_examples=600, deadline=None)
@given(
    head=st.text(alphabet="0123456789+- \t", min_size=0, max_size=5),
    body=st.text(alphabet="0123456789-:T.Z+ \t\n\u3000x", max_size=30),
)
def test_timestamp_text_reads_as_before(head: str, body: str) -> None:
    for value in (head + body, head[:4] + "-" + body, "2024-" + body):
        assert _outcome(to_epoch_ms, value) == _outcome(_ref_to_epoch_ms, value)


# --------------------------------------------------------------------------- depth past the walk


def _nested_event(levels: int, where: str) -> dict[str, Any]:
    """An event nesting ``levels`` levels (the event object is level 1)."""
    inner: Any = {}
    for _ in range(levels - 3):
        inner = {"k": inner} if where != "error" else [inner]
    doc = make_event("e1", "task.started")
    doc["current_state"][where] = inner
    return doc


@pytest.mark.parametrize("limit", [250, 251, 252, 253])  # past 254 orjson writes no DLQ copy
@pytest.mark.parametrize("where", ["x", "error"])
@pytest.mark.parametrize("array", [False, True])
def test_an_event_deeper_than_any_limit_is_too_deep_with_privacy_on(limit: int, where: str, array: bool) -> None:
    for levels in (limit, limit + 1):
        doc = _nested_event(levels, where)
        raw = json.dumps([doc] if array else doc).encode()
        plain = Decoder(limits=Limits(max_depth=limit)).decode("t", 0, 0, raw, NOW)
        private = Decoder(limits=Limits(max_depth=limit), privacy=Privacy.build(None)).decode("t", 0, 0, raw, NOW)
        assert [type(i) for i in private] == [type(i) for i in plain]
        assert nests_deeper(doc, limit) == (levels > limit)
        if levels > limit:
            assert isinstance(private[0], Rejected) and private[0].reason is RejectReason.too_deep


@pytest.mark.parametrize("limit", [250, 251, 252, 253, 300])
def test_the_walk_never_calls_an_event_measured_and_within_when_it_is_deeper(limit: int) -> None:
    for levels in (limit - 1, limit, limit + 1, limit + 2):
        doc = _nested_event(levels, "x")
        flags = Privacy.build(None).apply_measured(doc, limit)
        if not flags & (TOO_DEEP | UNMEASURED):
            assert not nests_deeper(doc, limit)
        if flags & TOO_DEEP:
            assert nests_deeper(doc, limit)


# --------------------------------------------------------------------------- the guard: one intended difference


def test_a_chat_token_without_digits_is_redacted_now() -> None:
    """Before 17e6dd2 the guard let a 15-character chat token with no digit through unredacted
    (no '@', ':', '=', digit or 16-character word in it); the "xox" look catches it."""
    assert redact_text("xoxa-bbbbbbbbbb") == "[token]"
    assert redact_text("see xoxp-abcdefghij here") == "see [token] here"
