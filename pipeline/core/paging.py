"""Keyset pagination for the API's lists: a page ends with an opaque cursor that holds the
sort order and the last row's key; the next page starts strictly after that key, so every
row is visited once even while rows are added.  A shared core module (tasks, agents, groups
and alerts page the same way).  Pure.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

_NOT_OURS = "cursor is not one this API issued: pass the `next_cursor` of the previous page"


class Filters:
    """A list query's WHERE clause and its parameters, built one condition at a time."""

    def __init__(self, limit: int) -> None:
        self.parts: list[str] = ["1"]
        self.params: dict[str, Any] = {"limit": int(limit) + 1}  # one more: is there a next page?

    def add(self, condition: str, **params: Any) -> None:
        self.parts.append(condition)
        self.params.update(params)

    @property
    def sql(self) -> str:
        return " AND ".join(self.parts)


class BadCursor(ValueError):
    """The cursor was not issued for this list (or was altered)."""


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after ``key`` in the order ``sort``."""

    sort: str
    key: tuple[Any, ...]

    def encode(self) -> str:
        raw = orjson.dumps({"s": self.sort, "k": list(self.key)})
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, text: str, sort: str, arity: int, types: tuple[type, ...] | None = None) -> Cursor:
        """The cursor ``text`` of a list sorted by ``sort`` whose key has ``arity`` parts (of
        ``types``, when given: an ``int`` part is an Int64, a ``str`` part a string)."""
        try:
            doc = orjson.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError, orjson.JSONDecodeError) as exc:
            raise BadCursor(_NOT_OURS) from exc
        if not isinstance(doc, dict) or not isinstance(doc.get("k"), list) or len(doc["k"]) != arity:
            raise BadCursor(_NOT_OURS)
        if doc.get("s") != sort:
            raise BadCursor(
                f"cursor belongs to sort={doc.get('s')!r}, not sort={sort!r}: keep the sort (and filters) "
                "of the first page"
            )
        if not all(isinstance(v, str | int | float) and not isinstance(v, bool) for v in doc["k"]):
            raise BadCursor(_NOT_OURS)
        if types is not None and not all(_is(v, t) for v, t in zip(doc["k"], types, strict=False)):
            raise BadCursor(_NOT_OURS)
        return cls(sort, tuple(doc["k"]))


def _is(value: Any, kind: type) -> bool:
    """``value`` is a ``kind`` as an issued cursor holds it (an int within Int64)."""
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    return isinstance(value, kind)


def page(rows: list[Any], limit: int, sort: str, key_of: Any) -> tuple[list[Any], str | None]:
    """The first ``limit`` of ``rows`` (fetched ``limit + 1``) and the cursor after the last
    one (None: this was the last page)."""
    if len(rows) <= limit:
        return rows, None
    shown = rows[:limit]
    return shown, Cursor(sort, tuple(key_of(shown[-1]))).encode()
