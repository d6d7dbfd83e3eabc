"""The hub against a scripted backend: subscriptions, fan-out, resync, timers.

No Redis: the test plays the backend's side (confirmations, messages, losses) by hand.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import anyio
import pytest
from asgi_socket import Socket, settle
from scripted import ScriptedBackend, record

from gateway.contract import frames, keys
from gateway.contract.events import Message
from gateway.errors import BackendUnavailable
from gateway.fanout.hub import MAX_MESSAGE_BYTES, Hub
from gateway.fanout.watcher import Watcher
from gateway.observability.metrics import STATS

pytestmark = pytest.mark.anyio

JOB = keys.job_channel("default", "a").encode()
TENANT = keys.tenant_channel("default").encode()


def payload(job: str, version: int, seq: int, status: str = "running",
            event: str = "progress", epoch: str = "epoch1") -> bytes:
    data = b'{"job_id":"%s","status":"%s","version":%d}' % (
        job.encode(), status.encode(), version)
    return b"%s-%d %s %d %s 0 %s\n%s" % (epoch.encode(), seq, event.encode(), version,
                                         status.encode(), job.encode(), data)


@pytest.fixture
async def backend() -> ScriptedBackend:
    return ScriptedBackend()


@pytest.fixture
async def hub(backend: ScriptedBackend) -> AsyncIterator[Hub]:
    async with Hub.running(backend, heartbeat_seconds=60, subscribe_timeout_seconds=0.2,
                           send_timeout_seconds=60) as hub:
        yield hub


async def stream(hub: Hub, backend: ScriptedBackend, channel: bytes, *,
                 close_on_terminal: bool = False) -> tuple[Socket, Watcher]:
    """An open stream of ``channel`` (its subscription confirmed at once), released to
    the hub: what the hub writes to it lands in the Socket."""
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=close_on_terminal)
    backend.subscribed_now.add(channel)
    await open_watch(hub, [channel.decode()], watcher)
    watcher.release()
    return socket, watcher


async def open_watch(hub: Hub, channels: list[str], watcher: Watcher) -> asyncio.Event:
    """Hold ``hub.watch`` open in a task; the event is set once it returned."""
    ready = asyncio.Event()

    async def hold() -> None:
        async with hub.watch(channels, watcher):
            ready.set()
            await anyio.sleep_forever()

    asyncio.get_running_loop().create_task(hold())
    await settle()
    return ready


async def test_the_first_watcher_subscribes_and_waits_for_the_confirmation(
    hub: Hub, backend: ScriptedBackend
) -> None:
    ready = await open_watch(hub, [JOB.decode()], Watcher(Socket().send,
                                                          close_on_terminal=False))
    assert backend.calls == [("subscribe", [JOB])]
    assert not ready.is_set()  # a snapshot read now could miss a change
    backend.confirm(JOB)
    await settle()
    assert ready.is_set()


async def test_a_second_watcher_of_a_confirmed_channel_neither_subscribes_nor_waits(
    hub: Hub, backend: ScriptedBackend
) -> None:
    await open_watch(hub, [JOB.decode()], Watcher(Socket().send, close_on_terminal=False))
    backend.confirm(JOB)
    ready = await open_watch(hub, [JOB.decode()], Watcher(Socket().send,
                                                          close_on_terminal=False))
    assert ready.is_set()
    assert backend.calls == [("subscribe", [JOB])]
    assert hub.channel_count == 1 and hub.watcher_count == 2


async def test_an_unconfirmed_subscription_fails_in_time_and_leaves_nothing(
    hub: Hub, backend: ScriptedBackend
) -> None:
    watcher = Watcher(Socket().send, close_on_terminal=False)
    with pytest.raises(BackendUnavailable), anyio.fail_after(2):
        async with hub.watch([JOB.decode()], watcher):
            pass
    assert backend.calls == [("subscribe", [JOB]), ("unsubscribe", [JOB])]
    assert hub.channel_count == 0 and hub.watcher_count == 0
    assert hub.open_streams == {"job": 0}


async def test_the_last_watcher_leaving_unsubscribes(hub: Hub, backend: ScriptedBackend) -> None:
    backend.subscribed_now.add(JOB)  # confirmed at once
    first = Watcher(Socket().send, close_on_terminal=False)
    second = Watcher(Socket().send, close_on_terminal=False)
    async with hub.watch([JOB.decode()], first):
        async with hub.watch([JOB.decode()], second):
            pass
        assert backend.calls == [("subscribe", [JOB])]
    assert backend.calls == [("subscribe", [JOB]), ("unsubscribe", [JOB])]


async def test_a_message_is_parsed_once_and_reaches_every_watcher(
    hub: Hub, backend: ScriptedBackend
) -> None:
    sockets = [Socket() for _ in range(3)]
    watchers = [Watcher(s.send, close_on_terminal=False) for s in sockets]
    backend.subscribed_now.add(JOB)
    for watcher in watchers:
        await open_watch(hub, [JOB.decode()], watcher)
        watcher.release()
    backend.publish(JOB, payload("a", 2, seq=7))
    for socket in sockets:
        assert socket.events() == [("progress", "epoch1-7")]
    # One frame, one ASGI body for all of them.
    assert len({id(s.bodies[0]) for s in sockets}) == 1
    assert hub.last_position(JOB) == ("epoch1", 7)


async def test_messages_of_unwatched_channels_are_ignored(
    hub: Hub, backend: ScriptedBackend
) -> None:
    bad = STATS.bad_messages
    backend.publish(b"gw:{default}:job:nobody", b"anything at all")
    assert STATS.bad_messages == bad


@pytest.mark.parametrize("junk", [
    b"not a gateway message",
    b"epoch1-1 progress 1 running 0 a\nnot json",
    b"epoch1-1 progress 1 running 0 a\n{\"a\":1}" + b" " * MAX_MESSAGE_BYTES,
    b"epoch1-x progress 1 running 0 a\n{}",
    b"epoch1-1 progress 1 flying 0 a\n{}",
])
async def test_malformed_messages_are_dropped_and_counted(
    hub: Hub, backend: ScriptedBackend, junk: bytes
) -> None:
    socket, _watcher = await stream(hub, backend, JOB)
    bad = STATS.bad_messages
    backend.publish(JOB, junk)
    assert STATS.bad_messages == bad + 1
    assert socket.bodies == []
    backend.publish(JOB, payload("a", 1, seq=1))  # the channel still works
    assert socket.events() == [("progress", "epoch1-1")]


async def test_restored_job_channels_get_what_moved_and_gone_jobs_end(
    hub: Hub, backend: ScriptedBackend
) -> None:
    gone = keys.job_channel("default", "b").encode()
    sockets = {JOB: Socket(), gone: Socket()}
    watchers = {}
    backend.subscribed_now.update(sockets)
    for channel, socket in sockets.items():
        watchers[channel] = watcher = Watcher(socket.send, close_on_terminal=True)
        await open_watch(hub, [channel.decode()], watcher)
        watcher.release()
    backend.publish(JOB, payload("a", 2, seq=2, status="queued", event="status"))
    backend.lose()
    backend.records["a"] = record("a", 4, seq=9, status="running", status_seq=8)
    backend.restore(JOB, gone)
    await settle()
    # The status moved while the connection was away: the client is told so.
    assert sockets[JOB].events() == [("status", "epoch1-2"), ("status", "epoch1-9")]
    assert watchers[gone].closed and sockets[gone].more == [False]


async def test_a_restored_tenant_channel_gets_the_jobs_changed_since_its_last_message(
    hub: Hub, backend: ScriptedBackend
) -> None:
    socket, _watcher = await stream(hub, backend, TENANT)
    backend.publish(TENANT, payload("a", 1, seq=3, status="queued", event="status"))
    backend.lose()
    backend.epochs["default"] = "epoch1"
    backend.records = {"a": record("a", 2, seq=4, status="running"),
                       "b": record("b", 1, seq=5, status="queued")}
    backend.index = {"old": 2, "a": 4, "b": 5}
    backend.restore(TENANT)
    await settle()
    assert socket.events() == [("status", "epoch1-3"), ("status", "epoch1-4"),
                               ("status", "epoch1-5")]


async def test_a_tenant_channel_resyncs_from_where_its_streams_opened(
    hub: Hub, backend: ScriptedBackend
) -> None:
    """Nothing came on the channel before the loss: the index since the opening tells
    what moved, deletions included."""
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=False)
    backend.subscribed_now.add(TENANT)
    await open_watch(hub, [TENANT.decode()], watcher)
    watcher.open_with([Message.from_record(record("d1", 1, seq=4, status="queued"),
                                           "snapshot")])
    hub.opened(TENANT, ("epoch1", 4))
    watcher.release()
    backend.lose()
    backend.epochs["default"] = "epoch1"
    backend.index = {"d1": 6}  # canceled at 5, deleted at 6: its record is gone
    backend.restore(TENANT)
    await settle()
    assert socket.events() == [("snapshot", "epoch1-4"), ("deleted", "epoch1-6")]
    assert socket.bodies[-1].endswith(b'data: {"job_id":"d1","version":null}\n\n')


async def test_the_earliest_opening_position_counts_until_a_message_comes(
    hub: Hub, backend: ScriptedBackend
) -> None:
    backend.subscribed_now.add(TENANT)
    await open_watch(hub, [TENANT.decode()], Watcher(Socket().send, close_on_terminal=False))
    hub.opened(TENANT, ("epoch1", 9))
    hub.opened(TENANT, ("epoch1", 7))
    hub.opened(TENANT, ("epoch1", 8))
    assert hub.last_position(TENANT) == ("epoch1", 7)
    backend.publish(TENANT, payload("a", 1, seq=10, status="queued", event="status"))
    assert hub.last_position(TENANT) == ("epoch1", 10)


async def test_a_restored_tenant_channel_of_another_epoch_ends_its_streams(
    hub: Hub, backend: ScriptedBackend
) -> None:
    socket, watcher = await stream(hub, backend, TENANT)
    backend.publish(TENANT, payload("a", 1, seq=3, status="queued", event="status"))
    backend.lose()
    backend.epochs["default"] = "epoch2"  # Redis lost its data meanwhile
    backend.restore(TENANT)
    await settle()
    assert watcher.closed and socket.more[-1] is False


async def test_a_resync_retries_until_the_reads_are_back(
    hub: Hub, backend: ScriptedBackend
) -> None:
    socket, _watcher = await stream(hub, backend, JOB, close_on_terminal=True)
    backend.lose()
    backend.unavailable = True
    backend.records["a"] = record("a", 3, seq=3, status_seq=2)
    backend.restore(JOB)
    with anyio.fail_after(5):
        while backend.reads < 3:
            await anyio.sleep(0.01)
    assert socket.bodies == []
    backend.unavailable = False
    with anyio.fail_after(5):
        while not socket.bodies:
            await anyio.sleep(0.01)
    # Nothing came on the channel before the loss: the status change may have been missed.
    assert socket.events() == [("status", "epoch1-3")]


async def test_a_resync_of_a_lost_connection_stops(hub: Hub, backend: ScriptedBackend) -> None:
    backend.subscribed_now.add(JOB)
    await open_watch(hub, [JOB.decode()], Watcher(Socket().send, close_on_terminal=True))
    backend.lose()
    backend.unavailable = True
    backend.restore(JOB)
    with anyio.fail_after(5):
        while backend.reads < 2:
            await anyio.sleep(0.01)
    backend.lose()  # lost again: that resync belongs to a dead connection
    await anyio.sleep(0.3)  # longer than its retry delays so far
    reads = backend.reads
    await anyio.sleep(0.5)
    assert backend.reads == reads


async def test_a_loss_of_other_channels_does_not_stop_a_resync(
    hub: Hub, backend: ScriptedBackend
) -> None:
    # On a cluster each shard has its connection: a loss of another shard's channels
    # must not cancel this one's resync (it would never be resynced).
    other = keys.job_channel("default", "b").encode()
    socket, _watcher = await stream(hub, backend, JOB, close_on_terminal=True)
    await stream(hub, backend, other)
    backend.lose(JOB)
    backend.unavailable = True
    backend.records["a"] = record("a", 3, seq=3, status_seq=2)
    backend.restore(JOB)
    with anyio.fail_after(5):
        while backend.reads < 2:
            await anyio.sleep(0.01)
    backend.lose(other)
    backend.unavailable = False
    with anyio.fail_after(5):
        while not socket.bodies:
            await anyio.sleep(0.01)
    assert socket.events() == [("status", "epoch1-3")]


async def test_one_timer_sends_heartbeats_to_idle_streams(backend: ScriptedBackend) -> None:
    async with Hub.running(backend, heartbeat_seconds=0.05, subscribe_timeout_seconds=1,
                           send_timeout_seconds=60) as hub:
        idle, busy = Socket(), Socket()
        backend.subscribed_now.add(JOB)
        for socket in (idle, busy):
            watcher = Watcher(socket.send, close_on_terminal=False)
            await open_watch(hub, [JOB.decode()], watcher)
            watcher.release()
        busy.fill()
        with anyio.fail_after(5):
            while idle.bodies.count(frames.HEARTBEAT) < 2:
                await anyio.sleep(0.01)
        # The busy one's first heartbeat is still waiting for room: no second one queued.
        assert busy.bodies == []
        busy.drain()
        await settle()
        assert busy.bodies == [frames.HEARTBEAT]


async def test_a_client_that_takes_no_data_is_dropped_after_the_send_timeout(
    backend: ScriptedBackend
) -> None:
    async with Hub.running(backend, heartbeat_seconds=0.05, subscribe_timeout_seconds=1,
                           send_timeout_seconds=0.2) as hub:
        socket = Socket()
        socket.fill()
        backend.subscribed_now.add(JOB)
        watchers: list[Watcher] = []

        async def stream() -> None:  # the stream's own task, which abort() cancels
            watcher = Watcher(socket.send, close_on_terminal=False)
            watchers.append(watcher)
            async with hub.watch([JOB.decode()], watcher):
                watcher.release()
                await anyio.sleep_forever()

        task = asyncio.get_running_loop().create_task(stream())
        slow = STATS.slow_disconnects
        with anyio.fail_after(5):
            while not task.done():
                await anyio.sleep(0.01)
        assert task.cancelled() and watchers[0].aborted
        assert STATS.slow_disconnects == slow + 1
        assert hub.watcher_count == 0


class Faulty(Watcher):
    __slots__ = ()

    def deliver(self, message: Message) -> None:
        raise RuntimeError("a bug in one stream")


async def test_a_failing_stream_is_closed_and_the_others_still_get_the_message(
    hub: Hub, backend: ScriptedBackend
) -> None:
    backend.subscribed_now.add(JOB)
    sockets = [Socket(), Socket()]
    faulty_task: list[asyncio.Task[None]] = []

    async def faulty_stream() -> None:  # its own task, which abort() cancels
        watcher = Faulty(Socket().send, close_on_terminal=False)
        async with hub.watch([JOB.decode()], watcher):
            watcher.release()
            await anyio.sleep_forever()

    faulty_task.append(asyncio.get_running_loop().create_task(faulty_stream()))
    for socket in sockets:
        watcher = Watcher(socket.send, close_on_terminal=False)
        await open_watch(hub, [JOB.decode()], watcher)
        watcher.release()
    await settle()
    backend.publish(JOB, payload("a", 1, seq=1))  # raises nothing here
    await settle()
    assert [s.events() for s in sockets] == [[("progress", "epoch1-1")]] * 2
    assert faulty_task[0].cancelled()
    assert hub.watcher_count == 2


async def test_a_live_message_before_the_resync_does_not_hide_what_the_outage_missed(
    hub: Hub, backend: ScriptedBackend
) -> None:
    """The resync starts where the channel stood when it was lost, whatever arrived after
    the restoration (a review found the start moved past the outage)."""
    backend.epochs["default"] = "epoch1"
    backend.records["a"] = record("a", 1, seq=1, status="queued")
    backend.index["a"] = 1
    socket, _ = await stream(hub, backend, TENANT)
    backend.publish(TENANT, payload("a", 1, seq=1, status="queued", event="status"))
    backend.lose()
    del backend.records["a"]  # ended and deleted while the connection was down (seq 2)
    backend.index["a"] = 2
    backend.records["b"] = record("b", 1, seq=3, status="queued")  # created meanwhile
    backend.index["b"] = 3
    backend.restore(TENANT)
    backend.records["c"] = record("c", 1, seq=4, status="queued")
    backend.index["c"] = 4
    backend.publish(TENANT, payload("c", 1, seq=4, status="queued", event="status"))  # live
    await settle()
    assert socket.events() == [("status", "epoch1-1"), ("status", "epoch1-4"),
                               ("deleted", "epoch1-2"), ("status", "epoch1-3")]


async def test_a_resync_of_a_connection_lost_again_dispatches_nothing_more(
    hub: Hub, backend: ScriptedBackend
) -> None:
    backend.epochs["default"] = "epoch1"
    socket, _ = await stream(hub, backend, TENANT)
    backend.publish(TENANT, payload("a", 1, seq=1, status="queued", event="status"))
    backend.lose()
    backend.records["b"] = record("b", 1, seq=2, status="queued")
    backend.index["b"] = 2
    backend.restore(TENANT)
    backend.lose()  # before the resync ran
    await settle()
    assert socket.events() == [("status", "epoch1-1")]
    backend.restore(TENANT)  # the next restoration starts from the same place
    await settle()
    assert socket.events() == [("status", "epoch1-1"), ("status", "epoch1-2")]


async def test_a_multi_job_stream_keeps_watching_a_named_job_that_is_not_there(
    hub: Hub, backend: ScriptedBackend
) -> None:
    """docs/api.md, Event streams: named jobs that do not exist stay watched, outages included."""
    ghost = keys.job_channel("default", "ghost").encode()
    backend.epochs["default"] = "epoch1"
    backend.records["a"] = record("a", 1, seq=1)
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=False)
    backend.subscribed_now.update({JOB, ghost})
    await open_watch(hub, [JOB.decode(), ghost.decode()], watcher)
    watcher.release()
    backend.lose()
    backend.restore(JOB, ghost)
    await settle()
    assert not watcher.closed
    backend.publish(ghost, payload("ghost", 1, seq=2, status="queued", event="status"))
    assert ("status", "epoch1-2") in socket.events()


async def test_a_burst_in_one_read_fans_out_only_the_newest_of_each_job(
    hub: Hub, backend: ScriptedBackend
) -> None:
    """Issue 10, item 5: 3,000 updates in one burst went to 300 watchers one by one."""
    one, watcher = await stream(hub, backend, JOB)
    # It opened with the job queued, as a job stream does.
    watcher.mark_sent(Message.from_record(record("a", 1, seq=1, status="queued"), "snapshot"))
    tenant, _ = await stream(hub, backend, TENANT)
    other = keys.job_channel("default", "b").encode()
    conflated = STATS.hub_conflated
    batch = [(JOB, payload("a", 2, seq=2, status="running", event="status"))]
    batch += [(JOB, payload("a", v, seq=v)) for v in range(3, 100)]
    batch += [(TENANT, payload("a", v, seq=v)) for v in range(3, 50)]
    batch += [(TENANT, payload("b", 1, seq=100, status="queued", event="status"))]
    batch += [(TENANT, payload("a", 99, seq=101)), (other, payload("b", 1, seq=102))]
    work = backend.publish_batch(batch)
    # The job stream gets the newest, labelled status: the status moved since it last saw.
    assert one.events() == [("status", "epoch1-99")]
    # The tenant stream: the newest of each job, in the order of those (it had seen
    # nothing of "a", so the newest of "a" is just its progress).
    assert tenant.events() == [("status", "epoch1-100"), ("progress", "epoch1-101")]
    assert STATS.hub_conflated - conflated == 97 + 47  # the skipped ones, counted
    assert work == 3  # writes done for the read: what the backend weighs before reading on


async def test_status_changes_in_a_burst_keep_their_label_and_order_across_jobs(
    hub: Hub, backend: ScriptedBackend
) -> None:
    tenant, _ = await stream(hub, backend, TENANT)
    backend.publish_batch([
        (TENANT, payload("a", 1, seq=1, status="queued", event="status")),
        (TENANT, payload("b", 1, seq=2, status="queued", event="status")),
        (TENANT, payload("a", 2, seq=3, status="running", event="status")),
        (TENANT, payload("a", 3, seq=4, status="completed", event="status")),
    ])
    assert tenant.events() == [("status", "epoch1-2"), ("status", "epoch1-4")]
