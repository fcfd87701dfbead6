"""Privacy at ingest: pseudonymised user identifiers and redacted free text.  Pure.

Applied to an event document (the parsed JSON object) before it is validated, so nothing
downstream — the normalized topic, ClickHouse, exports, reports, the DLQ — ever sees a raw
user id or an e-mail address in a request.

- **Pseudonyms.**  Every string under a configured identifier name (``user_id``,
  ``requester_id``, ``session_id``, ``email`` … at any depth of the states, the metadata and
  extra envelope fields; the ``id`` of an object under such a name, ``{"requester": {"id":
  …}}``; the configured paths such as ``metadata.session_id``), and the ``entity_id`` of a
  ``user`` entity, is replaced by ``PREFIX + HMAC-SHA256(key, id)`` (the
  first 128 bits, hex).  The same id always maps to the same pseudonym under one key, so
  counts, joins and erasure still work; a value that already is a pseudonym is never hashed
  again.  Without a key nothing is hashed.
- **Redaction.**  Free-text fields (the request, error messages and stacks, results) have
  e-mail addresses, phone numbers, payment card numbers (Luhn-checked), credentials
  (``password=…``, bearer tokens, JWTs, cloud and chat API keys, long mixed-case secrets)
  replaced by ``[email]`` / ``[phone]`` / ``[card]`` / ``[token]``; configured field paths
  are replaced whole by ``[redacted]``.  Dates, UUIDs, hex digests and plain numbers are
  left alone.
"""

from __future__ import annotations

import functools
import hmac
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

PREFIX = "pn_"
_DIGEST_HEX = 32  # 128 bits: no collision among the users of any fleet
_PSEUDONYM = re.compile(rf"^{PREFIX}[0-9a-f]{{{_DIGEST_HEX}}}$")

#: identifier names replaced wherever they appear in an event's states (and their ``_raw``
#: twins, which the decoder writes when a value came in another form)
DEFAULT_ID_NAMES = (
    "user_id", "requester_id", "session_id", "user", "requester", "email", "user_email", "requester_email",
)  # fmt: skip
#: dotted paths from the event's root that hold identifiers under other names
DEFAULT_ID_PATHS = ("metadata.session_id", "current_state.requester.id", "previous_state.requester.id")
#: free-text names whose string values (at any depth of the states) are redacted by pattern
DEFAULT_TEXT_NAMES = (
    "request", "request_text", "text", "description", "error", "error_message", "message",
    "stack_trace", "stack", "traceback", "result", "results", "output", "comment", "feedback",
)  # fmt: skip
REDACTED = "[redacted]"

_STATES = ("current_state", "previous_state")
#: envelope fields that identify the event itself, never a person
_ENVELOPE_IDS = frozenset({"id", "event_type", "entity_type", "timestamp"})
#: exact types (a bool is no id; parsed JSON holds only these containers)
_CONTAINERS = frozenset({dict, list})
_ID_TYPES = frozenset({str, int})


def pseudonym(key: bytes, raw: str) -> str:
    """The pseudonym of ``raw`` under ``key``; a pseudonym is returned as it is."""
    if is_pseudonym(raw):
        return raw
    return _pseudonym(key, raw)


@functools.lru_cache(maxsize=65_536)  # a fleet's users repeat: most events hash nothing
def _pseudonym(key: bytes, raw: str) -> str:
    return PREFIX + hmac.digest(key, raw.encode("utf-8", "surrogatepass"), "sha256").hex()[:_DIGEST_HEX]


def is_pseudonym(value: str) -> bool:
    return len(value) == len(PREFIX) + _DIGEST_HEX and _PSEUDONYM.match(value) is not None


def pseudonyms_of(keys: Sequence[bytes], user: str) -> list[str]:
    """What ``user`` (a raw id or a pseudonym) is stored as: its pseudonym under the current
    key and every previous one (rotation), or the pseudonym itself; the raw id when no key
    is set (nothing was hashed)."""
    if is_pseudonym(user) or not keys:
        return [user]
    return list(dict.fromkeys(pseudonym(k, user) for k in keys))


# --------------------------------------------------------------------------- redaction

