"""Attack on ``redact``: a URL password that itself holds ``@`` (written unencoded, as
people do in environment variables) must not leak its tail into logs or status fields."""

from __future__ import annotations

from pipeline.settings import Settings, redact, secret_values


def test_a_password_with_at_signs_is_redacted_whole() -> None:
    out = redact("cannot reach kafka://bob:p@ss-w0rd-xyz@broker:9092 (timeout)")
    assert "ss-w0rd-xyz" not in out and "broker:9092" in out and "bob" in out


def test_two_urls_on_a_line_keep_their_hosts() -> None:
    out = redact("from http://u:secret1@a.example/x to http://v:secret2@b.example/y")
    assert "secret1" not in out and "secret2" not in out
    assert "a.example/x" in out and "b.example/y" in out


def test_the_whole_password_with_at_signs_is_a_known_secret() -> None:
    s = Settings(clickhouse_url="http://bob:p@ss-w0rd-xyz@ch.example:8123/")
    assert "p@ss-w0rd-xyz" in secret_values(s)
