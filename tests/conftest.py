"""Real servers for the tests: a Valkey/Redis started here, and gateways run by uvicorn.

No fake Redis: every test talks to a real server on a free port, which tests may kill and
restart. Every process started here is stopped when its fixture ends.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from playwright.sync_api import Browser, Page, sync_playwright

from gateway.contract import keys
from gateway.embedded import EmbeddedCluster, EmbeddedRedis, free_port


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    with EmbeddedRedis() as server:
        yield server


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The session's server, emptied for each test."""
    if not redis_server.running:
        redis_server.start()
    with redis.Redis.from_url(redis_server.url) as client:
        client.flushall()
    return redis_server.url


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(redis_url) as client:
        yield client


@pytest.fixture(scope="module")
def cluster_server() -> Iterator[EmbeddedCluster]:
    """A 3-primary Valkey Cluster on loopback, for a module's tests."""
    with EmbeddedCluster(primaries=3) as cluster:
        yield cluster


@pytest.fixture
def cluster(cluster_server: EmbeddedCluster) -> EmbeddedCluster:
    """The module's cluster, emptied for each test."""
    for node in cluster_server.nodes:
        with cluster_server.client(node) as client:
            client.flushall()
    return cluster_server


def tenant_per_shard(cluster: EmbeddedCluster, prefix: str = "t") -> list[str]:
    """One tenant name whose hash tag lands on each primary, in the order of the nodes."""
    from redis.crc import key_slot

    ranges = cluster.slot_map()
    found: dict[int, str] = {}
    for n in range(10_000):
        tenant = f"{prefix}{n}"
        slot = key_slot(keys.tenant_channel(tenant).encode())
        port = next(node.port for start, end, node in ranges if start <= slot <= end)
        found.setdefault(port, tenant)
        if len(found) == len({node.port for _, _, node in ranges}):
            break
    return [found[port] for port in sorted(found)]


def wait_ready(url: str, timeout: float = 20.0, *, why: Callable[[], str] = str) -> None:
    """Until ``url``/readyz answers 200 (``why()`` says what went wrong if it never does)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, why() or f"{url} did not become ready"
        time.sleep(0.05)


class GatewayProcess:
    """``python -m gateway serve`` in a subprocess: a real uvicorn, as users run it."""

    def __init__(
        self, redis_url: str | None, env: dict[str, str] | None = None, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        if redis_url is not None:
            self.env["REDIS_URL"] = redis_url
        self.env.update(env or {})
        self.log = Path(os.environ.get("TMPDIR", "/tmp")) / f"gateway-test-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0, *, ready: bool = True) -> None:
        """Start and wait for ``/readyz`` (or, with ``ready=False``, only ``/healthz``)."""
        path = "/readyz" if ready else "/healthz"
        with self.log.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway", "serve", "--port", str(self.port)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gateway exited at start-up:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}{path}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gateway did not become ready:\n{self.output()}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def terminate(self, timeout: float = 15.0) -> int:
        """SIGTERM, as a platform stops a process; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.log.unlink(missing_ok=True)


@pytest.fixture
def start_gateway(redis_url: str) -> Iterator[type]:
    """Start gateways with extra GATEWAY_* settings: ``start_gateway(GATEWAY_X="1")``."""
    started: list[GatewayProcess] = []

    def start(url: str | None = redis_url, port: int | None = None, *, ready: bool = True,
              **env: str) -> GatewayProcess:
        process = GatewayProcess(url, env, port)
        started.append(process)
        process.start(ready=ready)
        return process

    yield start  # type: ignore[misc]
    for process in started:
        process.stop()


@pytest.fixture
def gateway(start_gateway: type) -> GatewayProcess:
    return start_gateway(GATEWAY_HEARTBEAT_SECONDS="0.5")  # type: ignore[no-any-return]


# A real browser for the browser tests: Debian's chromium, driven by Playwright (never a
# downloaded browser build).
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path="/usr/bin/chromium",
                                             args=BROWSER_FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    page = browser.new_page()
    yield page
    page.close()
