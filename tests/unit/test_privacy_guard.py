"""The shortcuts in free-text redaction give the same result as the full patterns.

- ``redact_text`` runs the redaction patterns only on text its cheap guard (``_MAYBE``)
  matches: no text the patterns would change may pass the guard unchanged.
- ``Privacy.apply_measured`` measures an event's depth in its redaction walk (the decoder's
  fast path then skips its own depth walk): its TOO_DEEP flag must say exactly what
  ``nests_deeper`` says, at every limit.
"""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.core.ingest.decode import nests_deeper
from pipeline.core.privacy import (
    _MAYBE,
    _PATTERNS,
    CHANGED,
    TOO_DEEP,
    UNMEASURED,
    Privacy,
    _replacement,
    redact_text,
)

# what each pattern looks for, written as text (hypothesis builds matches of these)
_SHAPES = [
    r"\+\d{1,3}[ .-]?(?:\(?\d{1,4}\)?[ .-]?){2,5}\d{2,4}",  # international phone
    r"\(?\d{3}\)?[ .-]\d{3}[ .-]\d{4}",  # national phone
    r"\d(?:[ -]?\d){12,18}",  # card
    r"xox[abprs]-[A-Za-z0-9-]{10,12}",  # chat token, 15 characters
    r"(?:sk|pk|rk)-[A-Za-z0-9_-]{16,20}",
    r"gh[pousr]_[A-Za-z0-9]{20,24}",
    r"AKIA[0-9A-Z]{16}",
    r"eyJ[A-Za-z0-9_-]{5,8}\.[A-Za-z0-9_-]{5,8}\.[A-Za-z0-9_-]{5,8}",
    r"(?i:bearer) [A-Za-z0-9._~+/-]{8,12}",
    r"(?:password|token|api_key)\s?[:=]\s?[a-z0-9]{1,12}",
    r"[a-z0-9._%+-]{1,8}@[a-z0-9-]{1,8}\.[a-z]{2,4}",
    r"[A-Za-z0-9_+/-]{32,40}",  # long mixed secret
]
_NOISE = st.text(alphabet="abcXYZ0123456789 -.()+:=@_/\n", max_size=30)


def _full(text: str) -> str:
    return _PATTERNS.sub(_replacement, text)


@settings(max_examples=600, deadline=None)
@given(
    before=_NOISE,
    shape=st.sampled_from(_SHAPES).flatmap(lambda rx: st.from_regex(rx, fullmatch=True)),
    after=_NOISE,
)
def test_the_guard_never_skips_what_the_patterns_redact(before: str, shape: str, after: str) -> None:
    text = f"{before} {shape} {after}"
    assert redact_text(text) == _full(text)


@settings(max_examples=600, deadline=None)
@given(st.text(alphabet="abcdefXYZ0123456789 -.()+:=@_/'\"\t\n", max_size=80))
def test_the_guard_on_noise(text: str) -> None:
    if _full(text) != text:
        assert _MAYBE.search(text)
    assert redact_text(text) == _full(text)


def test_a_few_digits_in_prose_do_not_run_the_patterns() -> None:
    assert not _MAYBE.search("Fix step 4 of 8 in the billing service")
    assert _MAYBE.search("call +1 555 0100")  # a phone still does
    assert redact_text("card 4111 1111 1111 1111 ok") == "card [card] ok"
    assert redact_text("xoxb-1234567890 leaked") == "[token] leaked"


_LEAF = st.one_of(st.none(), st.integers(), st.text(max_size=6), st.sampled_from(["a@b.io", "+1 555 010 0199"]))
_KEYS = st.sampled_from(["x", "result", "error", "user_id", "tags", "n", "message"])


def _nested() -> st.SearchStrategy[Any]:
    return st.recursive(
        _LEAF,
        lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
        max_leaves=25,
    )


@settings(max_examples=400, deadline=None)
@given(
    doc=st.dictionaries(st.sampled_from(["current_state", "metadata", "error", "metrics", "x"]), _nested(), max_size=4),
    limit=st.integers(min_value=1, max_value=9),
)
def test_the_redaction_walk_measures_depth_like_nests_deeper(doc: dict[str, Any], limit: int) -> None:
    privacy = Privacy.build(None)
    plain = copy.deepcopy(doc)
    changed = privacy.apply(plain)
    flags = privacy.apply_measured(doc, limit)
    assert doc == plain  # the same redaction either way
    assert bool(flags & CHANGED) == changed
    assert not flags & UNMEASURED
    assert bool(flags & TOO_DEEP) == nests_deeper(doc, limit)


def test_depth_is_unmeasured_where_the_walk_does_not_look() -> None:
    assert Privacy.build(None, redact=False).apply_measured({"a": {"b": {}}}, 64) & UNMEASURED
    assert Privacy.build(None).apply_measured({"id": [[[[]]]]}, 64) & UNMEASURED  # an envelope id
    assert not Privacy.build(None).apply_measured({"x": [[[[]]]]}, 64) & UNMEASURED
