"""API tokens: the tokens file, constant-time lookup, roles and what each route needs."""

from __future__ import annotations

import pytest

from pipeline.core.auth import (
    Role,
    TokenFileError,
    TokenTable,
    bearer,
    body_type_allowed,
    hash_secret,
    parse_tokens,
    required_role,
    token_line,
)


def test_a_created_line_reads_back_and_authenticates_its_secret_only() -> None:
    line = token_line("grafana", "reader", "s3cret-value-0123456789")
    assert line == f"grafana:reader:sha256:{hash_secret('s3cret-value-0123456789')}"
    table = TokenTable(parse_tokens(f"# comment\n\n{line}\n"))
    who = table.authenticate("s3cret-value-0123456789")
    assert who is not None and (who.name, who.role) == ("grafana", Role.READER)
    assert table.authenticate("s3cret-value-012345678") is None
    assert table.authenticate("") is None


def test_the_file_never_holds_the_secret() -> None:
    assert "s3cret-value" not in token_line("ci", "writer", "s3cret-value-0123456789")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ci:reader:sha256", "expected name:role:sha256:<hex>"),
        ("ci:boss:sha256:" + "a" * 64, "unknown role 'boss'"),
        ("ci:reader:md5:" + "a" * 64, "sha256:<64 lowercase hex"),
        ("ci:reader:sha256:" + "A" * 64, "sha256:<64 lowercase hex"),
        ("ci:reader:sha256:abc", "sha256:<64 lowercase hex"),
        ("bad name:reader:sha256:" + "a" * 64, "bad token name"),
        (f"a:reader:sha256:{'a' * 64}\na:admin:sha256:{'b' * 64}", "line 3: token name 'a' appears twice"),
    ],
)
def test_a_bad_line_is_named_with_its_number(text: str, message: str) -> None:
    with pytest.raises(TokenFileError, match=message):
        parse_tokens("# header\n" + text)


def test_the_simple_token_is_admin_and_the_metrics_token_a_reader() -> None:
    table = TokenTable.build("admin-token-123", None, "metrics-token-456")
    assert table.enabled
    admin, scraper = table.authenticate("admin-token-123"), table.authenticate("metrics-token-456")
    assert admin is not None and admin.role is Role.ADMIN and admin.name == "api-token"
    assert scraper is not None and scraper.role is Role.READER and scraper.name == "metrics"
    assert not TokenTable.build().enabled


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        (Role.READER, {Role.READER}),
        (Role.WRITER, {Role.WRITER}),
        (Role.OPERATOR, {Role.READER, Role.OPERATOR}),
        (Role.ADMIN, set(Role)),
    ],
)
def test_roles_grant_what_they_say(role: Role, allowed: set[Role]) -> None:
    table = TokenTable.build(file_text=f"x:{role.value}:sha256:{hash_secret('secret-secret')}")
    who = table.authenticate("secret-secret")
    assert who is not None
    assert {r for r in Role if who.may(r)} == allowed


@pytest.mark.parametrize(
    ("method", "path", "role"),
    [
        ("GET", "/api/status", Role.READER),
        ("POST", "/api/sql", Role.READER),
        ("POST", "/api/v1/events", Role.WRITER),
        ("POST", "/api/v1/dlq/replay", Role.OPERATOR),
        ("POST", "/api/anything-new", Role.ADMIN),
        ("DELETE", "/api/v1/tasks/1", Role.ADMIN),
        ("GET", "/api/v1/audit", Role.ADMIN),
        ("POST", "/api/v1/privacy/erase", Role.ADMIN),
        ("GET", "/api/v1/privacy/export", Role.READER),
        ("POST", "/api/sqlx", Role.ADMIN),
    ],
)
def test_each_route_needs_its_role_and_unknown_writes_need_admin(method: str, path: str, role: Role) -> None:
    assert required_role(method, path) is role


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer ", None), (None, None)],
)
def test_bearer_header(header: str | None, token: str | None) -> None:
    assert bearer(header) == token


@pytest.mark.parametrize(
    ("content_type", "ok"),
    [
        ("application/json", True), ("application/json; charset=utf-8", True), ("application/x-ndjson", True),
        ("application/x-www-form-urlencoded", False), ("multipart/form-data; boundary=x", False),
        ("text/plain", False), (None, False),
    ],
)  # fmt: skip
def test_bodies_are_json_or_ndjson_never_forms(content_type: str | None, ok: bool) -> None:
    assert body_type_allowed(content_type) is ok
