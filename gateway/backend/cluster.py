"""The backend on a Valkey/Redis Cluster (GATEWAY_REDIS_CLUSTER=true, docs/architecture.md).

Every key and channel of a tenant carries its hash tag, so each read, each update script
and each publish lands on the one shard that serves the tenant's slot. Reads, the update
script and the topology go through redis-py's cluster client, which follows ``MOVED``,
``ASK`` and failovers on its own; channels go through one sharded pub/sub connection
per primary (gateway.backend.shards), and the script publishes with SPUBLISH.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.exceptions
from redis.asyncio.cluster import RedisCluster

from gateway.backend import nodes
from gateway.backend.channels import Channels
from gateway.backend.connection import Reply
from gateway.backend.queries import Queries
from gateway.backend.reads import Reads, Redirected, Unreachable
from gateway.backend.shards import Shards
from gateway.backend.topology import Topology
from gateway.contract import keys, script
from gateway.contract.script import Change, Lifetimes
from gateway.errors import BackendUnavailable

# The commands gateway.backend.queries sends, answered as Redis answers them (a flat
# list for HGETALL, the raw scores): redis-py's reply callbacks are off for these.
_RAW = ("GET", "SET", "HMGET", "HGETALL", "HSET", "ZMSCORE", "ZRANGE", "ZCOUNT", "ZCARD",
        "PING", "SPUBLISH")
# What redis-py's cluster client raises when the cluster cannot serve a command: its
# connection and reply errors, and, while no node answers or the cluster is still being
# formed (no slot assigned yet), errors of its own making (RedisClusterException, and an
# IndexError from an empty slot map). All of them are an outage to the gateway: 503, and
# retried, never a crash.
_UNAVAILABLE = (redis.exceptions.RedisError, redis.exceptions.RedisClusterException,
                OSError, TimeoutError, IndexError)


class ClusterReads:
    """The read path on a cluster: each command to the primary of its key's slot.

    Every request read runs on the pipelined connection of that primary (as on one
    server, gateway.backend.reads), found in redis-py's slot map. A node that answers
    ``MOVED``, ``ASK``, ``TRYAGAIN`` or ``CLUSTERDOWN`` (a slot on the move, a failover)
    or refuses the connection hands the command to redis-py's cluster client, which
    follows the redirection and mends its map for the next read. A node that is slow, or
    refuses the read itself (no permission, out of memory), answers 503 as on one server.
    """

    def __init__(self, client: RedisCluster, topology: Topology, timeout: float) -> None:
        self._client = client
        self._topology = topology
        self._timeout = timeout
        self._nodes: dict[str, Reads] = {}

    def _reads(self, key: str | bytes) -> Reads | None:
        url = self._topology.owner(key.encode() if isinstance(key, str) else key)
        if url is None:
            return None
        reads = self._nodes.get(url)
        if reads is None:
            reads = self._nodes[url] = Reads(url, timeout=self._timeout)
        return reads

    async def request(self, *args: str | bytes) -> Reply:
        reads = self._reads(args[1]) if len(args) > 1 else None
        if reads is not None:
            try:
                return await reads.request(*args)
            except (Redirected, Unreachable):
                pass  # moved, or the node is gone: as redis-py finds it
        try:
            async with asyncio.timeout(self._timeout):
                return await self._client.execute_command(*args)
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{args[0]!r}: {exc}") from exc

    async def request_many(self, commands: list[tuple[str | bytes, ...]]) -> list[Reply]:
        if not commands:
            return []
        reads = self._reads(commands[0][1])  # the keys of one hash tag: one slot
        if reads is not None:
            try:
                return await reads.request_many(commands)
            except (Redirected, Unreachable):
                pass
        try:
            async with asyncio.timeout(self._timeout):
                pipe = self._client.pipeline(transaction=False)
                for command in commands:
                    pipe.execute_command(*command)
                replies: list[Reply] = await pipe.execute()
                return replies
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(f"{commands[0][0]!r}: {exc}") from exc

    async def aclose(self) -> None:
        for reads in self._nodes.values():
            await reads.aclose()


class ClusterBackend(Queries, Channels):
    def __init__(
        self,
        url: str,
        *,
        timeout: float,
        max_connections: int,
        subscribe_timeout: float,
        probe_seconds: float,
    ) -> None:
        # RESP2, as gateway.backend.queries reads the replies on one server.
        client = nodes.async_client(
            url, cluster=True, max_connections=max_connections, socket_timeout=timeout,
            socket_connect_timeout=timeout, protocol=2,
            # A shard whose slots nobody serves must not stop the other shards' requests.
            require_full_coverage=False)
        assert isinstance(client, RedisCluster)
        for command in _RAW:
            client.response_callbacks.pop(command, None)
        self._client = client
        topology = Topology(client, nodes.split(url)[0])
        self._pipelines = ClusterReads(client, topology, timeout)
        super().__init__(self._pipelines)
        self._script = client.register_script(script.SCRIPT)
        self._forget = client.register_script(script.FORGET_SCRIPT)
        # redis-py's cluster pool raises past max_connections where one server's pool
        # queues: changes past the cap wait their turn here, bounded as on one server.
        self._writes = asyncio.Semaphore(max_connections)
        self._timeout = timeout
        self._connections = Shards(topology, connect_timeout=subscribe_timeout,
                                   probe_seconds=probe_seconds, publish=self._publish)

    @classmethod
    @asynccontextmanager
    async def connected(cls, url: str, **options: Any) -> AsyncIterator[ClusterBackend]:
        """The backend, closed at the end of the block (its pub/sub runs under listen)."""
        backend = cls(url, **options)
        try:
            yield backend
        finally:
            await backend._pipelines.aclose()
            await backend._client.aclose()

    async def forget(self, tenant: str, job_ids: Sequence[str]) -> None:
        try:
            for job_id in job_ids:
                async with self._write():
                    await self._forget(keys=keys.forget_keys(tenant, job_id), args=[job_id])
        except _UNAVAILABLE as exc:
            raise BackendUnavailable(str(exc)) from exc

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[None]:
        """A turn for one script call: within the command timeout to wait for a
        connection, and again for the call itself (with redis-py's own retries)."""
        async with asyncio.timeout(self._timeout):
            await self._writes.acquire()
        try:
            async with asyncio.timeout(self._timeout * 2):
                yield
        finally:
            self._writes.release()

    async def _publish(self, channel: bytes, payload: bytes) -> object:
        return await self._reads.request("SPUBLISH", channel, payload)

    async def change(self, op: str, job_id: str, payload: dict[str, Any], *, tenant: str,
                     lifetimes: Lifetimes) -> Change:
        call = script.call(op, job_id, payload, tenant=tenant, lifetimes=lifetimes,
                           publish="SPUBLISH")
        try:
            async with self._write():
                reply = await self._script(keys=call.keys, args=call.args)
        except _UNAVAILABLE as exc:
            # As on one server: Redis refused the call itself (OOM, NOPERM, CLUSTERDOWN),
            # not the change; the script's own refusals are replies, read by result().
            raise BackendUnavailable(str(exc)) from exc
        return script.result(call, reply)

