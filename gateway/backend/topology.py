"""Which cluster node serves a channel: asked of redis-py's cluster client, not kept here.

The sharded subscriptions (gateway.backend.shards) keep connections of their own (the
hot path, docs/architecture.md); where each channel goes comes from the slot map that
redis-py's ``RedisCluster`` keeps for its own commands, refreshed on demand.
"""

from __future__ import annotations

import secrets

from redis.asyncio.cluster import RedisCluster
from redis.crc import key_slot
from redis.exceptions import SlotNotCoveredError

from gateway.backend import nodes

# Tries to find a probe channel on a node's slots: a node with one slot in 16384 of them
# takes 16384 tries on average; past this, a node that small gets no probe channel.
_PROBE_TRIES = 100_000


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

    def owner(self, channel: bytes) -> str | None:
        """The URL of the primary that serves ``channel``'s slot; None when unknown."""
        try:
            node = self._client.nodes_manager.get_node_from_slot(key_slot(channel))
        except (SlotNotCoveredError, KeyError):  # not read yet, or the slot unserved
            return None
        url = self._urls.get(node.name)
        if url is None:
            url = self._urls[node.name] = nodes.node_url(self._base_url, node.host, int(node.port))
        return url

    def primaries(self) -> set[str]:
        """The URLs of the primaries that serve at least one slot."""
        found = set()
        for slot in range(0, 16384):
            holders = self._client.nodes_manager.slots_cache.get(slot)
            if holders:
                node = holders[0]
                found.add(nodes.node_url(self._base_url, node.host, int(node.port)))
        return found

    def probe_channel(self, url: str) -> bytes | None:
        """A channel of a slot ``url`` serves, for its subscriber's self-test."""
        prefix = f"gw:probe:{secrets.token_hex(4)}-"
        for n in range(_PROBE_TRIES):
            channel = f"{prefix}{{{n}}}".encode()
            if self.owner(channel) == url:
                return channel
        return None
