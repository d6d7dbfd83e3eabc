"""The standalone backend against a real Valkey: reads, the update script, channels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Collection
from typing import Any

import anyio
import pytest
import redis

from gateway.backend.standalone import StandaloneBackend
from gateway.contract import keys
from gateway.contract.record import Status
from gateway.contract.script import Lifetimes
from gateway.errors import BackendUnavailable, InvalidTransition
from gateway.worker import SyncWorker

pytestmark = pytest.mark.anyio


class Heard:
    """A Listener that writes down what it is told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def on_messages(self, batch: list[tuple[bytes, bytes]]) -> int:
        for channel, payload in batch:
            self.events.append(("message", (channel, payload)))
        return len(batch)

    def on_subscribed(self, channel: bytes) -> None:
        self.events.append(("subscribed", channel))

    def on_lost(self, channels: Collection[bytes]) -> None:
        self.events.append(("lost", set(channels)))

    def on_restored(self, channels: Collection[bytes]) -> None:
        self.events.append(("restored", set(channels)))

    async def until(self, kind: str, count: int = 1) -> list[Any]:
        with anyio.fail_after(10):
            while len(found := [e for k, e in self.events if k == kind]) < count:
                await asyncio.sleep(0.01)
        return found


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[StandaloneBackend]:
    async with StandaloneBackend.connected(redis_url, timeout=1, max_connections=5,
                                           subscribe_timeout=1, probe_seconds=60) as backend:
        yield backend


async def test_reads_and_index_queries(backend: StandaloneBackend, redis_url: str) -> None:
    assert await backend.read("default", "a") is None
    assert await backend.epoch("default") is None
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("a")
        worker.create("b")
        worker.start("a")
        worker.create("c")
        worker.cancel("c")
    a = await backend.read("default", "a")
    assert a is not None and (a.version, a.seq, a.status, a.status_seq) == (
        2, 3, Status.RUNNING, 3)
    many = await backend.read_many("default", ["a", "nobody", "c"])
    assert many["nobody"] is None and many["c"] is not None and many["c"].terminal
    assert await backend.epoch("default") == a.epoch
    assert await backend.changed_since("default", 2) == [("a", 3), ("c", 5)]
    assert await backend.newest_first("default", below=5, count=2) == [("a", 3), ("b", 2)]
    assert await backend.active("default") == ["b", "a"]
    assert await backend.ping()


async def test_many_reads_go_in_batches(backend: StandaloneBackend, r: redis.Redis) -> None:
    ids = [f"j{n}" for n in range(1200)]
    found = await backend.read_many("default", ids)
    assert list(found) == ids and set(found.values()) == {None}


async def test_the_update_script_and_its_refusals(backend: StandaloneBackend) -> None:
    change = await backend.change("create", "x", {}, tenant="default", lifetimes=Lifetimes())
    assert change.event == "status" and change.data["version"] == 1
    await backend.change("request_cancel", "x", {}, tenant="default", lifetimes=Lifetimes())
    with pytest.raises(InvalidTransition):
        await backend.change("start", "x", {}, tenant="default", lifetimes=Lifetimes())


async def test_an_unreachable_redis_is_backend_unavailable_everywhere() -> None:
    async with StandaloneBackend.connected("redis://127.0.0.1:1/0", timeout=0.3,
                                           max_connections=1, subscribe_timeout=0.3,
                                           probe_seconds=60) as backend:
        with pytest.raises(BackendUnavailable):
            await backend.read("default", "a")
        with pytest.raises(BackendUnavailable):
            await backend.change("create", "x", {}, tenant="default", lifetimes=Lifetimes())
        assert not await backend.ping()


async def test_channels_are_confirmed_delivered_lost_and_restored(
    backend: StandaloneBackend, r: redis.Redis
) -> None:
    heard = Heard()
    channel = keys.job_channel("default", "a").encode()
    async with backend.listen(heard):
        with anyio.fail_after(10):
            while not backend.listening:
                await asyncio.sleep(0.01)
        backend.subscribe([channel])
        assert not backend.subscribed(channel)  # in flight
        assert await heard.until("subscribed") == [channel]
        assert backend.subscribed(channel)
        r.publish(channel, b"hello")
        assert await heard.until("message") == [(channel, b"hello")]
        assert r.client_kill_filter(_type="pubsub") == 1
        assert await heard.until("lost") == [{channel}]
        assert await heard.until("restored") == [{channel}]
        assert backend.subscribed(channel)
        r.publish(channel, b"again")
        assert (await heard.until("message", 2))[1] == (channel, b"again")
        backend.unsubscribe([channel])
        assert not backend.subscribed(channel)
        with anyio.fail_after(10):
            while r.pubsub_numsub(channel)[0][1]:
                await asyncio.sleep(0.01)
        r.publish(channel, b"not any more")
        await asyncio.sleep(0.1)
        assert len([e for k, e in heard.events if k == "message"]) == 2
    assert not backend.listening


async def test_a_silent_pubsub_connection_is_found_by_the_probe(redis_url: str,
                                                                r: redis.Redis) -> None:
    heard = Heard()
    async with StandaloneBackend.connected(redis_url, timeout=1, max_connections=5,
                                           subscribe_timeout=0.3, probe_seconds=0.2) as backend:
        async with backend.listen(heard):
            with anyio.fail_after(10):
                while not backend.listening:
                    await asyncio.sleep(0.01)
            # Redis stops answering without closing anything: the probe's publish is not
            # heard back in time, so the connection is restarted.
            r.execute_command("CLIENT", "PAUSE", "1500", "ALL")
            try:
                assert await heard.until("lost") != []
            finally:
                r.execute_command("CLIENT", "UNPAUSE")
            await heard.until("restored")


async def test_a_listener_that_raises_never_breaks_the_connection(
    backend: StandaloneBackend, r: redis.Redis
) -> None:
    class Clumsy(Heard):
        def on_messages(self, batch: list[tuple[bytes, bytes]]) -> int:
            super().on_messages(batch)
            raise RuntimeError("a bug behind the listener")

    heard = Clumsy()
    channel = b"gw:{default}:job:clumsy"
    async with backend.listen(heard):
        backend.subscribe([channel])
        await heard.until("subscribed")
        r.publish(channel, b"one")
        r.publish(channel, b"two")
        assert await heard.until("message", 2) == [(channel, b"one"), (channel, b"two")]
        assert not [e for k, e in heard.events if k == "lost"]


async def test_a_read_whose_messages_made_many_writes_yields_the_loop_once(
    backend: StandaloneBackend, r: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10, item 5: a burst made the reader fan out for seconds inside one
    data_received; past a budget of writes the connection now lets the loop run first."""
    from gateway.backend.connection import RedisConnection

    paused: list[int] = []
    monkeypatch.setattr(RedisConnection, "pause_for_a_turn", lambda self: paused.append(1))

    class Busy(Heard):
        def on_messages(self, batch: list[tuple[bytes, bytes]]) -> int:
            super().on_messages(batch)
            return 10_000 if batch[0][1] == b"heavy" else 1

    heard = Busy()
    channel = b"gw:{default}:job:busy"
    async with backend.listen(heard):
        backend.subscribe([channel])
        await heard.until("subscribed")
        r.publish(channel, b"light")
        await heard.until("message")
        assert paused == []
        r.publish(channel, b"heavy")
        await heard.until("message", 2)
        assert paused == [1]
