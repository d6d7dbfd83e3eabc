"""The backend on one Redis/Valkey server: today's topology (docs/architecture.md).

Reads go through one pipelined connection (gateway.backend.reads), channels through one
pub/sub connection (gateway.backend.subscriber); the update script runs on redis-py,
whose pooled connections and script cache fit a write that must never be sent twice.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import redis.asyncio
import redis.exceptions

from gateway.backend.base import Listener
from gateway.backend.reads import Reads
from gateway.backend.subscriber import Subscriber
from gateway.contract import keys, script
from gateway.contract.record import FIELDS, Record
from gateway.contract.script import Change, Lifetimes
from gateway.errors import BackendUnavailable

# Commands per write when reading many jobs at once.
_READ_BATCH = 500


class StandaloneBackend:
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
        self._reads = Reads(url, timeout=timeout)
        self._subscriber = Subscriber(url, connect_timeout=subscribe_timeout,
                                      probe_seconds=probe_seconds, publish=self._publish)

    @classmethod
    @asynccontextmanager
    async def connected(cls, url: str, **options: Any) -> AsyncIterator[StandaloneBackend]:
        """The backend, closed at the end of the block (its pub/sub runs under listen)."""
        backend = cls(url, **options)
        try:
            yield backend
        finally:
            await backend._reads.aclose()
            await backend._client.aclose()

    # -- reads --------------------------------------------------------------------------

    async def read(self, tenant: str, job_id: str) -> Record | None:
        values = await self._reads.request("HMGET", keys.job_key(tenant, job_id), *FIELDS)
        return Record.from_fields(job_id, values)

    async def read_many(self, tenant: str, job_ids: Sequence[str]) -> dict[str, Record | None]:
        found: dict[str, Record | None] = {}
        for start in range(0, len(job_ids), _READ_BATCH):
            batch = job_ids[start:start + _READ_BATCH]
            rows = await self._reads.request_many(
                [("HMGET", keys.job_key(tenant, job_id), *FIELDS) for job_id in batch])
            for job_id, values in zip(batch, rows, strict=True):
                found[job_id] = Record.from_fields(job_id, values)
        return found

    async def epoch(self, tenant: str) -> str | None:
        value = await self._reads.request("GET", keys.epoch_key(tenant))
        return value.decode() if isinstance(value, bytes) else None

    async def position(self, tenant: str) -> tuple[str, int] | None:
        epoch, seq = await self._reads.request_many(
            [("GET", keys.epoch_key(tenant)), ("GET", keys.seq_key(tenant))])
        if not isinstance(epoch, bytes):
            return None
        return epoch.decode(), int(seq or 0)

    async def index_seqs(self, tenant: str, job_ids: Sequence[str]) -> dict[str, int | None]:
        if not job_ids:
            return {}
        scores = await self._reads.request("ZMSCORE", keys.index_key(tenant), *job_ids)
        return {job_id: int(float(score)) if score is not None else None
                for job_id, score in zip(job_ids, scores, strict=True)}

    async def changed_since(self, tenant: str, seq: int) -> list[tuple[str, int]]:
        rows = await self._reads.request(
            "ZRANGE", keys.index_key(tenant), f"({seq}", "+inf", "BYSCORE", "WITHSCORES")
        return _scored(rows)

    async def newest_first(self, tenant: str, *, below: int, count: int) -> list[tuple[str, int]]:
        rows = await self._reads.request(
            "ZRANGE", keys.index_key(tenant), f"({below}", "-inf", "BYSCORE", "REV",
            "LIMIT", "0", str(count), "WITHSCORES")
        return _scored(rows)

    async def count_changed_since(self, tenant: str, seq: int) -> int:
        count: int = await self._reads.request("ZCOUNT", keys.index_key(tenant), f"({seq}", "+inf")
        return count

    async def count_active(self, tenant: str) -> int:
        count: int = await self._reads.request("ZCARD", keys.active_key(tenant))
        return count

    async def active(self, tenant: str) -> list[str]:
        rows = await self._reads.request("ZRANGE", keys.active_key(tenant), "0", "-1")
        return [job_id.decode() for job_id in rows]

    async def forget(self, tenant: str, job_ids: Sequence[str]) -> None:
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    await self._forget(keys=keys.forget_keys(tenant, job_id), args=[job_id],
                                       client=pipe)
                await pipe.execute()
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            raise BackendUnavailable(str(exc)) from exc

    async def ping(self) -> bool:
        try:
            await self._reads.request("PING")
        except BackendUnavailable:
            return False
        return True

    # -- API keys -----------------------------------------------------------------------

    async def api_keys_version(self) -> bytes | None:
        version = await self._reads.request("GET", keys.api_keys_version_key())
        return version if isinstance(version, bytes) else None

    async def api_keys(self) -> dict[str, bytes]:
        rows = await self._reads.request("HGETALL", keys.api_keys_key())
        return {rows[i].decode(): rows[i + 1] for i in range(0, len(rows), 2)}

    async def token_secret(self, candidate: bytes) -> bytes:
        name = keys.token_secret_key()
        _, secret = await self._reads.request_many(
            [("SET", name, candidate, "NX"), ("GET", name)])
        assert isinstance(secret, bytes)
        return secret

    async def note_key_use(self, used: dict[str, str]) -> None:
        pairs = [part for key_id, at in used.items() for part in (key_id, at)]
        await self._reads.request("HSET", keys.api_keys_used_key(), *pairs)

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

    # -- channels -----------------------------------------------------------------------

    @asynccontextmanager
    async def listen(self, listener: Listener) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._subscriber.run, listener)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    @property
    def listening(self) -> bool:
        return self._subscriber.listening

    def subscribe(self, channels: Sequence[bytes]) -> None:
        self._subscriber.subscribe(channels)

    def unsubscribe(self, channels: Sequence[bytes]) -> None:
        self._subscriber.unsubscribe(channels)

    def subscribed(self, channel: bytes) -> bool:
        return self._subscriber.subscribed(channel)


def _scored(rows: list[bytes]) -> list[tuple[str, int]]:
    """(member, score) pairs of a WITHSCORES reply (RESP2: a flat list)."""
    return [(rows[i].decode(), int(float(rows[i + 1]))) for i in range(0, len(rows), 2)]
