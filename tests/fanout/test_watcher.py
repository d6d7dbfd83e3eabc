"""The watcher's write driver and conflation, with an ASGI ``send`` we hold back by hand.

No Redis here: this is the per-stream state machine alone. The stand-in ``send`` is an
async function like a server's, which waits on a future while "the socket is full".
"""

from __future__ import annotations

import pytest
from asgi_socket import Socket, settle

from gateway.contract.events import Message
from gateway.contract.frames import HEARTBEAT
from gateway.fanout.watcher import Watcher

pytestmark = pytest.mark.anyio


def message(job: str, version: int, seq: int, status: str = "running",
            event: str = "progress") -> Message:
    data = b'{"job_id":"%s","version":%d}' % (job.encode(), version)
    return Message(epoch="epoch1", seq=seq, event=event, version=version, status=status,
                   job_id=job, data=data)


async def test_writes_go_straight_through_when_the_socket_has_room() -> None:
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=True)
    watcher.release()
    for version in (2, 3, 4):
        watcher.deliver(message("a", version, seq=version))
    assert socket.events() == [("progress", "epoch1-2"), ("progress", "epoch1-3"),
                               ("progress", "epoch1-4")]
    watcher.deliver(message("a", 3, seq=3))  # older than what was sent: dropped
    assert len(socket.bodies) == 3


async def test_a_slow_client_holds_one_pending_message_per_job() -> None:
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=False)
    watcher.release()
    socket.fill()
    watcher.deliver(message("a", 1, seq=1))  # in flight, waiting for room
    for seq in range(2, 2002):
        watcher.deliver(message("a" if seq % 2 else "b", seq, seq=seq))
    assert len(watcher._pending) == 2  # one per job, however many came
    socket.drain()
    await settle()
    # The write in flight, then the newest of each job, in seq order.
    assert socket.events() == [("progress", "epoch1-1"), ("progress", "epoch1-2000"),
                               ("progress", "epoch1-2001")]


async def test_a_skipped_status_change_is_reported_as_status() -> None:
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=True)
    watcher.mark_sent(message("a", 1, seq=1, status="queued", event="snapshot"))
    watcher.release()
    socket.fill()
    watcher.deliver(message("a", 2, seq=2, status="queued"))
    watcher.deliver(message("a", 3, seq=3, status="running", event="status"))
    watcher.deliver(message("a", 4, seq=4, status="running"))  # replaces the status change
    socket.drain()
    await settle()
    assert socket.events() == [("progress", "epoch1-2"), ("status", "epoch1-4")]


async def test_the_terminal_message_ends_a_single_job_stream() -> None:
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=True)
    watcher.release()
    watcher.deliver(message("a", 2, seq=2, status="completed", event="status"))
    watcher.deliver(message("a", 3, seq=3))
    watcher.heartbeat()
    assert socket.more == [False] and watcher.closed


async def test_heartbeats_skip_a_stream_that_is_busy_writing() -> None:
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=False)
    watcher.release()
    watcher.heartbeat()
    assert socket.bodies == [HEARTBEAT]
    socket.fill()
    watcher.deliver(message("a", 1, seq=1))
    watcher.heartbeat()
    socket.drain()
    await settle()
    assert socket.bodies.count(HEARTBEAT) == 1


async def test_finish_writes_what_waits_then_ends() -> None:
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=False)
    watcher.release()
    socket.fill()
    watcher.deliver(message("a", 1, seq=1))
    watcher.deliver(message("b", 1, seq=2))
    watcher.finish(b"retry: 5000\n\n")
    socket.drain()
    await settle()
    assert socket.bodies[-1] == b"retry: 5000\n\n" and socket.more[-1] is False
    assert [e[1] for e in socket.events()] == ["epoch1-1", "epoch1-2"]
    assert watcher.closed


async def test_a_discarded_watcher_abandons_its_write() -> None:
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=False)
    watcher.release()
    socket.fill()
    watcher.deliver(message("a", 1, seq=1))
    watcher.discard()
    socket.drain()
    await settle()
    watcher.deliver(message("a", 2, seq=2))
    assert socket.bodies == []


async def test_a_new_epoch_ends_the_stream() -> None:
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=False)
    watcher.release()
    watcher.deliver(message("a", 5, seq=5))
    other = Message(epoch="epoch2", seq=1, event="status", version=1, status="queued",
                    job_id="a", data=b"{}")
    watcher.deliver(other)
    assert socket.more[-1] is False and watcher.closed
    assert b"epoch2" not in b"".join(socket.bodies)


async def test_a_deletion_found_gone_is_newer_than_what_the_client_saw() -> None:
    """A resync or a resume builds it without a version: the seq orders it."""
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=False)
    watcher.release()
    watcher.deliver(message("a", 3, seq=5))
    watcher.deliver(Message.deleted("epoch1", 4, "a", None))  # older than what was sent
    watcher.deliver(Message.deleted("epoch1", 9, "a", None))
    assert socket.events() == [("progress", "epoch1-5"), ("deleted", "epoch1-9")]


async def test_a_tenant_stream_keeps_little_per_job() -> None:
    """Issue 10, item 6: a tenant-wide stream kept every job's whole last message (10,000
    jobs: 22 MiB for one stream) and every ended job for ever."""
    import gc
    import tracemalloc

    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=False)
    watcher.release()
    padding = b"x" * 2000
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(10_000):
            data = b'{"job_id":"j%d","pad":"%s"}' % (n, padding)
            watcher.deliver(Message(epoch="epoch1", seq=n + 1, event="progress", version=2,
                                    status="running", job_id=f"j{n}", data=data))
            if n % 2:  # half of them end
                watcher.deliver(Message(epoch="epoch1", seq=n + 20_001, event="status",
                                        version=3, status="completed", job_id=f"j{n}",
                                        data=b"{}"))
        socket.bodies.clear()
        socket.more.clear()
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert held < 3 * 2**20, f"{held / 2**20:.1f} MiB held for 10,000 jobs"


async def test_ended_jobs_are_forgotten_past_a_bound() -> None:
    socket = Socket()
    watcher = Watcher(socket.send, close_on_terminal=False)
    watcher.release()
    for n in range(25_000):
        watcher.deliver(Message(epoch="epoch1", seq=n + 1, event="status", version=2,
                                status="failed", job_id=f"j{n}", data=b"{}"))
    assert len(watcher._ended) <= 10_000
    # The most recent ends are the ones kept: older news of those is still dropped.
    watcher.deliver(message("j24999", 1, seq=24_000))
    assert len(socket.bodies) == 25_000
