"""The backend on one Redis/Valkey server: today's topology (docs/architecture.md).

Reads go through one pipelined connection (gateway.backend.reads), channels through one
pub/sub connection (gateway.backend.subscriber); the update script runs on redis-py,
whose pooled connections and script cache fit a write that must never be sent twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio
import redis.exceptions

from gateway.backend.channels import Channels
from gateway.backend.queries import Queries
from gateway.backend.reads import Reads
from gateway.backend.subscriber import Subscriber
from gateway.contract import keys, script
from gateway.contract.script import Change, Lifetimes
from gateway.errors import BackendUnavailable


class StandaloneBackend(Queries, Channels):
    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_connections: int,
        subscribe_timeout: float,
        probe_seconds: float,
    ) -> None:
        # A blocking pool: the default pool raises at 100 connections in use, which under
        # a burst of concurrent writes turned healthy requests into 503s. Here a request
        # past the cap queues for a connection, bounded by the same timeout as a command.
        pool = redis.asyncio.BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=timeout,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            health_check_interval=30,
        )
        self._client = redis.asyncio.Redis.from_pool(pool)
        self._script = self._client.register_script(script.SCRIPT)
        self._forget = self._client.register_script(script.FORGET_SCRIPT)
        self._pipeline = Reads(url, timeout=timeout)
        super().__init__(self._pipeline)
        self._connections = Subscriber(url, connect_timeout=subscribe_timeout,
                                       probe_seconds=probe_seconds, publish=self._publish)

    @classmethod
    @asynccontextmanager
    async def connected(cls, url: str, **options: Any) -> AsyncIterator[StandaloneBackend]:
        """The backend, closed at the end of the block (its pub/sub runs under listen)."""
        backend = cls(url, **options)
        try:
            yield backend
        finally:
            await backend._pipeline.aclose()
            await backend._client.aclose()

    async def forget(self, tenant: str, job_ids: Sequence[str]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    await self._forget(keys=keys.forget_keys(tenant, job_id), args=[job_id],
                                       client=pipe)
                await pipe.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def _publish(self, channel: bytes, payload: bytes) -> object:
        return await self._reads.request("PUBLISH", channel, payload)

    # -- the one write ------------------------------------------------------------------

    async def change(self, op: str, job_id: str, payload: dict[str, Any], *, tenant: str,
                     lifetimes: Lifetimes) -> Change:
        call = script.call(op, job_id, payload, tenant=tenant, lifetimes=lifetimes)
        try:
            reply = await self._script(keys=call.keys, args=call.args)
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError,
                redis.exceptions.ResponseError) as exc:
            # ResponseError: Redis refused the call itself (OOM, NOPERM, a script error),
            # not the change: the script's own refusals are replies, read by result().
            raise BackendUnavailable(str(exc)) from exc
        return script.result(call, reply)

