"""Which cluster node serves a channel: asked of redis-py's cluster client, not kept here.

The sharded subscriptions (gateway.backend.shards) and the request reads
(gateway.backend.cluster) keep connections of their own (the hot path,
docs/architecture.md); where each key and channel goes comes from the slot map that
redis-py's ``RedisCluster`` keeps for its own commands, refreshed on demand.
"""

from __future__ import annotations

import secrets
from typing import Any

from redis.asyncio.cluster import RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from gateway.backend import nodes

_TAGS: list[str] = []  # a hash tag for each slot, made once when first needed


def _tag(slot: int) -> str:
    """A hash tag whose key slot is ``slot``."""
    if not _TAGS:
        found: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
        left, n = REDIS_CLUSTER_HASH_SLOTS, 0
        while left:
            tag = str(n)
            at = key_slot(tag.encode())
            if found[at] is None:
                found[at], left = tag, left - 1
            n += 1
        _TAGS.extend(tag for tag in found if tag is not None)
    return _TAGS[slot]


class Topology:
    def __init__(self, client: RedisCluster, base_url: str) -> None:
        self._client = client
        self._base_url = base_url  # credentials and TLS options for every node
        self._urls: dict[str, str] = {}  # node name (host:port) → its URL

    async def refresh(self) -> None:
        """Read the slot map again (raises what redis-py raises when no node answers)."""
        # The client's own start first (a no-op once done): it also reads the commands'
        # key positions, which routing a command needs.
        await self._client.initialize()
        await self._client.nodes_manager.initialize()

    @property
    def known(self) -> bool:
        return bool(self._client.nodes_manager.slots_cache)

    @property
    def covered(self) -> bool:
        """Every slot has a primary (not so while a cluster is being formed, when a node
        knows only its own slots, nor while a primary with no replica is down)."""
        return len(self._client.nodes_manager.slots_cache) == REDIS_CLUSTER_HASH_SLOTS

    def _url(self, node: Any) -> str:
        url = self._urls.get(node.name)
        if url is None:
            url = self._urls[node.name] = nodes.node_url(self._base_url, node.host,
                                                         int(node.port))
        return url

    def slot_owner(self, slot: int) -> str | None:
        """The URL of the primary that serves ``slot``; None when unknown or unserved."""
        holders = self._client.nodes_manager.slots_cache.get(slot)
        return self._url(holders[0]) if holders else None

    def owner(self, key: bytes) -> str | None:
        """The URL of the primary that serves ``key``'s slot (a key's or a channel's)."""
        return self.slot_owner(key_slot(key))

    def signature(self) -> tuple[str, ...]:
        """Which node serves each slot, as one value: equal while nothing moved."""
        cache = self._client.nodes_manager.slots_cache
        return tuple(holders[0].name if holders else "" for holders in cache.values())

    def primaries(self) -> set[str]:
        """The URLs of the primaries that serve at least one slot."""
        serving = {holders[0].name: holders[0]
                   for holders in self._client.nodes_manager.slots_cache.values() if holders}
        return {self._url(node) for node in serving.values()}

    def probe_channel(self, url: str) -> bytes | None:
        """A channel of a slot ``url`` serves, for its subscriber's self-test."""
        for slot, holders in self._client.nodes_manager.slots_cache.items():
            if holders and self._url(holders[0]) == url:
                return f"gw:probe:{secrets.token_hex(4)}:{{{_tag(slot)}}}".encode()
        return None
