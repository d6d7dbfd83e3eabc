"""The hub: which streams watch which channels, and the fan-out of every message to them.

docs/architecture.md: a channel is subscribed when its first local watcher arrives and
unsubscribed when the last leaves; each message is parsed and encoded once, and the same
bytes are written to every watcher. One timer drives every stream's heartbeat and send
timeout. The hub knows channels and watchers, never sockets: Redis is behind the backend
(gateway.backend), HTTP behind each watcher's ASGI ``send`` (or the server's
``gateway.direct_write``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable, Collection, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc

from gateway.backend.base import Backend
from gateway.contract import keys
from gateway.contract.events import Message
from gateway.errors import BackendUnavailable
from gateway.fanout import resync
from gateway.fanout.watcher import Watcher
from gateway.observability.metrics import STATS
from gateway.timers import fail_at

log = logging.getLogger("gateway.hub")

# A gateway message is a snapshot of a few KiB; anything far larger is not one of ours.
MAX_MESSAGE_BYTES = 1 << 20


def _not_confirmed() -> BackendUnavailable:
    return BackendUnavailable("Redis did not confirm the subscription in time")


class Channel:
    """One watched channel: its watchers, the streams waiting for its subscription, and
    the position of its last message (what a resync of a tenant channel starts from)."""

    __slots__ = ("job_id", "last", "losses", "lost_at", "ready", "resync_owed", "watchers")

    def __init__(self, name: bytes) -> None:
        # The job of a job channel: a message about another job on it is not ours.
        self.job_id = keys.job_of_channel(name)
        self.watchers: set[Watcher] = set()
        # One future per stream waiting for the SUBSCRIBE confirmation (a shared one would
        # be cancelled for all when one waiter is), made only when someone waits, and
        # removed by its waiter whatever the outcome; the set only while someone waits.
        self.ready: set[asyncio.Future[None]] | None = None
        self.last: tuple[str, int] | None = None  # (epoch, seq)
        # Where the channel stood when its connection was lost, kept until a resync of it
        # completes: what came after it (dispatches included) cannot move that start.
        self.resync_owed = False
        self.lost_at: tuple[str, int] | None = None
        # Bumped on every loss of the channel: a resync that began before stops for it.
        self.losses = 0


class Watching:
    """The block of ``Hub.watch``: an object with four slots, not a generator's suspended
    frame, since one is held for the whole life of every open stream."""

    __slots__ = ("_hub", "_kind", "_names", "_watcher")

    def __init__(self, hub: Hub, names: list[bytes], watcher: Watcher, kind: str) -> None:
        self._hub, self._names, self._watcher, self._kind = hub, names, watcher, kind

    async def __aenter__(self) -> None:
        await self._hub._enter(self._names, self._watcher, self._kind)

    async def __aexit__(self, *exc_info: object) -> None:
        self._hub._leave(self._names, self._watcher, self._kind)


class Hub:
    def __init__(
        self,
        backend: Backend,
        *,
        heartbeat_seconds: float,
        subscribe_timeout_seconds: float,
        send_timeout_seconds: float = 30.0,
        on_fanout: Callable[[float], None] | None = None,
        end_frame: Callable[[], bytes] = bytes,
    ) -> None:
        self.backend = backend
        self._heartbeat_seconds = heartbeat_seconds
        self._subscribe_timeout = subscribe_timeout_seconds
        self._send_timeout = send_timeout_seconds
        self._on_fanout = on_fanout
        self._end_frame = end_frame  # the last frame of a stream the server ends
        self.open_streams: dict[str, int] = {}
        self._channels: dict[bytes, Channel] = {}
        self._watchers: set[Watcher] = set()
        self._bad_channels: set[bytes] = set()
        self._tasks: anyio.abc.TaskGroup | None = None
        # Made in Hub.running (on the loop it serves): gateway.timers says why it is kept.
        self._loop = asyncio.get_running_loop()

    # -- lifetime -----------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def running(cls, backend: Backend, **options: Any) -> AsyncIterator[Hub]:
        hub = cls(backend, **options)
        async with anyio.create_task_group() as tg, backend.listen(hub):
            hub._tasks = tg
            tg.start_soon(hub._timer_loop)
            try:
                yield hub
            finally:
                hub.finish_all()
                tg.cancel_scope.cancel()

    async def _timer_loop(self) -> None:
        """One timer for every stream: heartbeats, the send timeout of slow clients, and
        the end of streams whose time is up (an age limit, a token's expiry)."""
        loop = self._loop
        tick = min(1.0, self._heartbeat_seconds)
        next_heartbeat = loop.time() + self._heartbeat_seconds
        while True:
            await anyio.sleep(tick)
            now = loop.time()
            beat = now >= next_heartbeat
            if beat:
                next_heartbeat = now + self._heartbeat_seconds
            for watcher in list(self._watchers):
                since = watcher.waiting_since
                if since is not None and now - since > self._send_timeout:
                    log.warning("a stream's client took no data for %.0fs: disconnected",
                                now - since)
                    watcher.abort()
                elif watcher.ends_at is not None and now >= watcher.ends_at:
                    watcher.ends_at = None
                    watcher.finish(self._end_frame())
                elif beat:
                    watcher.heartbeat()

    # -- watchers -----------------------------------------------------------------------

    def watch(self, channels: Iterable[str], watcher: Watcher, kind: str = "job") -> Watching:
        """Deliver the messages of ``channels`` to ``watcher`` while the block runs.

        Entering returns once every channel is subscribed (confirmed by Redis), so that a
        snapshot read afterwards misses nothing; it raises BackendUnavailable if that takes
        too long.
        """
        return Watching(self, [c.encode() for c in channels], watcher, kind)

    async def _enter(self, names: list[bytes], watcher: Watcher, kind: str) -> None:
        new: list[bytes] = []
        for name in names:
            channel = self._channels.get(name)
            if channel is None:
                channel = self._channels[name] = Channel(name)
                new.append(name)
            channel.watchers.add(watcher)
        self._watchers.add(watcher)
        self.open_streams[kind] = self.open_streams.get(kind, 0) + 1
        try:
            if new:
                self.backend.subscribe(new)
            await self._until_subscribed(names)
        except BaseException:
            self._leave(names, watcher, kind)
            raise

    def _leave(self, names: list[bytes], watcher: Watcher, kind: str) -> None:
        self._watchers.discard(watcher)
        self.open_streams[kind] -= 1
        gone: list[bytes] = []
        for name in names:
            channel = self._channels.get(name)
            if channel is None:
                continue
            channel.watchers.discard(watcher)
            if not channel.watchers:
                del self._channels[name]
                gone.append(name)
        if gone:
            self.backend.unsubscribe(gone)

    async def _until_subscribed(self, names: list[bytes]) -> None:
        # Futures failed by a timer (gateway.timers), not a cancel scope: this runs for
        # every stream that opens.
        loop = self._loop
        deadline = loop.time() + self._subscribe_timeout
        subscribed = self.backend.subscribed
        for name in names:
            if subscribed(name):
                continue
            confirmed: asyncio.Future[None] = loop.create_future()
            channel = self._channels[name]
            ready = channel.ready
            if ready is None:
                ready = channel.ready = set()
            ready.add(confirmed)
            timer = fail_at(loop, confirmed, deadline, _not_confirmed)
            try:
                await confirmed
            finally:
                timer.cancel()
                ready.discard(confirmed)  # a failed wait must not keep the stream alive
                if not ready and channel.ready is ready:
                    channel.ready = None  # not kept for the stream's whole life

    # -- told by the backend (gateway.backend.base.Listener) ----------------------------

    def on_messages(self, batch: list[tuple[bytes, bytes]]) -> int:
        """Fan out the messages of one read: of several messages of one job on a channel,
        only the newest (a burst: intermediate progress may be skipped, docs/api.md,
        Event streams, and a watcher labels it `status` when the status moved since it last
        wrote). Returns the writes made."""
        if len(batch) == 1:
            name, payload = batch[0]
            watched = self._channels.get(name)
            if watched is None:
                return 0
            message = self._parse(watched, name, payload)
            return 0 if message is None else self._fan_out(watched, message)
        newest: dict[tuple[bytes, str], tuple[Channel, Message]] = {}
        for name, payload in batch:
            watched = self._channels.get(name)
            if watched is None:
                continue
            message = self._parse(watched, name, payload)
            if message is None:
                continue
            key = (name, message.job_id)
            kept = newest.pop(key, None)
            if kept is not None:
                STATS.hub_conflated += 1
                if kept[1].seq > message.seq:
                    message = kept[1]
            newest[key] = (watched, message)  # at the end: the order of the newest ones
        return sum(self._fan_out(watched, message) for watched, message in newest.values())

    def _parse(self, watched: Channel, name: bytes, payload: bytes) -> Message | None:
        try:
            if len(payload) > MAX_MESSAGE_BYTES:
                raise ValueError("oversize")
            message = Message.parse(payload)
            if watched.job_id is not None and message.job_id != watched.job_id:
                raise ValueError("another job's message")
        except ValueError:
            self._bad_message(name, payload)
            return None
        return message

    def on_subscribed(self, channel: bytes) -> None:
        watched = self._channels.get(channel)
        if watched is not None and watched.ready:
            for confirmed in watched.ready:
                if not confirmed.done():
                    confirmed.set_result(None)

    def on_lost(self, channels: Collection[bytes]) -> None:
        # A resync of these channels still running belongs to the lost connection: it
        # stops for them at its next step (resync.Stale), and their next restoration starts
        # from the positions noted here. Other channels (another shard's connection, on a
        # cluster) go on.
        for name in channels:
            channel = self._channels.get(name)
            if channel is not None:
                channel.losses += 1
                if not channel.resync_owed:
                    # (An earlier loss whose resync did not finish keeps its earlier start.)
                    channel.resync_owed, channel.lost_at = True, channel.last

    def on_restored(self, channels: Collection[bytes]) -> None:
        """Re-read what the watchers of ``channels`` may have missed (docs/architecture.md)."""
        if self._tasks is not None:
            # Noted now: a loss before the task runs already makes it stale.
            self._tasks.start_soon(self._resync_until_done, self._losses(channels))

    async def _resync_until_done(self, marks: dict[bytes, tuple[Channel, int]]) -> None:
        """Retry while the reads are not back yet (they died with the server too); leave
        out each channel whose connection is lost in turn (its next restoration resyncs
        it), and stop when none is left."""
        delay = 0.05

        def current() -> bool:
            return all((channel.losses == losses) for channel, losses in marks.values())

        while True:
            marks = {name: (channel, losses) for name, (channel, losses) in marks.items()
                     if channel.losses == losses}
            if not marks:
                return
            with anyio.move_on_after(self._subscribe_timeout * 2):
                try:
                    watched = [name for name in marks if name in self._channels]
                    await resync.resync(self, watched, current)
                    for channel, _ in marks.values():
                        channel.resync_owed = False
                    return
                except resync.Stale:
                    continue  # at once, for the others (watchers drop what they have)
                except BackendUnavailable:
                    pass
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)

    def _losses(self, names: Collection[bytes]) -> dict[bytes, tuple[Channel, int]]:
        """Each watched channel of ``names`` with its loss count now."""
        found = {}
        for name in names:
            channel = self._channels.get(name)
            if channel is not None:
                found[name] = (channel, channel.losses)
        return found

    # -- fan-out ------------------------------------------------------------------------

    def dispatch(self, name: bytes, message: Message) -> None:
        """Deliver ``message`` to the watchers of channel ``name`` (a resync's messages)."""
        channel = self._channels.get(name)
        if channel is not None:
            self._fan_out(channel, message)

    def _fan_out(self, channel: Channel, message: Message) -> int:
        channel.last = (message.epoch, message.seq)
        for watcher in channel.watchers:
            try:
                watcher.deliver(message)
            except Exception:
                # One stream's failure is its own: the others get the message, and the
                # pub/sub connection that is calling this never sees it.
                log.exception("a stream failed to take a message: it is closed")
                watcher.abort()
        if self._on_fanout is not None and message.published_us:
            self._on_fanout(time.time() - message.published_us / 1e6)
        return len(channel.watchers)

    def opened(self, name: bytes, position: tuple[str, int]) -> None:
        """A stream of ``name`` opened with what Redis held at ``position`` (its read came
        after the subscription was confirmed): a resync of the channel starts there at the
        latest, even if no message came on it before its connection was lost."""
        channel = self._channels.get(name)
        if channel is None:
            return
        last = channel.last
        if last is None or (last[0] == position[0] and position[1] < last[1]):
            channel.last = position

    def last_position(self, name: bytes) -> tuple[str, int] | None:
        """(epoch, seq) of the last message dispatched on a watched channel."""
        channel = self._channels.get(name)
        return channel.last if channel is not None else None

    def resync_position(self, name: bytes) -> tuple[str, int] | None:
        """Where a resync of channel ``name`` starts: where it stood when it was lost."""
        channel = self._channels.get(name)
        if channel is None:
            return None
        return channel.lost_at if channel.resync_owed else channel.last

    def _bad_message(self, name: bytes, payload: bytes) -> None:
        STATS.bad_messages += 1
        if name not in self._bad_channels:  # logged once per channel, then only counted
            self._bad_channels.add(name)
            log.warning("dropped a malformed message on %s (%d bytes)",
                        name.decode(errors="replace"), len(payload))

    def finish_channel(self, name: bytes, *, single_job_only: bool = False) -> None:
        """End the streams of one channel (its job is gone); with ``single_job_only``,
        the single-job streams (a multi-job stream keeps watching a job that is not there:
        it shows up if it is created later)."""
        channel = self._channels.get(name)
        for watcher in list(channel.watchers if channel else ()):
            if watcher.close_on_terminal or not single_job_only:
                watcher.finish()

    def end_streams(self, owners: Collection[str] | None = None) -> None:
        """End every open stream (a shutdown), or those opened by any of ``owners``
        (revoked credentials), after what is pending, each with the end frame: its client
        comes back later, and is asked for a credential again."""
        for watcher in list(self._watchers):
            if owners is None or watcher.owner in owners:
                watcher.finish(self._end_frame())

    def finish_all(self) -> None:
        """End every open stream after what is pending (the hub is closing)."""
        for watcher in list(self._watchers):
            watcher.finish()

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop the hub serves (a watcher finds its task on it)."""
        return self._loop

    def now(self) -> float:
        """The event loop's time, which ``Watcher.ends_at`` is in (kept, not looked up:
        gateway.timers says why)."""
        return self._loop.time()

    # -- gauges -------------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        return self.backend.listening

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)