def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i % 2:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return total % 10 == 0


_SECRET_KV = r"(?i:\b(?:password|passwd|pwd|secret|api[_-]?key|access[_-]?token|auth[_-]?token|token)\b\s*[:=]\s*)"  # noqa: S105 - a pattern
_PATTERNS = re.compile(
    "|".join(
        [
            r"(?P<kv>" + _SECRET_KV + r")(?P<kvval>\"[^\"]*\"|'[^']*'|[^\s,;&]+)",
            r"(?P<email>[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})",
            r"(?P<bearer>(?i:bearer)\s+[A-Za-z0-9._~+/-]{8,}=*)",
            r"(?P<jwt>\beyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,})",
            r"(?P<apikey>\b(?:sk|pk|rk)-[A-Za-z0-9_-]{16,}|\bgh[pousr]_[A-Za-z0-9]{20,}|\bxox[abprs]-[A-Za-z0-9-]{10,}"
            r"|\bAKIA[0-9A-Z]{16}\b|\bAIza[0-9A-Za-z_-]{30,})",
            r"(?P<card>(?<![\w-])\d(?:[ -]?\d){12,18}(?![\w-]))",
            r"(?P<phone>(?<![\w+])\+\d{1,3}[\s.-]?(?:\(?\d{1,4}\)?[\s.-]?){2,5}\d{2,4}(?!\w)"
            r"|(?<![\w-])\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}(?![\w-]))",
            r"(?P<secret>(?<![A-Za-z0-9_+/=-])(?=[A-Za-z0-9_+/-]*[a-z])(?=[A-Za-z0-9_+/-]*[A-Z])"
            r"(?=[A-Za-z0-9_+/-]*\d)[A-Za-z0-9_+/-]{32,}={0,2}(?![A-Za-z0-9_+/=-]))",
        ]
    )
)
# A cheap look before the regex (which costs ~10 µs on a line of text): text without '@',
# ':' or '=', a run of 5+ digits and separators (the shortest phone; a card has 13), "bearer",
# "eyJ", "xox" or a 16-character word has nothing to redact.  A few digits ("step 4 of 8")
# are no reason to run it.  tests/unit/test_privacy_guard.py holds it to the patterns.
_MAYBE = re.compile(r"[@:=]|\d[\d\s().-]{3,}\d|[A-Za-z0-9_+/-]{16}|(?i:bearer)|eyJ|xox")


def _replacement(m: re.Match[str]) -> str:
    kind = m.lastgroup
    if kind == "kvval":
        return m.group("kv") + "[token]"
    if kind == "card":
        digits = re.sub(r"[ -]", "", m.group(0))
        return "[card]" if _luhn(digits) else m.group(0)
    if kind in ("bearer", "jwt", "apikey", "secret"):
        return "[token]"
    return f"[{kind}]"


def redact_text(text: str) -> str:
    """``text`` with e-mails, phone and card numbers and credentials replaced."""
    if not _MAYBE.search(text):
        return text
    return _PATTERNS.sub(_replacement, text)


# --------------------------------------------------------------------------- rules

