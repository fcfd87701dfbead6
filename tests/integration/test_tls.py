"""Encrypted connections, for real: Kafka clients and a worker through a TLS proxy in front
of the Tansu broker (stunnel, tls_fixtures.py), with the server certificate verified against
a test CA; and clickhouse-connect against an HTTPS stub.

What these tests cannot show here: SASL against a broker (Tansu 0.6.0 has SCRAM, but users
can only be created on a broker that already requires authentication, and its memory
storage cannot be prepared beforehand; the SASL client arguments are tested in
tests/unit/test_kafka_security.py), and a real ClickHouse server over HTTPS (chDB runs
in-process, without HTTP): the stub shows the verified TLS handshake and the credentials
that reach the server, not a query answered.
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import os
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer

from pipeline.embedded import free_port
from pipeline.errors import SinkUnavailable, TaskpulseError
from pipeline.kafka_security import KafkaSecurity, client_kwargs
from pipeline.sdk import TaskpulseProducer, make_event
from pipeline.settings import Settings
from pipeline.sinks.clickhouse import ClickHouseStore
from pipeline.topics import RAW_TOPICS
from tests.integration.conftest import Worker, wait_for
from tests.integration.tls_fixtures import Pki, TlsBroker, create_topics, pki, tls_broker  # noqa: F401, F811

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


def _consume(bootstrap: str, topic: str, kwargs: dict[str, Any], want: int, timeout_s: float = 20) -> list[bytes]:
    async def go() -> list[bytes]:
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", **kwargs)
        await consumer.start()
        out: list[bytes] = []
        try:
            deadline = time.monotonic() + timeout_s
            while len(out) < want and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=500)
                out += [r.value for records in batch.values() for r in records]
        finally:
            await consumer.stop()
        return out

    return asyncio.run(go())


def test_producer_and_consumer_work_through_tls_with_the_ca(tls_broker: TlsBroker) -> None:  # noqa: F811
    sec = KafkaSecurity(protocol="SSL", cafile=str(tls_broker.pki.ca))
    created = create_topics(tls_broker.bootstrap, client_kwargs(sec))
    assert RAW_TOPICS["task"] in created

    async def publish() -> None:
        async with TaskpulseProducer(tls_broker.url, batch_size=1, security=sec) as p:
            for i in range(20):
                await p.send(make_event("task.created", f"tls-{i}", {"task_type": "t"}))

    asyncio.run(publish())
    got = _consume(tls_broker.bootstrap, RAW_TOPICS["task"], client_kwargs(sec), 20)
    assert len(got) == 20 and all(b'"tls-' in v for v in got)


def test_wrong_ca_fails_clearly(tls_broker: TlsBroker) -> None:  # noqa: F811
    wrong = KafkaSecurity(protocol="SSL", cafile=str(tls_broker.pki.wrong_ca))
    started = time.monotonic()
    with pytest.raises(SinkUnavailable) as err:
        create_topics(tls_broker.bootstrap, client_kwargs(wrong))
    message = str(err.value)
    assert "certificate did not verify" in message and "TASKPULSE_KAFKA_SSL_CAFILE" in message, message
    assert time.monotonic() - started < 20

    async def produce() -> None:
        async with TaskpulseProducer(tls_broker.url, batch_size=1, security=wrong) as p:
            await p.send(make_event("task.created", "never", {}))

    with pytest.raises(Exception, match="Unable to bootstrap"):  # aiokafka's KafkaConnectionError
        asyncio.run(produce())


def test_plaintext_client_cannot_talk_to_the_tls_listener(tls_broker: TlsBroker) -> None:  # noqa: F811
    with pytest.raises(SinkUnavailable):
        create_topics(tls_broker.bootstrap, {})


def test_worker_ingests_through_tls(tls_broker: TlsBroker, tmp_path: Path) -> None:  # noqa: F811
    """A worker (Faust app, its producer, topic creation) with TASKPULSE_KAFKA_SECURITY_PROTOCOL=SSL
    and the CA reads what the SDK published through TLS and writes it to ClickHouse."""
    ca = str(tls_broker.pki.ca)
    port = free_port()
    env = {
        **os.environ,
        "TASKPULSE_KAFKA_URL": tls_broker.url,
        "TASKPULSE_KAFKA_SECURITY_PROTOCOL": "SSL",
        "TASKPULSE_KAFKA_SSL_CAFILE": ca,
        "TASKPULSE_DATA_DIR": str(tmp_path / "data"),
        "TASKPULSE_API_PORT": str(port),
        "TASKPULSE_SESSION_TIMEOUT_S": "6",
        "TASKPULSE_LOG_LEVEL": "INFO",
        "TASKPULSE_ROLES": "ingest",
    }
    argv = [sys.executable, "-m", "pipeline", "worker"]
    worker = Worker(env, tmp_path / "worker.log", f"http://127.0.0.1:{port}", argv)
    try:
        worker.start()
        sec = KafkaSecurity(protocol="SSL", cafile=ca)

        async def publish() -> None:
            async with TaskpulseProducer(tls_broker.url, batch_size=10, security=sec) as p:
                for i in range(50):
                    await p.send(make_event("task.created", f"w-{i}", {"task_type": "t"}))

        asyncio.run(publish())
        wait_for(lambda: worker.scalar("SELECT count() FROM taskpulse.events") == 50, 60, "50 events in ClickHouse")
    finally:
        worker.stop()


def test_worker_with_the_wrong_ca_refuses_to_start_and_says_why(tls_broker: TlsBroker, tmp_path: Path) -> None:  # noqa: F811
    import subprocess

    env = {
        **os.environ,
        "TASKPULSE_KAFKA_URL": tls_broker.url,
        "TASKPULSE_KAFKA_SECURITY_PROTOCOL": "SSL",
        "TASKPULSE_KAFKA_SSL_CAFILE": str(tls_broker.pki.wrong_ca),
        "TASKPULSE_DATA_DIR": str(tmp_path / "data"),
        "TASKPULSE_API_PORT": str(free_port()),
    }
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline", "worker"], env=env, capture_output=True, text=True, timeout=90, check=False
    )
    assert proc.returncode != 0
    assert "certificate did not verify" in proc.stderr + proc.stdout, proc.stderr[-2000:]


# --------------------------------------------------------------------------- ClickHouse over HTTPS


class _Stub(http.server.BaseHTTPRequestHandler):
    """Answers every request as ClickHouse answers a bad password, and records what arrived."""

    seen: list[dict[str, str]] = []

    def do_POST(self) -> None:  # noqa: N802
        self._answer()

    def do_GET(self) -> None:  # noqa: N802
        self._answer()

    def _answer(self) -> None:
        _Stub.seen.append({k.lower(): v for k, v in self.headers.items()})
        body = b"Code: 516. DB::Exception: stub: Authentication failed. (AUTHENTICATION_FAILED)\n"
        self.send_response(401)
        self.send_header("X-ClickHouse-Exception-Code", "516")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def https_stub(pki: Pki) -> Iterator[str]:  # noqa: F811
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_cert, pki.server_key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    _Stub.seen = []
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield f"https://taskpulse_writer@127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _open(url: str, **settings: Any) -> str:
    s = Settings(clickhouse_url=url, clickhouse_password="w-secret", **settings)  # type: ignore[arg-type]
    with pytest.raises(TaskpulseError) as err:
        ClickHouseStore.from_settings(s)
    return str(err.value)


def test_clickhouse_https_verifies_the_server_with_the_ca(https_stub: str, pki: Pki) -> None:  # noqa: F811
    message = _open(https_stub, clickhouse_ca_file=str(pki.ca))
    assert "Authentication failed" in message, message  # TLS passed: the server's answer came back
    assert _Stub.seen, "no request reached the HTTPS server"
    auth = _Stub.seen[0].get("authorization", "")
    user = _Stub.seen[0].get("x-clickhouse-user", "")
    if auth:
        user = base64.b64decode(auth.split()[1]).decode().split(":", 1)[0]
    assert user == "taskpulse_writer"
    assert "w-secret" not in message


def test_clickhouse_https_with_the_wrong_ca_fails_before_sending_anything(https_stub: str, pki: Pki) -> None:  # noqa: F811
    message = _open(https_stub, clickhouse_ca_file=str(pki.wrong_ca))
    assert "TASKPULSE_CLICKHOUSE_CA_FILE" in message and "certificate" in message.lower(), message
    assert not _Stub.seen, "credentials were sent to a server whose certificate did not verify"
    assert "w-secret" not in message


def test_analyst_queries_connect_as_the_read_only_user(https_stub: str, pki: Pki) -> None:  # noqa: F811
    """``clickhouse_read_url`` / ``_read_password``: the store /api/sql and `taskpulse sql` use."""
    reader_url = https_stub.replace("taskpulse_writer", "taskpulse_reader")
    s = Settings(clickhouse_url=https_stub, clickhouse_password="w-secret", clickhouse_read_url=reader_url,  # type: ignore[arg-type]
                 clickhouse_read_password="r-secret", clickhouse_ca_file=str(pki.ca))  # type: ignore[arg-type]  # fmt: skip
    with pytest.raises(TaskpulseError) as err:
        ClickHouseStore.from_settings(s, reader=True)
    assert "r-secret" not in str(err.value)
    headers = _Stub.seen[0]
    if "authorization" in headers:
        user, password = base64.b64decode(headers["authorization"].split()[1]).decode().split(":", 1)
    else:
        user, password = headers.get("x-clickhouse-user", ""), headers.get("x-clickhouse-key", "")
    assert (user, password) == ("taskpulse_reader", "r-secret")
