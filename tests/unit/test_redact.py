"""Secrets never leave the process: redaction of text, log records and settings."""

from __future__ import annotations

import logging

import pytest

from pipeline.settings import Settings, install_log_redaction, redact, secret_values, url_for_display

HOOK = "https://hooks.slack.com/services/T000/B000/XXXXXXXXSECRET"


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        ("http://default:pa55word@clickhouse:8123", "pa55word"),
        (f"POST {HOOK} failed", "XXXXXXXXSECRET"),
        ("https://discord.com/api/webhooks/123/tok3n-value", "tok3n-value"),
        ("GET http://h/x?a=1&access_token=tok3n-value&b=2", "tok3n-value"),
        ("http://h/x?apikey=tok3n-value", "tok3n-value"),
        ("Authorization: Bearer tok3n-value", "tok3n-value"),
        ("https://tok3n-value@github.com/x", "tok3n-value"),
    ],
)
def test_redact_removes_the_secret_and_keeps_the_rest(text: str, secret: str) -> None:
    out = redact(text)
    assert secret not in out
    assert "***" in out


def test_known_secrets_are_replaced_anywhere() -> None:
    assert redact("answer from /my/private/hook-path", ["/my/private/hook-path"]) == "answer from ***"
    assert redact("kafka://a:9092 ok") == "kafka://a:9092 ok"


def test_a_webhook_url_is_shown_as_its_host_only() -> None:
    assert url_for_display(HOOK) == "https://hooks.slack.com/…"
    assert url_for_display("http://127.0.0.1:9/") == "http://127.0.0.1:9"


def test_settings_list_their_secrets_and_mask_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKPULSE_ALERT_WEBHOOK_URL", "http://10.0.0.1:8080/hook/abcdef123456")
    monkeypatch.setenv("TASKPULSE_API_TOKEN", "api-token-value")
    monkeypatch.setenv("TASKPULSE_ALERTMANAGER_URL", "http://am:pw-value-1@am:9093")
    s = Settings()
    values = secret_values(s)
    assert {"api-token-value", "/hook/abcdef123456", "pw-value-1"} <= set(values)
    masked = str(s.masked())
    assert not any(v in masked for v in values)


def test_log_records_and_tracebacks_are_redacted(caplog: pytest.LogCaptureFixture) -> None:
    old = logging.getLogRecordFactory()
    install_log_redaction(["very-secret-value"])
    try:
        log = logging.getLogger("test.redact")
        with caplog.at_level(logging.INFO, "test.redact"):
            log.info("calling %s", "http://h/very-secret-value")
            try:
                raise RuntimeError("failed: very-secret-value")
            except RuntimeError:
                log.exception("boom")
        text = caplog.text + "".join(logging.Formatter().format(r) for r in caplog.records)
        assert "very-secret-value" not in text
        assert "calling http://h/***" in text
    finally:
        install_log_redaction([])
        logging.setLogRecordFactory(old)