@dataclass(frozen=True)
class Privacy:
    """What to pseudonymise and redact.  ``keys[0]`` hashes; later keys (rotation) are only
    used to find what an erasure or an export must match."""

    keys: tuple[bytes, ...] = ()
    id_names: frozenset[str] = frozenset(DEFAULT_ID_NAMES)
    id_paths: tuple[tuple[str, ...], ...] = tuple(tuple(p.split(".")) for p in DEFAULT_ID_PATHS)
    text_names: frozenset[str] = frozenset(DEFAULT_TEXT_NAMES)
    drop_paths: tuple[tuple[str, ...], ...] = ()
    redact: bool = True
    _names_raw: frozenset[str] = field(init=False, repr=False, default=frozenset())
    _text_keys: frozenset[str] = field(init=False, repr=False, default=frozenset())
    _active: bool = field(init=False, repr=False, default=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_names_raw", frozenset(f"{n}_raw" for n in self.id_names))
        object.__setattr__(self, "_text_keys", self.text_names | {f"{n}_raw" for n in self.text_names})
        object.__setattr__(self, "_active", self.active)  # asked for every event

    @classmethod
    def build(
        cls,
        key: str | None,
        previous_keys: Iterable[str] = (),
        extra_fields: Iterable[str] = (),
        drop_fields: Iterable[str] = (),
        redact: bool = True,
    ) -> Privacy:
        """Rules from settings: ``extra_fields`` are names (``customer_id``) or dotted paths
        (``metadata.client.email``) holding identifiers; ``drop_fields`` dotted paths whose
        values are replaced whole."""
        keys = tuple(k.encode() for k in [key or "", *previous_keys] if k) if key else ()
        names = set(DEFAULT_ID_NAMES)
        paths = [tuple(p.split(".")) for p in DEFAULT_ID_PATHS]
        for f in extra_fields:
            f = f.strip()
            if not f:
                continue
            if "." in f:
                paths.append(tuple(f.split(".")))
            else:
                names.add(f)
        drops = tuple(tuple(p.strip().split(".")) for p in drop_fields if p.strip())
        return cls(keys=keys, id_names=frozenset(names), id_paths=tuple(paths), drop_paths=drops, redact=redact)

    @property
    def hashing(self) -> bool:
        return bool(self.keys)

    @property
    def active(self) -> bool:
        return self.hashing or self.redact or bool(self.drop_paths)

    def apply(self, doc: Any) -> bool:
        """Pseudonymise and redact one event document in place; True when anything changed."""
        return bool(self.apply_measured(doc, _NO_LIMIT) & CHANGED)

    def apply_measured(self, doc: Any, max_depth: int) -> int:
        """``apply``, telling in flags what it saw: ``CHANGED``; ``TOO_DEEP`` when the event
        nests deeper than ``max_depth`` levels (the event object is level 1); ``UNMEASURED``
        when its walks did not visit every container (redaction off, a container under an
        envelope id), so the depth is not known.  One walk does both (the decoder's fast path
        then needs no depth walk of its own)."""
        if type(doc) is not dict or not self._active:
            return UNMEASURED
        changed = False
        if self.drop_paths:
            for path in self.drop_paths:
                changed |= _replace_at(doc, path, lambda _v: REDACTED)
        if self.keys:
            key = self.keys[0]

            def hashed(value: Any) -> Any:
                return pseudonym(key, value) if isinstance(value, str) and value else value

            if doc.get("entity_type") == "user" and isinstance(doc.get("entity_id"), str):
                new = hashed(doc["entity_id"])
                changed |= new != doc["entity_id"]
                doc["entity_id"] = new
            for path in self.id_paths:
                changed |= _replace_at(doc, path, hashed)
            for name, node in doc.items():
                if name not in _ENVELOPE_IDS and type(node) in _CONTAINERS:
                    changed |= self._walk(node, hashed, 0)
        flags = CHANGED if changed else 0
        if not self.redact:
            return flags | UNMEASURED
        # a container at walk depth d is at level d + 2 (the event object is level 1)
        # top-level names count as free text when they are text names (not their _raw twins,
        # which only the decoder writes, below the top level); below, text names and twins
        text_names, text_keys, deep = self.text_names, self._text_keys, max_depth - 2
        if max_depth >= _WALK_LEVELS:  # the walks stop at _WALK_DEPTH: a level past it is not seen
            flags |= UNMEASURED
        for name, node in doc.items():  # values replaced, never keys added: safe to iterate
            t = type(node)
            if t is dict or t is list:
                if name in _ENVELOPE_IDS:
                    flags |= UNMEASURED
                elif not node:  # nothing to redact in it ({} states, metrics): no call
                    if deep < 0:
                        flags |= TOO_DEEP
                elif name in text_names:
                    flags |= _redact_inside(node, 0, deep)
                else:
                    flags |= _redact_outside(node, text_keys, 0, deep)
            elif t is str and name in text_names and name not in _ENVELOPE_IDS:
                new_text = redact_text(node)
                if new_text != node:
                    doc[name] = new_text
                    flags |= CHANGED
        return flags

    def _walk(self, node: Any, hashed: Any, depth: int) -> bool:
        changed = False
        if depth > _WALK_DEPTH:
            return False
        if isinstance(node, dict):
            for k, v in node.items():
                if (k in self.id_names or k in self._names_raw) and type(v) in _ID_TYPES and v != "":
                    new = hashed(str(v))
                    if new != v:
                        node[k] = new
                        changed = True
                elif type(v) in _CONTAINERS:
                    if type(v) is dict and k in self.id_names and type(v.get("id")) in _ID_TYPES and v["id"] != "":
                        new = hashed(str(v["id"]))  # {"user": {"id": …}}, {"requester": {"id": …}}
                        if new != v["id"]:
                            v["id"] = new
                            changed = True
                    changed |= self._walk(v, hashed, depth + 1)
        elif isinstance(node, list):
            for v in node:
                if type(v) in _CONTAINERS:
                    changed |= self._walk(v, hashed, depth + 1)
        return changed

    def scrub_bytes(self, raw: bytes) -> tuple[bytes, bool]:
        """A rejected message's original made safe to keep: parsed and treated like an event
        (each element of an array) when it is JSON, else redacted as text with identifier
        values hashed by pattern.  Returns (bytes, changed)."""
        try:
            doc = orjson.loads(raw)
        except (orjson.JSONDecodeError, RecursionError):
            doc = None
        if isinstance(doc, dict | list):
            docs = doc if isinstance(doc, list) else [doc]
            changed = False
            for i, d in enumerate(docs):
                if _deeper(d, _WALK_LEVELS):  # the walks stop there: what lies below is not kept
                    docs[i] = d = _clip(d, _WALK_LEVELS)
                    changed = True
                changed |= self.apply(d)
            if not isinstance(doc, list):
                doc = docs[0]
            if not changed:
                return raw, False
            try:
                return orjson.dumps(doc), True
            except (TypeError, orjson.JSONEncodeError):
                pass
        # escapes read as the characters they stand for: "\\u0075ser_id", "a\\u0040b.com"
        text = _unescape(raw.decode("utf-8", "replace"))
        new = text
        if self.hashing:
            key = self.keys[0]
            names = "|".join(re.escape(n) for n in sorted(self.id_names | {p[-1] for p in self.id_paths}))
            new = re.sub(
                rf'("(?:{names})"\s*:\s*")((?:[^"\\]|\\.)*)(")',
                lambda m: m.group(1) + pseudonym(key, m.group(2)) + m.group(3),
                new,
            )
        if self.redact:
            new = redact_text(new)
        if new == text:
            return raw, False
        return new.encode("utf-8"), True


#: container depth below an event's top level that ``apply``'s walks visit: every level of the
#: deepest event TASKPULSE_MAX_DEPTH lets through (at most 250); the levels of an event (its
#: object the first) that they cover, below which a DLQ original is cut
_WALK_DEPTH = 250
_WALK_LEVELS = _WALK_DEPTH + 2
_ESCAPE = re.compile(r"\\u([0-9a-fA-F]{4})")


#: ``Privacy.apply_measured``'s flags
CHANGED, TOO_DEEP, UNMEASURED = 1, 2, 4
_NO_LIMIT = _WALK_DEPTH + 4


def _redact_outside(node: Any, text_keys: frozenset[str], depth: int, deep: int) -> int:
    """Redact the strings under text names in ``node`` (a container not under one); flags."""
    if depth > _WALK_DEPTH:
        return 0
    flags = TOO_DEEP if depth > deep else 0
    if type(node) is dict:
        for k, v in node.items():  # values replaced in place, never keys added
            t = type(v)
            if t is str:
                if k in text_keys:
                    new = redact_text(v)
                    if new != v:
                        node[k] = new
                        flags |= CHANGED
            elif t is dict or t is list:
                if not v:
                    if depth >= deep:
                        flags |= TOO_DEEP
                elif k in text_keys:
                    flags |= _redact_inside(v, depth + 1, deep)
                else:
                    flags |= _redact_outside(v, text_keys, depth + 1, deep)
    else:
        for v in node:  # a list's strings have no name: only its containers are looked into
            t = type(v)
            if t is dict or t is list:
                flags |= _redact_outside(v, text_keys, depth + 1, deep)
    return flags


def _redact_inside(node: Any, depth: int, deep: int) -> int:
    """Redact every string in ``node`` (a container under a text name); flags."""
    if depth > _WALK_DEPTH:
        return 0
    flags = TOO_DEEP if depth > deep else 0
    items: Iterable[tuple[Any, Any]] = node.items() if type(node) is dict else enumerate(node)
    for k, v in items:
        t = type(v)
        if t is str:
            new = redact_text(v)
            if new != v:
                node[k] = new
                flags |= CHANGED
        elif t is dict or t is list:
            flags |= _redact_inside(v, depth + 1, deep)
    return flags


def _unescape(text: str) -> str:
    """``\\uXXXX`` escapes replaced by their characters (surrogates left as they are)."""
    if "\\u" not in text:
        return text
    def char(m: re.Match[str]) -> str:
        code = int(m.group(1), 16)
        return m.group(0) if 0xD800 <= code <= 0xDFFF else chr(code)

    return _ESCAPE.sub(char, text)


def _deeper(node: Any, levels: int) -> bool:
    """``node`` nests more than ``levels`` levels of containers."""
    if type(node) not in _CONTAINERS:
        return False
    if levels <= 0:
        return True
    values = node.values() if type(node) is dict else node
    return any(_deeper(v, levels - 1) for v in values)


def _clip(node: Any, levels: int) -> Any:
    """``node`` with every container below ``levels`` levels replaced by ``"…"``."""
    if type(node) not in _CONTAINERS:
        return node
    if levels <= 0:
        return "…"
    if type(node) is dict:
        return {k: _clip(v, levels - 1) for k, v in node.items()}
    return [_clip(v, levels - 1) for v in node]


def _replace_at(doc: dict[str, Any], path: Sequence[str], fn: Any) -> bool:
    node: Any = doc
    for part in path[:-1]:
        if not isinstance(node, dict):
            return False
        node = node.get(part)
    if not isinstance(node, dict) or path[-1] not in node:
        return False
    old = node[path[-1]]
    if old is None or old == "":
        return False
    new = fn(old)
    if new == old:
        return False
    node[path[-1]] = new
    return True


# --------------------------------------------------------------------------- erasure

_PSEUDONYM_IN_TEXT = re.compile(rf"{PREFIX}[0-9a-f]{{{_DIGEST_HEX}}}")


def mentions(text: str, erased: frozenset[str]) -> bool:
    """Whether ``text`` (a serialized event, a row's cell) names any of ``erased`` (pseudonyms;
    raw ids when no key is set: then matched as JSON strings or whole cells)."""
    if not erased or not text:
        return False
    if text in erased:
        return True
    for found in _PSEUDONYM_IN_TEXT.findall(text):
        if found in erased:
            return True
    raw = [e for e in erased if not is_pseudonym(e)]
    return any(orjson.dumps(e).decode() in text for e in raw)


def erasure_ddl(db: str) -> str:
    """The erasure list: every person erased (as stored: a pseudonym, or the raw id when no key
    was set).  Writers drop what names one of them, so a replay never writes it back.  No TTL:
    Kafka may hold a person's events as long as its retention."""
    return f"""CREATE TABLE IF NOT EXISTS {db}.erasures
(
    subject String,
    erased_at DateTime64(3, 'UTC'),
    erased_by String
)
ENGINE = ReplacingMergeTree(erased_at)
ORDER BY subject"""


AUDIT_COLUMNS = ["at", "who", "role", "action", "target", "rows", "status", "detail"]


def audit_ddl(db: str, ttl: str) -> str:
    """Who did what, when: every API query, SQL, export, report, replay and erasure."""
    return f"""CREATE TABLE IF NOT EXISTS {db}.audit
(
    at DateTime64(3, 'UTC'),
    who String,
    role LowCardinality(String),
    action LowCardinality(String),
    target String,
    rows Int64,
    status UInt16,
    detail String
)
ENGINE = MergeTree
ORDER BY at
TTL {ttl}"""
