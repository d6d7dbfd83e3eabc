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

import redis.asyncio
import redis.exceptions

from gateway import keys
from gateway.changes import SCRIPT, Call, Change, result
from gateway.events import TERMINAL, Message
from gateway.exceptions import BackendUnavailable

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


class Store:
    def __init__(self, client: redis.asyncio.Redis) -> None:
        self.client = client
        self._script = client.register_script(SCRIPT)

    @classmethod
    @asynccontextmanager
    async def connected(cls, url: str, *, redis_timeout: float) -> AsyncIterator[Store]:
        client = redis.asyncio.Redis.from_url(
            url,
            socket_timeout=redis_timeout,
            socket_connect_timeout=redis_timeout,
            health_check_interval=30,
        )
        try:
            yield cls(client)
        finally:
            await client.aclose()

    async def read(self, tenant: str, job_id: str) -> Record | None:
        try:
            values = await self.client.hmget(keys.job_key(tenant, job_id), _FIELDS)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise BackendUnavailable(str(exc)) from exc
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

    async def change(self, call: Call) -> Change:
        """Run the update script (the HTTP API's create, cancel and delete)."""
        try:
            reply = await self._script(keys=call.keys, args=call.args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise BackendUnavailable(str(exc)) from exc
        return result(call, reply)

    async def ping(self) -> bool:
        try:
            return bool(await self.client.ping())
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
            return False
