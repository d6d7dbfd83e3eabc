"""``rediss://`` means the same on every connection.

A TLS Redis with a certificate of its own CA, as managed Redis services have: the URL's
``ssl_*`` options, read by redis-py's parser, must hold for the gateway's own reads and
pub/sub connections as they do for redis-py's.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import trustme

from gateway.embedded import free_port
from gateway.worker import SyncWorker


class TlsRedis:
    def __init__(self, directory: Path) -> None:
        self.ca = trustme.CA()
        cert = self.ca.issue_cert("127.0.0.1", "localhost")
        self.ca_file = directory / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        cert_file, key_file = directory / "cert.pem", directory / "key.pem"
        cert.cert_chain_pems[0].write_to_path(str(cert_file))
        cert.private_key_pem.write_to_path(str(key_file))
        self.port = free_port()
        binary = shutil.which("redis-server")
        assert binary, "Debian's redis-server (built with TLS) is installed by scripts/test"
        self.process = subprocess.Popen(
            [binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1",
             "--tls-cert-file", str(cert_file), "--tls-key-file", str(key_file),
             "--tls-ca-cert-file", str(self.ca_file), "--tls-auth-clients", "no",
             "--save", "", "--appendonly", "no", "--dir", str(directory)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        context = ssl.create_default_context(cafile=str(self.ca_file))
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw, \
                        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    tls.sendall(b"PING\r\n")
                    if tls.recv(16).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the TLS Redis did not start")
            time.sleep(0.05)

    def url(self, query: str) -> str:
        return f"rediss://127.0.0.1:{self.port}/0?{query}"

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def tls_redis() -> Iterator[TlsRedis]:
    with tempfile.TemporaryDirectory(prefix="gateway-tls-") as directory:
        server = TlsRedis(Path(directory))
        try:
            yield server
        finally:
            server.stop()


@pytest.mark.parametrize("query", ["ssl_cert_reqs=none", "ssl_ca_certs={ca}"])
def test_the_gateway_reads_and_streams_over_tls_with_the_urls_options(
    tls_redis: TlsRedis, start_gateway, query: str
) -> None:
    url = tls_redis.url(query.format(ca=tls_redis.ca_file))
    with SyncWorker.from_url(url) as worker:  # redis-py, with the same URL
        worker.create("tls")
    gateway = start_gateway(url)  # waits for /readyz: reads and pub/sub both connected
    assert httpx.get(f"{gateway.url}/v1/jobs/tls", timeout=5).json()["version"] == 1
    with httpx.stream("GET", f"{gateway.url}/v1/jobs/tls", timeout=10,
                      headers={"Accept": "text/event-stream"}) as stream:
        lines = stream.iter_lines()
        assert "event: snapshot" in [next(lines) for _ in range(3)]
        with SyncWorker.from_url(url) as worker:
            worker.start("tls")
        while next(lines) != "event: status":
            pass
        assert '"status":"running"' in next(lines)


def test_a_certificate_the_url_does_not_trust_is_refused(tls_redis: TlsRedis,
                                                          start_gateway) -> None:
    gateway = start_gateway(tls_redis.url("ssl_cert_reqs=required"), ready=False)
    time.sleep(1)
    assert httpx.get(f"{gateway.url}/readyz", timeout=5).status_code == 503
    assert "CERTIFICATE_VERIFY_FAILED" in gateway.output()
