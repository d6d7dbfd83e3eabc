"""Redis URLs and redis-py clients for both modes: one server, or a cluster's nodes.

In cluster mode ``REDIS_URL`` names one node or several, comma-separated: the first is a
whole URL (scheme, credentials, TLS options), the others may be only ``host:port`` and
take the rest from the first. The cluster's own topology then comes from redis-py's
cluster client (docs/architecture.md, Cluster); nothing here follows it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
import redis.asyncio
import redis.asyncio.cluster
import redis.cluster

Client = redis.Redis | redis.cluster.RedisCluster
AsyncClient = redis.asyncio.Redis | redis.asyncio.cluster.RedisCluster


def split(url: str) -> list[str]:
    """Each node of a comma-separated ``url`` as a whole URL; ValueError for a part that
    is no address."""
    first, *others = (part.strip() for part in url.split(","))
    if not urlsplit(first).hostname:
        raise ValueError("its first node names no host")
    nodes = [first]
    for number, part in enumerate(others, start=2):
        if "://" not in part:
            host, sep, port = part.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"node {number} is neither a URL nor host:port")
            part = node_url(first, host.strip("[]"), int(port))
        elif not urlsplit(part).hostname:
            raise ValueError(f"node {number} names no host")
        nodes.append(part)
    return nodes


def node_url(base: str, host: str, port: int) -> str:
    """``base`` (scheme, credentials, TLS options) at another node's address."""
    parts = urlsplit(base)
    credentials, at, _ = parts.netloc.rpartition("@")
    address = f"[{host}]" if ":" in host else host
    return urlunsplit((parts.scheme, f"{credentials}{at}{address}:{port}", "", parts.query, ""))


def _startup(url: str, cluster_type: type[Any], node_type: type[Any],
             **options: Any) -> Any:
    nodes = split(url)
    # REDIS_URL stays where the slot map is read from: a name in front of the nodes (a
    # Service) outlives their addresses, which redis-py would otherwise swap it for.
    options.setdefault("dynamic_startup_nodes", False)
    startup = [node_type(urlsplit(node).hostname, urlsplit(node).port or 6379)
               for node in nodes]
    return cluster_type.from_url(nodes[0], startup_nodes=startup, **options)


def sync_client(url: str, *, cluster: bool, **options: Any) -> Client:
    """A blocking client: of the one server, or of the whole cluster."""
    if not cluster:
        return redis.Redis.from_url(url, **options)
    client: redis.cluster.RedisCluster = _startup(
        url, redis.cluster.RedisCluster, redis.cluster.ClusterNode, **options)
    return client


def async_client(url: str, *, cluster: bool, **options: Any) -> AsyncClient:
    """An asyncio client: of the one server, or of the whole cluster."""
    if not cluster:
        return redis.asyncio.Redis.from_url(url, **options)
    client: redis.asyncio.cluster.RedisCluster = _startup(
        url, redis.asyncio.cluster.RedisCluster, redis.asyncio.cluster.ClusterNode, **options)
    return client
