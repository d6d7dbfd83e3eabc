"""Reading job records from Redis (the writes all go through the update script).

Every read is bounded by the Redis client's timeouts; a Redis that does not answer
raises BackendUnavailable, which the app turns into 503 (DESIGN.md section 2).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import redis.asyncio
import redis.exceptions

from gateway.contract import keys
from gateway.contract.events import TERMINAL, Message
from gateway.contract.script import SCRIPT, Call, Change, result
from gateway.errors import BackendUnavailable
from gateway.pipeline import Pipeline

_FIELDS = ("snapshot", "version", "seq", "epoch", "status", "status_seq", "output_expires")


@dataclass(frozen=True, slots=True)
class Record:
    """A job as stored: its snapshot JSON and what the gateway needs beside it."""

    job_id: str
    snapshot: bytes
    version: int
    seq: int
    epoch: str
    status: str
    status_seq: int
    output_expires: float | None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def body(self, now: float | None = None) -> bytes:
        """The snapshot as served: ``output`` reads null once it expired (DESIGN.md s. 1)."""
        if self.output_expires is not None and (now or time.time()) >= self.output_expires:
            document = json.loads(self.snapshot)
            document["output"] = None
            return json.dumps(document, separators=(",", ":")).encode()
        return self.snapshot

    def message(self, event: str) -> Message:
        return Message(
            epoch=self.epoch,
            seq=self.seq,
            event=event,
            version=self.version,
            status=self.status,
            job_id=self.job_id,
            data=self.body(),
        )


@asynccontextmanager
async def _bounded() -> AsyncIterator[None]:
    """Redis errors of a request become BackendUnavailable (503), never a 500."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        raise BackendUnavailable(str(exc)) from exc


def _record(job_id: str, values: list[Any]) -> Record | None:
    if values[0] is None:
        return None
    snapshot, version, seq, epoch, status, status_seq, output_expires = (
        v.encode() if isinstance(v, str) else (v or b"") for v in values
    )
    return Record(
        job_id=job_id,
        snapshot=snapshot,
        version=int(version),
        seq=int(seq),
        epoch=epoch.decode(),
        status=status.decode(),
        status_seq=int(status_seq),
        output_expires=float(output_expires) if output_expires else None,
    )


class Store:
    def __init__(self, client: redis.asyncio.Redis, pipeline: Pipeline) -> None:
        self.client = client
        self._pipeline = pipeline  # the hot read: every stream's opening, every JSON GET
        self._script = client.register_script(SCRIPT)

    @classmethod
    @asynccontextmanager
    async def connected(
        cls, url: str, *, redis_timeout: float, max_connections: int
    ) -> AsyncIterator[Store]:
        # A blocking pool: the default pool raises at 100 connections in use, which under
        # a burst of concurrent requests turned healthy reads into 503s. Here a request
        # past the cap queues for a connection, bounded by the same timeout as a command.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=redis_timeout,
            socket_timeout=redis_timeout,
            socket_connect_timeout=redis_timeout,
            health_check_interval=30,
        )
        client = redis.asyncio.Redis.from_pool(pool)
        pipeline = Pipeline(url, timeout=redis_timeout)
        try:
            yield cls(client, pipeline)
        finally:
            await pipeline.aclose()
            await client.aclose()

    async def read(self, tenant: str, job_id: str) -> Record | None:
        values = await self._pipeline.request("HMGET", keys.job_key(tenant, job_id), *_FIELDS)
        return _record(job_id, values)

    async def read_many(self, tenant: str, job_ids: list[str]) -> dict[str, Record | None]:
        """Several jobs in one round trip per 500 (a pipeline, not a transaction)."""
        found: dict[str, Record | None] = {}
        for start in range(0, len(job_ids), 500):
            batch = job_ids[start:start + 500]
            async with _bounded():
                pipe = self.client.pipeline(transaction=False)
                for job_id in batch:
                    pipe.hmget(keys.job_key(tenant, job_id), _FIELDS)
                rows = await pipe.execute()
            for job_id, values in zip(batch, rows, strict=True):
                found[job_id] = _record(job_id, values)
        return found

    async def epoch(self, tenant: str) -> str | None:
        async with _bounded():
            value = await self.client.get(keys.epoch_key(tenant))
        return value.decode() if isinstance(value, bytes) else value

    async def changed_since(self, tenant: str, seq: int) -> list[tuple[str, int]]:
        """(job id, seq of its last change) of every job changed after ``seq``, oldest first."""
        async with _bounded():
            rows: list[Any] = await self.client.zrangebyscore(
                keys.index_key(tenant), f"({seq}", "+inf", withscores=True
            )
        return [(job_id.decode(), int(score)) for job_id, score in rows]

    async def newest_first(self, tenant: str, *, below: int, count: int) -> list[tuple[str, int]]:
        """(job id, seq) of the jobs whose last change is below ``below``, newest first."""
        async with _bounded():
            rows: list[Any] = await self.client.zrevrangebyscore(
                keys.index_key(tenant), f"({below}", "-inf", start=0, num=count, withscores=True
            )
        return [(job_id.decode(), int(score)) for job_id, score in rows]

    async def active(self, tenant: str) -> list[str]:
        """The tenant's jobs that have not ended, oldest change first."""
        async with _bounded():
            rows: list[Any] = await self.client.zrange(keys.active_key(tenant), 0, -1)
        return [job_id.decode() for job_id in rows]

    async def change(self, call: Call) -> Change:
        """Run the update script (the HTTP API's create, cancel and delete)."""
        async with _bounded():
            reply = await self._script(keys=call.keys, args=call.args)
        return result(call, reply)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False
