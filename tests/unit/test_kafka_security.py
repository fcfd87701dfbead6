"""The Kafka and ClickHouse connection security built from Settings: what every client is
given, that secrets stay out of reprs and logs, that bad configuration fails clearly, and
that no Kafka client in pipeline/ is created without the security arguments.

SASL is tested here, as built client arguments (and as Faust's own translation of its
credentials), not against a broker: see tests/integration/test_tls.py for why.
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path
from typing import Any

import certifi
import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from pipeline.errors import ConfigError
from pipeline.kafka_security import KafkaSecurity, client_kwargs, faust_credentials
from pipeline.settings import Settings
from pipeline.sinks.clickhouse import tls_kwargs

ROOT = Path(__file__).resolve().parents[2]
CA = certifi.where()  # any valid PEM bundle


def _settings(**kw: Any) -> Settings:
    return Settings(kafka_url="kafka://broker.example.com:9096", **kw)


def test_plaintext_adds_nothing() -> None:
    assert client_kwargs(KafkaSecurity()) == {}
    assert faust_credentials(KafkaSecurity()) is None
    assert client_kwargs(KafkaSecurity.from_settings(_settings())) == {}


def test_embedded_broker_is_plaintext_whatever_the_settings_say() -> None:
    s = Settings(kafka_url="", kafka_security_protocol="SASL_SSL", kafka_sasl_username="u", kafka_sasl_password="p")
    assert KafkaSecurity.from_settings(s) == KafkaSecurity()


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_ssl_from_environment(monkeypatch: pytest.MonkeyPatch, mechanism: str) -> None:
    for key, value in {
        "KAFKA_URL": "kafka://b-1.example.com:9096,b-2.example.com:9096",
        "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
        "KAFKA_SSL_CAFILE": CA,
        "KAFKA_SASL_MECHANISM": mechanism,
        "KAFKA_SASL_USERNAME": "svc-taskpulse",
        "KAFKA_SASL_PASSWORD": "s3cret-pw",
    }.items():
        monkeypatch.setenv(f"TASKPULSE_{key}", value)
    kw = client_kwargs(KafkaSecurity.from_settings(Settings()))
    ctx = kw.pop("ssl_context")
    assert kw == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc-taskpulse",
        "sasl_plain_password": "s3cret-pw",
    }
    assert isinstance(ctx, ssl.SSLContext)
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert ctx.get_ca_certs(), "the CA file was not loaded"


def test_sasl_plaintext_has_no_tls_and_ssl_has_no_sasl() -> None:
    kw = client_kwargs(KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-256",
                                     sasl_username="u", sasl_password="p"))  # fmt: skip
    assert kw["security_protocol"] == "SASL_PLAINTEXT" and "ssl_context" not in kw
    kw = client_kwargs(KafkaSecurity(protocol="SSL", cafile=CA, check_hostname=False))
    assert set(kw) == {"security_protocol", "ssl_context"}
    assert kw["ssl_context"].check_hostname is False and kw["ssl_context"].verify_mode == ssl.CERT_REQUIRED


def test_ssl_without_cafile_uses_the_system_store() -> None:
    ctx = client_kwargs(KafkaSecurity(protocol="SSL"))["ssl_context"]
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname


@pytest.mark.parametrize("protocol", ["SSL", "SASL_SSL"])
def test_faust_gets_the_same_client_arguments(protocol: str) -> None:
    sec = KafkaSecurity(protocol=protocol, cafile=CA, sasl_mechanism="SCRAM-SHA-512",  # type: ignore[arg-type]
                        sasl_username="u", sasl_password="p")  # fmt: skip
    creds = faust_credentials(sec)
    assert isinstance(creds, faust.SASLCredentials if protocol == "SASL_SSL" else faust.SSLCredentials)
    theirs = dict(credentials_to_aiokafka_auth(creds))
    ours = client_kwargs(sec)
    assert isinstance(theirs.pop("ssl_context"), ssl.SSLContext)
    ours.pop("ssl_context")
    assert theirs == ours


@pytest.mark.parametrize(
    ("security", "needle"),
    [
        (KafkaSecurity(protocol="SASL_SSL", sasl_username="u"), "TASKPULSE_KAFKA_SASL_PASSWORD"),
        (KafkaSecurity(protocol="SASL_PLAINTEXT", sasl_password="p"), "TASKPULSE_KAFKA_SASL_USERNAME"),
        (KafkaSecurity(protocol="SSL", cafile="/nonexistent/ca.pem"), "TASKPULSE_KAFKA_SSL_CAFILE"),
        (KafkaSecurity(protocol="SSL", cafile=CA, keyfile=CA), "TASKPULSE_KAFKA_SSL_CERTFILE"),
        (KafkaSecurity(protocol="SSL", cafile=__file__), "cannot load the Kafka TLS files"),
    ],
)
def test_bad_configuration_fails_clearly(security: KafkaSecurity, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        client_kwargs(security)


def test_secrets_stay_out_of_repr_and_masked_settings() -> None:
    sec = KafkaSecurity(protocol="SASL_SSL", sasl_username="u", sasl_password="pw-in-repr", key_password="kp-in-repr")
    assert "pw-in-repr" not in repr(sec) and "kp-in-repr" not in repr(sec)
    assert "pw-in-repr" not in sec.describe()
    s = _settings(
        kafka_sasl_password="sasl-secret", kafka_ssl_key_password="key-secret",
        clickhouse_read_url="https://reader:url-secret@ch.example.com:8443",
        clickhouse_read_password="read-secret",
    )  # fmt: skip
    text = repr(s.masked())
    for secret in ("sasl-secret", "key-secret", "url-secret", "read-secret"):
        assert secret not in text, secret
    assert s.masked()["kafka_sasl_password"] == "***"


def test_clickhouse_tls_arguments() -> None:
    assert tls_kwargs("http://u@clickhouse:8123", CA) == {}
    assert tls_kwargs("chdb:///data") == {}
    # the scheme decides, whatever the port (clickhouse-connect alone would infer TLS from 8443 only)
    assert tls_kwargs("https://u@ch.example.com:9440", CA) == {"interface": "https", "verify": True, "ca_cert": CA}
    assert tls_kwargs("HTTPS://ch:8443", "", True, CA, CA) == {
        "interface": "https", "verify": True, "client_cert": CA, "client_cert_key": CA,
    }  # fmt: skip
    with pytest.raises(ConfigError, match="TASKPULSE_CLICKHOUSE_CA_FILE"):
        tls_kwargs("https://ch:8443", "/nonexistent/ca.pem")


def _calls(text: str, name: str) -> list[str]:
    """The argument text of every ``name(...)`` call (balanced parentheses)."""
    out = []
    for m in re.finditer(rf"\b{name}\(", text):
        depth, i = 1, m.end()
        while depth:
            depth += {"(": 1, ")": -1}.get(text[i], 0)
            i += 1
        out.append(text[m.end() : i - 1])
    return out


def test_every_kafka_client_in_the_pipeline_gets_the_security_arguments() -> None:
    """A client added later without TLS/SASL would connect in plaintext to a managed Kafka."""
    checked = 0
    for path in sorted((ROOT / "pipeline").rglob("*.py")):
        text = path.read_text()
        for name in ("AIOKafkaConsumer", "AIOKafkaProducer", "AIOKafkaAdminClient", "OutputProducer"):
            for args in _calls(text, name):
                if not args.strip():  # a type annotation or isinstance, not a construction
                    continue
                checked += 1
                assert "kwargs" in args, f"{path.relative_to(ROOT)}: {name}({args.strip()[:80]}…) has no TLS/SASL"
        for args in _calls(text, "LeanApp"):
            if "," not in args:  # the class statement
                continue
            checked += 1
            assert "broker_credentials=" in args, f"{path.relative_to(ROOT)}: the Faust app has no credentials"
    assert checked >= 8, checked
