"""How every Kafka client of taskpulse connects: TLS (with CA verification, optionally a client
certificate) and SASL (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), from Settings.

One description (``KafkaSecurity``) and two translations of it: keyword arguments for
aiokafka's consumers, producers and admin client (``client_kwargs``), and Faust's
``broker_credentials`` (``faust_credentials``), so the Faust app, the direct ingest engine,
the output producers, topic creation, the metrics consumer and the SDK all connect alike.
PLAINTEXT (the default, and the embedded broker) adds nothing to any client.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiokafka.helpers import create_ssl_context

from pipeline.errors import ConfigError
from pipeline.settings import Settings

Protocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
Mechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


@dataclass(frozen=True)
class KafkaSecurity:
    """Transport security and authentication of a Kafka connection (secrets kept out of repr)."""

    protocol: Protocol = "PLAINTEXT"
    cafile: str = ""
    certfile: str = ""
    keyfile: str = ""
    key_password: str = field(default="", repr=False)
    check_hostname: bool = True
    sasl_mechanism: Mechanism = "PLAIN"
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)

    @classmethod
    def from_settings(cls, s: Settings) -> KafkaSecurity:
        """The configured security; PLAINTEXT when the broker is the embedded one (no URL)."""
        if s.embedded_kafka:
            return cls()
        return cls(
            protocol=s.kafka_security_protocol,
            cafile=s.kafka_ssl_cafile,
            certfile=s.kafka_ssl_certfile,
            keyfile=s.kafka_ssl_keyfile,
            key_password=s.kafka_ssl_key_password.get_secret_value(),
            check_hostname=s.kafka_ssl_check_hostname,
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_username=s.kafka_sasl_username,
            sasl_password=s.kafka_sasl_password.get_secret_value(),
        )

    @property
    def tls(self) -> bool:
        return self.protocol in ("SSL", "SASL_SSL")

    @property
    def sasl(self) -> bool:
        return self.protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    def describe(self) -> str:
        """For error messages: the protocol and the non-secret parts."""
        parts: list[str] = [self.protocol]
        if self.tls:
            parts.append(f"CA {self.cafile or 'system store'}")
        if self.sasl:
            parts.append(f"{self.sasl_mechanism} as {self.sasl_username!r}")
        return ", ".join(parts)


def ssl_context(sec: KafkaSecurity) -> ssl.SSLContext:
    """A client TLS context that verifies the broker against ``cafile`` (or the system's CAs)."""
    for name in ("cafile", "certfile", "keyfile"):
        path = getattr(sec, name)
        if path and not Path(path).is_file():
            raise ConfigError(f"TASKPULSE_KAFKA_SSL_{name.upper()}: {path} is not a readable file")
    if sec.keyfile and not sec.certfile:
        raise ConfigError("TASKPULSE_KAFKA_SSL_KEYFILE needs TASKPULSE_KAFKA_SSL_CERTFILE (the client certificate)")
    try:
        ctx = create_ssl_context(
            cafile=sec.cafile or None,
            certfile=sec.certfile or None,
            keyfile=sec.keyfile or None,
            # always a string: None would let OpenSSL prompt on the terminal for an encrypted key
            password=sec.key_password,
        )
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the Kafka TLS files ({sec.describe()}): {exc}") from exc
    ctx.check_hostname = sec.check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _check_sasl(sec: KafkaSecurity) -> None:
    if sec.sasl and not (sec.sasl_username and sec.sasl_password):
        raise ConfigError(
            f"TASKPULSE_KAFKA_SECURITY_PROTOCOL={sec.protocol} needs TASKPULSE_KAFKA_SASL_USERNAME "
            "and TASKPULSE_KAFKA_SASL_PASSWORD"
        )


def client_kwargs(sec: KafkaSecurity) -> dict[str, Any]:
    """Keyword arguments for AIOKafkaConsumer / AIOKafkaProducer / AIOKafkaAdminClient."""
    _check_sasl(sec)
    out: dict[str, Any] = {}
    if sec.protocol == "PLAINTEXT":
        return out
    out["security_protocol"] = sec.protocol
    if sec.tls:
        out["ssl_context"] = ssl_context(sec)
    if sec.sasl:
        out["sasl_mechanism"] = sec.sasl_mechanism
        out["sasl_plain_username"] = sec.sasl_username
        out["sasl_plain_password"] = sec.sasl_password
    return out


def faust_credentials(sec: KafkaSecurity) -> Any:
    """Faust's ``broker_credentials`` (None for PLAINTEXT): Faust hands them to its consumer,
    producer and topic creation as the same aiokafka arguments as ``client_kwargs``."""
    import faust

    _check_sasl(sec)
    if sec.protocol == "PLAINTEXT":
        return None
    ctx = ssl_context(sec) if sec.tls else None
    if sec.sasl:
        return faust.SASLCredentials(
            username=sec.sasl_username, password=sec.sasl_password, ssl_context=ctx, mechanism=sec.sasl_mechanism
        )
    return faust.SSLCredentials(ctx)
