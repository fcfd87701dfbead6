"""A small HTTP client for the API tests (urllib: nothing of the code under test)."""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.integration.conftest import Worker


def call(
    base: str, method: str, path: str, body: bytes | None = None, token: str = "",
    headers: dict[str, str] | None = None, timeout: float = 60,
) -> tuple[int, dict[str, str], Any]:  # fmt: skip
    """(status, headers with lower-case names, JSON body or text) of one request."""
    h = dict(headers or {})
    if token:
        h["Authorization"] = f"Bearer {token}"
    if body is not None:
        h.setdefault("Content-Type", "application/json")
    req = urllib.request.Request(f"{base}{path}", data=body, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, hdrs, raw = r.status, {k.lower(): v for k, v in r.headers.items()}, r.read()
    except urllib.error.HTTPError as exc:
        status, hdrs, raw = exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()
    try:
        return status, hdrs, json.loads(raw) if raw else None
    except json.JSONDecodeError:
        return status, hdrs, raw.decode(errors="replace")


def get(w: Worker, path: str, token: str = "", **params: Any) -> Any:
    """The JSON of a GET that must answer 200."""
    query = urllib.parse.urlencode([(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])])
    status, _, body = call(w.api, "GET", f"{path}?{query}" if query else path, token=token or w.token)
    assert status == 200, (path, params, status, body)
    return body


def all_pages(w: Worker, path: str, token: str = "", **params: Any) -> list[dict[str, Any]]:
    """Every item of a paged list, following ``next_cursor``."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(10_000):
        page = get(w, path, token, **params, **({"cursor": cursor} if cursor else {}))
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("paging did not end")


def tokens_file(path: Path, tokens: dict[str, tuple[str, str]]) -> Path:
    """A tokens file with ``name → (role, secret)``."""
    path.write_text(
        "".join(f"{n}:{role}:sha256:{hashlib.sha256(s.encode()).hexdigest()}\n" for n, (role, s) in tokens.items())
    )
    return path
