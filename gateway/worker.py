"""The worker library: how conversion workers report a job's life (docs/workers.md).

Two flavours with the same methods: ``Worker`` for asyncio code (every method returns an
awaitable) and ``SyncWorker`` for plain code. Every method runs the update script once
and returns the job's new snapshot; a refused change raises a ``ChangeRefused`` subclass
that names the job, its current status and the refused operation.
"""

from __future__ import annotations

import time
from collections.abc import Coroutine
from typing import Any, Generic, TypeVar

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

from gateway.backend import nodes
from gateway.contract import keys, script
from gateway.contract.keys import DEFAULT_TENANT
from gateway.contract.script import _UNSET, Call, Lifetimes, Snapshot
from gateway.settings import require_database_0

R = TypeVar("R")
_Awaitable = Coroutine[Any, Any, Snapshot]

_DEFAULTS = Lifetimes()


def _database_0(url: str, cluster: bool) -> None:
    try:
        for node in nodes.split(url) if cluster else [url]:
            require_database_0(node)
    except ValueError as exc:
        raise ValueError(f"the Redis URL {exc}") from None


def _publish(client: object) -> str:
    """On a cluster the script publishes on the shard's own channels (SPUBLISH), where
    the gateway's sharded subscriptions hear them."""
    clusters = (redis.cluster.RedisCluster, redis.asyncio.cluster.RedisCluster)
    return "SPUBLISH" if isinstance(client, clusters) else "PUBLISH"


class _Operations(Generic[R]):
    """Builds each operation's call; subclasses decide how to run it (async or sync)."""

    def __init__(
        self,
        *,
        tenant: str = DEFAULT_TENANT,
        retention_seconds: int = _DEFAULTS.retention_seconds,
        output_ttl_seconds: int = _DEFAULTS.output_ttl_seconds,
        active_ttl_seconds: int = _DEFAULTS.active_ttl_seconds,
    ) -> None:
        """``retention_seconds``: how long a job's record lives after it ended (24 h);
        ``output_ttl_seconds``: how long its output lives after completion (1 h);
        ``active_ttl_seconds``: how long a job that has not ended lives after its last
        change (a week), so that a job abandoned by its worker does not stay for ever."""
        self.tenant = keys.check_tenant(tenant)  # ValueError now, not at the first change
        self.lifetimes = Lifetimes(retention_seconds, output_ttl_seconds, active_ttl_seconds)
        self._publish = "PUBLISH"

    def _run(self, call: Call) -> R:
        raise NotImplementedError

    def _op(self, op: str, job_id: str, payload: dict[str, Any]) -> R:
        return self._run(
            script.call(
                op,
                job_id,
                payload,
                tenant=self.tenant,
                lifetimes=self.lifetimes,
                publish=self._publish,
            )
        )

    def create(
        self,
        job_id: str | None = None,
        *,
        conversion: dict[str, Any] | None = None,
        metrics: dict[str, float] | None = None,
    ) -> R:
        """Register a queued job; without ``job_id`` a new ULID is made."""
        job_id = job_id or script.new_job_id(int(time.time() * 1000))
        payload: dict[str, Any] = {"conversion": conversion or {}}
        if metrics:
            payload["metrics"] = metrics
        return self._op("create", job_id, payload)

    def start(self, job_id: str, *, phase: str | None = _UNSET) -> R:
        return self._op("start", job_id, script.drop_unset(phase=phase))

    def progress(
        self,
        job_id: str,
        percent: float | None = None,
        *,
        phase: str | None = _UNSET,
        metrics: dict[str, float] | None = None,
    ) -> R:
        """Report progress (0-100, never lower than before) and/or the phase text."""
        payload = script.drop_unset(phase=phase)
        if percent is not None:
            payload["percent"] = percent
        if metrics:
            payload["metrics"] = metrics
        return self._op("progress", job_id, payload)

    def complete(
        self,
        job_id: str,
        *,
        file_url: str | None = None,
        file_name: str | None = None,
        content_type: str | None = None,
        file_size_bytes: int | None = None,
        file_count: int = 1,
        metrics: dict[str, float] | None = None,
    ) -> R:
        payload: dict[str, Any] = {
            "output": script.output(file_url, file_name, content_type, file_size_bytes, file_count)
        }
        if metrics:
            payload["metrics"] = metrics
        return self._op("complete", job_id, payload)

    def fail(self, job_id: str, code: str, message: str = "") -> R:
        return self._op("fail", job_id, {"error": {"code": code, "message": message}})

    def cancel(self, job_id: str) -> R:
        """Mark the job canceled (a worker that saw ``cancel_requested`` and stopped)."""
        return self._op("cancel", job_id, {})

    def request_cancel(self, job_id: str) -> R:
        """What a user's cancel does: queued becomes canceled, running gets the request."""
        return self._op("request_cancel", job_id, {})

    def delete(self, job_id: str) -> R:
        """Remove a job that ended; its watchers get a ``deleted`` event."""
        return self._op("delete", job_id, {})


class Worker(_Operations[_Awaitable]):
    """Async worker library: ``await worker.progress(job_id, 45, phase="Rendering")``."""

    def __init__(self, client: redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster,
                 **options: Any) -> None:
        super().__init__(**options)
        self.client = client
        self._script = client.register_script(script.SCRIPT)
        self._publish = _publish(client)

    @classmethod
    def from_url(cls, url: str, *, cluster: bool = False, **options: Any) -> Worker:
        """``cluster``: ``url`` names a Valkey/Redis Cluster, one node or several,
        comma-separated."""
        _database_0(url, cluster)
        client = nodes.async_client(url, cluster=cluster)
        return cls(client, **options)

    async def _call(self, call: Call) -> Snapshot:
        reply = await self._script(keys=call.keys, args=call.args)
        return script.result(call, reply).data

    def _run(self, call: Call) -> _Awaitable:
        return self._call(call)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def __aenter__(self) -> Worker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class SyncWorker(_Operations[Snapshot]):
    """Blocking worker library: ``worker.progress(job_id, 45, phase="Rendering")``."""

    def __init__(self, client: redis.Redis | redis.cluster.RedisCluster,
                 **options: Any) -> None:
        super().__init__(**options)
        self.client = client
        self._script = client.register_script(script.SCRIPT)
        self._publish = _publish(client)

    @classmethod
    def from_url(cls, url: str, *, cluster: bool = False, **options: Any) -> SyncWorker:
        """``cluster``: ``url`` names a Valkey/Redis Cluster, one node or several,
        comma-separated."""
        _database_0(url, cluster)
        return cls(nodes.sync_client(url, cluster=cluster), **options)

    def _run(self, call: Call) -> Snapshot:
        return script.result(call, self._script(keys=call.keys, args=call.args)).data

    def close(self) -> None:
        self.client.close()

    def __enter__(self) -> SyncWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
