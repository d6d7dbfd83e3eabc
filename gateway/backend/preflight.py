"""Whether Redis refuses the configuration in ``REDIS_URL`` for good, before serving.

A Redis that cannot be reached is an outage: the gateway starts, answers 503 and
``/readyz`` 503, and reconnects with backoff until it answers (docs/operations.md). A
Redis that answers and refuses the credentials, an endpoint that does not speak Redis
at all, or a server of the other mode (a cluster node without GATEWAY_REDIS_CLUSTER, or
the other way round) will never work however long it is retried: start-up stops with
one line that says why, and ``/healthz`` never gets to say "ok" over it.
"""

from __future__ import annotations

import redis.asyncio
from redis.exceptions import (
    AskError,
    AuthenticationError,
    AuthenticationWrongNumberOfArgsError,
    InvalidResponse,
    MovedError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from gateway.backend import nodes

_CREDENTIALS = ("WRONGPASS", "NOAUTH", "invalid password", "invalid username-password")
A_CLUSTER = ("it is a node of a Redis Cluster: set GATEWAY_REDIS_CLUSTER=true (and name "
             "one node or several, comma-separated)")
NO_CLUSTER = ("GATEWAY_REDIS_CLUSTER=true, but it is no cluster node: unset "
              "GATEWAY_REDIS_CLUSTER for a single server")
NO_SLOT_MAP = ("the Redis user may not read the cluster's slot map (CLUSTER SLOTS): grant "
               "it the cluster additions of docs/operations.md, Redis permissions, on every "
               "node")


def refusal(exc: BaseException) -> str | None:
    """Why Redis refuses this configuration for good; None for anything that may pass
    (unreachable, slow, loading, out of memory)."""
    if isinstance(exc, AuthenticationError | AuthenticationWrongNumberOfArgsError) or (
            isinstance(exc, ResponseError) and str(exc).startswith(_CREDENTIALS)):
        return f"Redis refuses the credentials: {exc}"
    if isinstance(exc, InvalidResponse):
        return f"the server there does not speak the Redis protocol ({exc})"
    if isinstance(exc, MovedError | AskError) or (
            isinstance(exc, ResponseError) and str(exc).startswith(("MOVED", "CROSSSLOT"))):
        return A_CLUSTER
    if isinstance(exc, RedisClusterException) and "not enabled" in str(exc):
        # redis-py says so whenever CLUSTER SLOTS fails, a refused permission included.
        return ("no node would give its slot map: either it is no cluster node (unset "
                "GATEWAY_REDIS_CLUSTER for a single server), or " + NO_SLOT_MAP)
    return None


async def check(url: str, socket_seconds: float, *, cluster: bool = False) -> str | None:
    """Why Redis refuses the configuration in ``url``; None when it answers, or cannot be
    reached now (then the backend retries and logs each backoff step). In cluster mode
    the first node of ``url`` that answers is asked."""
    found: str | None = None
    for node in nodes.split(url) if cluster else [url]:
        try:
            async with redis.asyncio.Redis.from_url(
                    node, socket_timeout=socket_seconds,
                    socket_connect_timeout=socket_seconds) as client:
                await client.ping()
                try:
                    info = await client.info("cluster")
                except ResponseError as exc:
                    if "NOPERM" not in str(exc):
                        raise
                    return None  # an ACL without INFO: the check is skipped
        except (RedisError, OSError) as exc:
            found = refusal(exc)
            if found is not None or not cluster:
                return found
            continue  # another node may answer
        enabled = bool(info.get("cluster_enabled"))
        if enabled and not cluster:
            return A_CLUSTER
        if cluster and not enabled:
            return NO_CLUSTER
        if cluster:
            try:
                async with redis.asyncio.Redis.from_url(
                        node, socket_timeout=socket_seconds,
                        socket_connect_timeout=socket_seconds) as client:
                    await client.execute_command(  # type: ignore[no-untyped-call]
                        "CLUSTER", "SLOTS")
            except ResponseError as exc:
                if "NOPERM" in str(exc):
                    return NO_SLOT_MAP
            except (RedisError, OSError):
                pass  # gone meanwhile: an outage, retried
        return None
    return found
