"""The cluster backend against a real 3-primary Valkey Cluster: reads and the update
script on each tenant's shard, sharded channels on every primary, a slot that moves
while watched, and a primary that fails over."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from conftest import tenant_per_shard
from redis.crc import key_slot
from test_standalone import Heard

from gateway.backend.cluster import ClusterBackend
from gateway.backend.shards import Shards
from gateway.backend.topology import Topology
from gateway.contract import keys
from gateway.contract.record import Status
from gateway.contract.script import Lifetimes
from gateway.embedded import EmbeddedCluster
from gateway.errors import InvalidTransition
from gateway.worker import SyncWorker, Worker

pytestmark = [pytest.mark.anyio, pytest.mark.timeout(60)]

OPTIONS = {"timeout": 2, "max_connections": 5, "subscribe_timeout": 2, "probe_seconds": 0.5}


@pytest.fixture
async def backend(cluster: EmbeddedCluster) -> AsyncIterator[ClusterBackend]:
    async with ClusterBackend.connected(cluster.url, **OPTIONS) as backend:
        yield backend


async def test_reads_and_writes_land_on_each_tenants_shard(
    backend: ClusterBackend, cluster: EmbeddedCluster
) -> None:
    tenants = tenant_per_shard(cluster)
    assert len(tenants) == 3
    for tenant in tenants:
        with SyncWorker.from_url(cluster.url, cluster=True, tenant=tenant) as worker:
            worker.create("a")
            worker.create("b")
            worker.start("a")
        a = await backend.read(tenant, "a")
        assert a is not None and (a.version, a.seq, a.status) == (2, 3, Status.RUNNING)
        many = await backend.read_many(tenant, ["a", "nobody", "b"])
        assert many["nobody"] is None and many["b"] is not None
        assert await backend.position(tenant) == (a.epoch, 3)
        assert await backend.changed_since(tenant, 1) == [("b", 2), ("a", 3)]
        assert await backend.newest_first(tenant, below=9, count=1) == [("a", 3)]
        assert await backend.index_seqs(tenant, ["a", "x"]) == {"a": 3, "x": None}
        assert await backend.count_active(tenant) == 2
        assert await backend.active(tenant) == ["b", "a"]
        change = await backend.change("cancel", "b", {}, tenant=tenant, lifetimes=Lifetimes())
        assert change.data["status"] == "canceled"
        with pytest.raises(InvalidTransition):
            await backend.change("start", "b", {}, tenant=tenant, lifetimes=Lifetimes())
        assert await backend.active(tenant) == ["a"]
        with cluster.client(cluster.owner(key_slot(keys.job_key(tenant, "b").encode()))) as client:
            client.delete(keys.job_key(tenant, "b"))  # as when its record expired
        await backend.forget(tenant, ["b"])
        assert await backend.index_seqs(tenant, ["b"]) == {"b": None}
    # Each tenant's keys are on its own shard, and only there.
    for tenant, node in zip(tenants, sorted(cluster.nodes, key=lambda n: n.port), strict=True):
        with cluster.client(node) as client:
            assert client.exists(keys.job_key(tenant, "a")) == 1
    assert await backend.ping()


async def test_api_keys_and_the_token_secret_share_one_slot(backend: ClusterBackend) -> None:
    assert await backend.api_keys() == {}
    assert await backend.api_keys_version() is None
    first = await backend.token_secret(b"x" * 32)
    assert await backend.token_secret(b"y" * 32) == first == b"x" * 32
    await backend.note_key_use({"k1": "2026-11-26T00:00:00Z"})
    slots = {key_slot(name.encode()) for name in (
        keys.api_keys_key(), keys.api_keys_version_key(), keys.api_keys_used_key(),
        keys.token_secret_key())}
    assert len(slots) == 1


async def _watch(backend: ClusterBackend, heard: Heard, channels: list[bytes]) -> None:
    with anyio.fail_after(10):
        while not backend.listening:
            await asyncio.sleep(0.02)
    backend.subscribe(channels)
    with anyio.fail_after(10):
        while not all(backend.subscribed(c) for c in channels):
            await asyncio.sleep(0.02)


async def _heard(heard: Heard, channel: bytes, job_version: int) -> None:
    needle = b" %d " % job_version
    with anyio.fail_after(15):
        while not any(kind == "message" and event[0] == channel and needle in event[1]
                      for kind, event in heard.events):
            await asyncio.sleep(0.02)


async def test_every_shards_channels_deliver_and_stop(
    backend: ClusterBackend, cluster: EmbeddedCluster
) -> None:
    tenants = tenant_per_shard(cluster)
    heard = Heard()
    channels = [keys.job_channel(t, "a").encode() for t in tenants]
    tenant_channels = [keys.tenant_channel(t).encode() for t in tenants]
    async with backend.listen(heard):
        await _watch(backend, heard, channels + tenant_channels)
        for tenant in tenants:
            async with Worker.from_url(cluster.url, cluster=True, tenant=tenant) as worker:
                await worker.create("a")
        for channel in channels + tenant_channels:
            await _heard(heard, channel, 1)
        backend.unsubscribe(channels)
        await asyncio.sleep(0.2)  # the SUNSUBSCRIBE goes out and is answered
        async with Worker.from_url(cluster.url, cluster=True, tenant=tenants[0]) as worker:
            await worker.start("a")
        await _heard(heard, tenant_channels[0], 2)
        assert not any(kind == "message" and event[0] == channels[0] and b" 2 " in event[1]
                       for kind, event in heard.events)
        assert not any(kind == "lost" for kind, _ in heard.events)


async def test_a_watched_slot_that_moves_is_lost_restored_and_delivers_again(
    backend: ClusterBackend, cluster: EmbeddedCluster
) -> None:
    tenant = tenant_per_shard(cluster)[0]
    channel = keys.job_channel(tenant, "a").encode()
    slot = key_slot(channel)
    heard = Heard()
    with SyncWorker.from_url(cluster.url, cluster=True, tenant=tenant) as worker:
        worker.create("a")
        async with backend.listen(heard):
            await _watch(backend, heard, [channel])
            source = cluster.owner(slot)
            target = next(n for n in cluster.nodes if n is not source)
            await anyio.to_thread.run_sync(cluster.migrate, slot, target)
            assert cluster.owner(slot) is target
            assert {channel} <= (await heard.until("lost"))[0]
            assert channel in (await heard.until("restored"))[0]
            with anyio.fail_after(10):
                while not backend.subscribed(channel):
                    await asyncio.sleep(0.02)
            worker.start("a")
            await _heard(heard, channel, 2)
            assert backend.listening


@pytest.mark.timeout(90)
async def test_a_primary_that_fails_over_loses_and_restores_its_channels() -> None:
    with EmbeddedCluster(primaries=3, replicas=1) as cluster:
        tenants = tenant_per_shard(cluster)
        channels = [keys.job_channel(t, "a").encode() for t in tenants]
        heard = Heard()
        async with ClusterBackend.connected(cluster.url, **OPTIONS) as backend, \
                backend.listen(heard):
            await _watch(backend, heard, channels)
            victim = cluster.owner(key_slot(channels[0]))
            victim.kill()
            await anyio.to_thread.run_sync(cluster.wait_ok, 30.0)
            assert cluster.owner(key_slot(channels[0])) is not victim
            assert channels[0] in (await heard.until("lost"))[0]
            with anyio.fail_after(20):
                while not (backend.listening and all(backend.subscribed(c) for c in channels)):
                    await asyncio.sleep(0.05)
            restored = set().union(*await heard.until("restored"))
            assert channels[0] in restored
            for tenant, channel in zip(tenants, channels, strict=True):
                with SyncWorker.from_url(cluster.url, cluster=True, tenant=tenant) as worker:
                    worker.create("a")
                await _heard(heard, channel, 1)


class StaleTopology(Topology):
    """The slot map as a node that has not learnt of a move yet tells it, for a while."""

    def __init__(self, client: Any, base_url: str) -> None:
        super().__init__(client, base_url)
        self.stale: dict[int, str] = {}  # slot → the owner it is still told to have
        self.stale_reads = 0

    async def refresh(self) -> None:
        await super().refresh()
        if self.stale:
            self.stale_reads -= 1
            if self.stale_reads < 0:
                self.stale.clear()

    def slot_owner(self, slot: int) -> str | None:
        return self.stale.get(slot) or super().slot_owner(slot)


async def test_a_dropped_channel_finds_its_new_primary_through_a_stale_slot_map(
    cluster: EmbeddedCluster,
) -> None:
    tenant = tenant_per_shard(cluster)[0]
    channel = keys.job_channel(tenant, "a").encode()
    slot = key_slot(channel)
    heard = Heard()
    async with ClusterBackend.connected(cluster.url, **OPTIONS) as backend:
        topology = StaleTopology(backend._client, cluster.url.split(",")[0])
        shards = backend._connections
        assert isinstance(shards, Shards)
        shards._topology = topology
        with SyncWorker.from_url(cluster.url, cluster=True, tenant=tenant) as worker:
            worker.create("a")
            async with backend.listen(heard):
                await _watch(backend, heard, [channel])
                old = topology.owner(channel)
                assert old is not None
                topology.stale, topology.stale_reads = {slot: old}, 3
                source = cluster.owner(slot)
                target = next(n for n in cluster.nodes if n is not source)
                await anyio.to_thread.run_sync(cluster.migrate, slot, target)
                with anyio.fail_after(5):  # well before the map's read of every 10 s
                    while not backend.subscribed(channel):
                        await asyncio.sleep(0.02)
                assert not topology.stale
                worker.start("a")
                await _heard(heard, channel, 2)


async def test_reads_follow_a_slot_half_moved_and_then_moved(
    backend: ClusterBackend, cluster: EmbeddedCluster
) -> None:
    tenant = tenant_per_shard(cluster)[0]
    with SyncWorker.from_url(cluster.url, cluster=True, tenant=tenant) as worker:
        worker.create("a")
        worker.create("b")
    assert (await backend.read(tenant, "a")) is not None  # the source's connection is open
    slot = key_slot(keys.job_key(tenant, "a").encode())
    source = cluster.owner(slot)
    target = next(n for n in cluster.nodes if n is not source)
    source_id, target_id = cluster.node_id(source), cluster.node_id(target)
    with cluster.client(source) as src, cluster.client(target) as dst:
        dst.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source_id)
        src.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target_id)
        src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS",
                            keys.job_key(tenant, "a"))
        # Half moved: a is on the target (ASK), b still on the source.
        a, b = await backend.read(tenant, "a"), await backend.read(tenant, "b")
        assert a is not None and b is not None and (a.job_id, b.job_id) == ("a", "b")
        many = await backend.read_many(tenant, ["a", "b"])
        assert many["a"] is not None and many["b"] is not None
        while moved := src.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            src.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS",
                                *moved)
        for client in (dst, src):
            client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target_id)
    # Moved: the old primary answers MOVED, the next read goes to the new one.
    for _ in range(2):
        assert await backend.read(tenant, "b") is not None
        assert (await backend.position(tenant)) is not None


async def test_a_channel_refused_as_moved_goes_alone_and_its_neighbours_stay(
    backend: ClusterBackend, cluster: EmbeddedCluster
) -> None:
    first, second = _two_tenants_on_one_node(cluster)
    kept = keys.job_channel(first, "a").encode()
    refused = keys.job_channel(second, "a").encode()
    heard = Heard()
    async with backend.listen(heard):
        await _watch(backend, heard, [kept])
        # The second tenant's slot moves while nothing watches it: the gateway's map is
        # stale, so its first SSUBSCRIBE goes to the old primary, which answers MOVED.
        source = cluster.owner(key_slot(refused))
        target = next(n for n in cluster.nodes if n is not source)
        await anyio.to_thread.run_sync(cluster.migrate, key_slot(refused), target)
        backend.subscribe([refused])
        with anyio.fail_after(10):
            while not backend.subscribed(refused):
                await asyncio.sleep(0.02)
        assert all(kept not in channels for kind, channels in heard.events if kind == "lost")
        assert backend.subscribed(kept)
        with SyncWorker.from_url(cluster.url, cluster=True, tenant=second) as worker:
            worker.create("a")
        with SyncWorker.from_url(cluster.url, cluster=True, tenant=first) as worker:
            worker.create("a")
        await _heard(heard, refused, 1)
        await _heard(heard, kept, 1)


def _two_tenants_on_one_node(cluster: EmbeddedCluster) -> tuple[str, str]:
    """Two tenants on one primary, in two different slots."""
    node = cluster.owner(0)
    found: list[str] = []
    for n in range(10_000):
        tenant = f"n{n}"
        slot = key_slot(keys.tenant_channel(tenant).encode())
        if cluster.owner(slot) is node and all(
                key_slot(keys.tenant_channel(t).encode()) != slot for t in found):
            found.append(tenant)
            if len(found) == 2:
                return found[0], found[1]
    raise AssertionError("no two tenants on one node")


async def test_a_burst_of_changes_past_the_connection_cap_waits_its_turn(
    cluster: EmbeddedCluster,
) -> None:
    options = {**OPTIONS, "max_connections": 2}
    async with ClusterBackend.connected(cluster.url, **options) as backend:
        changes = await asyncio.gather(*(
            backend.change("create", f"j{n}", {}, tenant="burst", lifetimes=Lifetimes())
            for n in range(40)))
    assert {change.data["status"] for change in changes} == {"queued"}
