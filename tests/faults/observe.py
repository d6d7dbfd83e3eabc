"""What the fault tests share: a raw observer, a patient worker, and the final check.

The observer is deliberately not gateway.client: that client drops versions it has seen,
which would hide a gateway that sends them twice. This one records every event as it
comes, and reconnects with Last-Event-ID the way EventSource does.
"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import httpx
import redis
from httpx_sse import aconnect_sse

from gateway.contract import keys
from gateway.contract.events import EventId
from gateway.errors import InvalidTransition

T = TypeVar("T")


class Observer:
    """Follows ``path`` until ``done()``; ``seen[job_id]`` lists (epoch, version) in order."""

    def __init__(self, base_url: str, path: str, *, jobs: set[str],
                 headers: dict[str, str] | None = None) -> None:
        self.base_url, self.path, self.jobs = base_url, path, jobs
        self.headers = headers or {}
        self.seen: dict[str, list[tuple[str, int]]] = {}
        self.last: dict[str, dict[str, Any]] = {}
        self.last_id: str | None = None
        self.connections = 0
        self.ended = False

    def done(self) -> bool:
        return self.ended or (self.jobs <= self.last.keys() and all(
            self.last[j]["status"] in ("completed", "failed", "canceled") for j in self.jobs))

    async def run(self, timeout: float = 40) -> None:
        with anyio.move_on_after(timeout) as scope:
            async with httpx.AsyncClient(base_url=self.base_url,
                                         timeout=httpx.Timeout(5, read=30)) as client:
                while not self.done():
                    try:
                        await self._connect(client)
                    except httpx.TransportError:
                        pass
                    if not self.done():
                        await anyio.sleep(0.1)
        if scope.cancelled_caught:
            raise AssertionError(f"{self.path}: not done after {timeout}s; "
                                 f"{self.connections} connections, last id {self.last_id}, "
                                 f"versions {({k: v['version'] for k, v in self.last.items()})}")

    async def _connect(self, client: httpx.AsyncClient) -> None:
        headers = {**self.headers, **({"Last-Event-ID": self.last_id} if self.last_id else {})}
        async with aconnect_sse(client, "GET", self.path, headers=headers) as source:
            status = source.response.status_code
            if status == 204:
                self.ended = True
                return
            if status != 200:
                return  # 503 while Redis is away: try again
            self.connections += 1
            async for event in source.aiter_sse():
                if not event.data or event.event in ("unknown", "deleted"):
                    continue
                snapshot = json.loads(event.data)
                epoch = EventId.parse(event.id).epoch if event.id else ""
                self.seen.setdefault(snapshot["job_id"], []).append((epoch, snapshot["version"]))
                self.last[snapshot["job_id"]] = snapshot
                self.last_id = event.id or self.last_id
                if self.done():
                    return


def patiently(call: Callable[[], T], *, timeout: float = 30,
              errors: tuple[type[Exception], ...] = (redis.ConnectionError, redis.TimeoutError),
              ) -> T | None:
    """A worker call through an outage: retried on connection errors (``errors``). A
    change that went through before its reply was lost is refused on the retry; that
    counts as done."""
    deadline = time.monotonic() + timeout
    retried = False
    while True:
        try:
            return call()
        except errors:
            if time.monotonic() > deadline:
                raise
            retried = True
            time.sleep(0.05)
        except InvalidTransition:
            if retried:
                return None
            raise


def assert_consistent(observer: Observer, r: Any, job_ids: list[str],
                      tenant: str = "default") -> None:
    """Versions only go up (per epoch), and the last snapshot is the one in Redis."""
    for job_id in job_ids:
        seen = observer.seen.get(job_id)
        assert seen, f"{job_id}: nothing observed"
        for (epoch_a, a), (epoch_b, b) in itertools.pairwise(seen):
            assert epoch_a != epoch_b or a < b, f"{job_id}: version {b} after {a}: {seen}"
        stored = r.hget(keys.job_key(tenant, job_id), "snapshot")
        assert stored is not None, f"{job_id}: not in Redis"
        assert observer.last[job_id] == json.loads(stored), job_id


async def _pipe(reader: Any, writer: Any, swallow: Callable[[], bool] = lambda: False) -> None:
    try:
        while data := await reader.read(65536):
            if swallow():
                continue
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        writer.close()


def metric(url: str, name: str) -> float:
    """The sum of a metric's samples on the gateway's /metrics."""
    text = httpx.get(f"{url}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name) and not line.startswith("#"))


class Balancer:
    """A TCP load balancer on loopback: each new connection goes to the first backend that
    accepts it, as a health-checking proxy would send clients to the gateway still up."""

    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = 0
        self._server: Any = None

    async def __aenter__(self) -> Balancer:
        import asyncio

        async def handle(reader: Any, writer: Any) -> None:
            for port in self.backends:
                try:
                    up_reader, up_writer = await asyncio.open_connection("127.0.0.1", port)
                    break
                except OSError:
                    continue
            else:
                writer.close()
                return
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


class Freezer:
    """A TCP proxy to one backend whose open connections can be frozen: what the backend
    sends is swallowed without an error, as on a network that silently drops packets.
    New connections work."""

    def __init__(self, backend_port: int) -> None:
        self.backend_port = backend_port
        self.port = 0
        self._frozen: set[int] = set()
        self._open: set[int] = set()
        self._server: Any = None

    def freeze(self) -> None:
        self._frozen |= self._open

    async def __aenter__(self) -> Freezer:
        import asyncio

        async def handle(reader: Any, writer: Any) -> None:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.backend_port)
            key = id(writer)
            self._open.add(key)
            await asyncio.gather(_pipe(reader, up_writer),
                                 _pipe(up_reader, writer, lambda: key in self._frozen))

        self._server = await asyncio.start_server(handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"
