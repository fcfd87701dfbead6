"""Attack: session cookies signed with what the tokens file holds."""

from __future__ import annotations

import base64
import hashlib
import hmac

from pipeline.core.auth import TokenTable, parse_tokens, token_line

FILE = token_line("ops", "admin", "a-random-secret-0123456789abcdef")  # what a leaked tokens file shows


def test_a_leaked_tokens_file_does_not_sign_a_session() -> None:
    # the session MAC was keyed with the token's SHA-256, which is the tokens file's content: a
    # reader of the file (a backup, a config repo) could mint an admin cookie valid for ever
    table = TokenTable(parse_tokens(FILE))
    digest = FILE.rsplit(":", 1)[1]
    name, expires = "ops", 9_999_999_999
    mac = hmac.new(bytes.fromhex(digest), f"session:{name}.{expires}".encode(), hashlib.sha256).digest()
    forged = f"{name}.{expires}.{base64.urlsafe_b64encode(mac).decode().rstrip('=')}"
    assert table.from_session(forged, 1_000) is None
    assert table.from_session(table.session("ops", 1_000, 60), 1_001) is not None


def test_replicas_with_the_same_session_secret_accept_each_others_sessions() -> None:
    one = TokenTable.build(file_text=FILE, session_secret="shared-session-secret-0123456789")
    two = TokenTable.build(file_text=FILE, session_secret="shared-session-secret-0123456789")
    other = TokenTable.build(file_text=FILE, session_secret="another-secret-0123456789abcdef")
    cookie = one.session("ops", 1_000, 60)
    assert two.from_session(cookie, 1_001) is not None
    assert other.from_session(cookie, 1_001) is None
    assert TokenTable.build(file_text=FILE).from_session(cookie, 1_001) is None  # no secret: this process's own
