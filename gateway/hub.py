"""The hub: one pub/sub connection per gateway process, shared by every stream.

DESIGN.md section 5: a channel is subscribed when its first local watcher arrives and
unsubscribed when the last leaves; each message is parsed and encoded once, and the same
bytes are written to every watcher. One timer sends every idle stream its heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import anyio

from gateway.contract.events import Message
from gateway.errors import BackendUnavailable
from gateway.observability.metrics import STATS
from gateway.resp import RedisConnection, Reply, fail_at
from gateway.watcher import Watcher

log = logging.getLogger("gateway.hub")

Resync = Callable[["Hub", list[str]], Awaitable[bool]]
Publish = Callable[[str, bytes], Awaitable[object]]

# A gateway message is a snapshot of a few KiB; anything far larger is not one of ours.
MAX_MESSAGE_BYTES = 1 << 20


def _not_confirmed() -> BackendUnavailable:
    return BackendUnavailable("Redis did not confirm the subscription in time")


class _Channel:
    __slots__ = ("ready", "watchers")

    def __init__(self) -> None:
        self.watchers: set[Watcher] = set()
        # One future per stream waiting for the SUBSCRIBE confirmation (a shared one would
        # be cancelled for all when one waiter is), made only when someone waits, and
        # removed by its waiter whatever the outcome.
        self.ready: set[asyncio.Future[None]] = set()


class Hub:
    def __init__(
        self,
        redis_url: str,
        *,
        heartbeat_seconds: float,
        subscribe_timeout_seconds: float,
        send_timeout_seconds: float = 30.0,
        probe_seconds: float = 10.0,
        resync: Resync | None = None,
        publish: Publish | None = None,
        on_fanout: Callable[[float], None] | None = None,
    ) -> None:
        self._url = redis_url
        self._heartbeat_seconds = heartbeat_seconds
        self._subscribe_timeout = subscribe_timeout_seconds
        self._send_timeout = send_timeout_seconds
        self._probe_seconds = probe_seconds
        self._resync = resync
        self._publish = publish
        self._on_fanout = on_fanout
        # The hub publishes to a channel of its own and expects to hear it back: a pub/sub
        # connection that stopped delivering without an error is found and restarted.
        self._probe_channel = f"gw:probe:{secrets.token_hex(8)}".encode()
        self._probe_heard: asyncio.Event | None = None
        # The seq of the last message per channel: after a reconnect, a tenant channel's
        # watchers get again every job changed since (see app.resync).
        self.last_seq: dict[str, tuple[str, int]] = {}
        self.open_streams: dict[str, int] = {}
        self._channels: dict[bytes, _Channel] = {}
        # SUBSCRIBE/UNSUBSCRIBE commands sent per channel whose replies have not come yet.
        # A channel is subscribed once its count is back to zero: counting both kinds keeps
        # a late reply to an earlier SUBSCRIBE from confirming a later one too early.
        self._inflight: dict[bytes, int] = {}
        self._watchers: set[Watcher] = set()
        self._conn: RedisConnection | None = None
        self._bad_channels: set[bytes] = set()
        self.reconnects = 0
        self.connected = anyio.Event()
        # Made in Hub.running (on the loop it serves); kept because each lookup of the
        # running loop is a getpid() system call on Python 3.11.
        self._loop = asyncio.get_running_loop()

    # -- lifetime -----------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def running(cls, redis_url: str, **options: Any) -> AsyncIterator[Hub]:
        hub = cls(redis_url, **options)
        async with anyio.create_task_group() as tg:
            tg.start_soon(hub._connection_loop)
            tg.start_soon(hub._timer_loop)
            if hub._publish is not None:
                tg.start_soon(hub._probe_loop)
            try:
                yield hub
            finally:
                hub.finish_all(bytes)
                tg.cancel_scope.cancel()
                if hub._conn is not None:
                    hub._conn.close()

    async def _connection_loop(self) -> None:
        backoff = 0.05
        while True:
            try:
                with anyio.fail_after(self._subscribe_timeout):
                    conn = await RedisConnection.open(self._url, self._on_reply)
            except (OSError, TimeoutError, ConnectionError) as exc:
                log.warning("pub/sub connection to Redis failed: %s; retrying in %.2fs",
                            exc, backoff)
                # Jitter spreads the reconnects of many gateway processes after an outage.
                await anyio.sleep(backoff * random.uniform(0.5, 1.5))
                backoff = min(backoff * 2, 5.0)
                continue
            backoff = 0.05
            self._conn = conn
            self._inflight.clear()
            self._subscribe([self._probe_channel, *self._channels])
            self.connected.set()
            if self.reconnects and self._resync is not None:
                await self._resync_until_done(conn)
            await conn.closed
            self._conn = None
            self.connected = anyio.Event()
            self.reconnects += 1
            STATS.redis_reconnects += 1
            log.warning("pub/sub connection to Redis lost; reconnecting")

    async def _resync_until_done(self, conn: RedisConnection) -> None:
        """Re-read what the watchers may have missed, retrying while the store is not
        back yet (its pooled connections died with the server too)."""
        assert self._resync is not None
        delay = 0.05
        while conn is self._conn:
            with anyio.move_on_after(self._subscribe_timeout * 2):
                if await self._resync(self, [c.decode() for c in self._channels]):
                    return
            await anyio.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def _timer_loop(self) -> None:
        """One timer for every stream: heartbeats, and the send timeout of slow clients."""
        loop = asyncio.get_running_loop()
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
                elif beat:
                    watcher.heartbeat()

    async def _probe_loop(self) -> None:
        assert self._publish is not None
        while True:
            await anyio.sleep(self._probe_seconds)
            conn = self._conn
            if conn is None:
                continue
            self._probe_heard = heard = asyncio.Event()
            with anyio.move_on_after(self._subscribe_timeout):
                try:
                    await self._publish(self._probe_channel.decode(), b"probe")
                    await heard.wait()
                    continue
                except Exception as exc:
                    # Redis unreachable: the pub/sub connection may be as dead without
                    # knowing it (a cut network sends no FIN), so it is restarted too.
                    log.warning("pub/sub probe could not be published: %s", exc)
            if conn is self._conn:
                STATS.probe_failures += 1
                log.warning("pub/sub probe not heard back in %.1fs: reconnecting",
                            self._subscribe_timeout)
                conn.close()

    # -- watchers -----------------------------------------------------------------------

    @asynccontextmanager
    async def watch(
        self, channels: Iterable[str], watcher: Watcher, kind: str = "job"
    ) -> AsyncIterator[None]:
        """Deliver the messages of ``channels`` to ``watcher`` while the block runs.

        Returns once every channel is subscribed (confirmed by Redis), so that a snapshot
        read afterwards misses nothing; raises BackendUnavailable if that takes too long.
        """
        names = [c.encode() for c in channels]
        new: list[bytes] = []
        for name in names:
            channel = self._channels.get(name)
            if channel is None:
                channel = self._channels[name] = _Channel()
                new.append(name)
            channel.watchers.add(watcher)
        self._watchers.add(watcher)
        self.open_streams[kind] = self.open_streams.get(kind, 0) + 1
        try:
            self._subscribe(new)
            await self._until_subscribed(names)
            yield
        finally:
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
            self._unsubscribe(gone)

    async def _until_subscribed(self, names: list[bytes]) -> None:
        # Futures failed by a timer (resp.fail_at), not a cancel scope: this runs for
        # every stream that opens.
        loop = self._loop
        deadline = loop.time() + self._subscribe_timeout
        for name in names:
            if self._conn is not None and name not in self._inflight:
                continue
            confirmed: asyncio.Future[None] = loop.create_future()
            ready = self._channels[name].ready
            ready.add(confirmed)
            timer = fail_at(loop, confirmed, deadline, _not_confirmed)
            try:
                await confirmed
            finally:
                timer.cancel()
                ready.discard(confirmed)  # a failed wait must not keep the stream alive

    def _subscribe(self, names: list[bytes]) -> None:
        self._command(b"SUBSCRIBE", names)

    def _unsubscribe(self, names: list[bytes]) -> None:
        self._command(b"UNSUBSCRIBE", names)

    def _command(self, command: bytes, names: list[bytes]) -> None:
        if self._conn is None or not names:
            return  # the connection loop subscribes every channel when it connects
        for start in range(0, len(names), 1000):
            batch = names[start:start + 1000]
            for name in batch:
                self._inflight[name] = self._inflight.get(name, 0) + 1
            self._conn.send(command, *batch)

    # -- messages -----------------------------------------------------------------------

    def _on_reply(self, reply: Reply) -> None:
        if isinstance(reply, Exception):
            # A refused SUBSCRIBE would leave channels silently unsubscribed: start over.
            log.warning("Redis refused a pub/sub command (%s): reconnecting", reply)
            if self._conn is not None:
                self._conn.close()
            return
        kind = reply[0] if isinstance(reply, list) and reply else None
        if kind == b"message":
            if reply[1] == self._probe_channel:
                if self._probe_heard is not None:
                    self._probe_heard.set()
            else:
                self.dispatch(reply[1], reply[2])
        elif kind in (b"subscribe", b"unsubscribe"):
            self._confirmed(reply[1])

    def _confirmed(self, name: bytes) -> None:
        left = self._inflight.get(name, 0) - 1
        if left > 0:
            self._inflight[name] = left
            return
        self._inflight.pop(name, None)
        channel = self._channels.get(name)
        if channel is not None and channel.ready:
            for confirmed in channel.ready:
                if not confirmed.done():
                    confirmed.set_result(None)

    def dispatch(self, name: bytes, payload: bytes | Message) -> None:
        channel = self._channels.get(name)
        if channel is None:
            return
        if isinstance(payload, Message):
            message = payload
        else:
            try:
                if len(payload) > MAX_MESSAGE_BYTES:
                    raise ValueError("oversize")
                message = Message.parse(payload)
            except ValueError:
                self._bad_message(name, payload)
                return
        self.last_seq[name.decode()] = (message.epoch, message.seq)
        for watcher in channel.watchers:
            watcher.deliver(message)
        if self._on_fanout is not None and message.published_us:
            self._on_fanout(time.time() - message.published_us / 1e6)

    def _bad_message(self, name: bytes, payload: bytes) -> None:
        STATS.bad_messages += 1
        if name not in self._bad_channels:  # logged once per channel, then only counted
            self._bad_channels.add(name)
            log.warning("dropped a malformed message on %s (%d bytes)",
                        name.decode(errors="replace"), len(payload))

    def finish_channel(self, name: str) -> None:
        """End the streams of one channel (its job is gone)."""
        channel = self._channels.get(name.encode())
        for watcher in list(channel.watchers if channel else ()):
            watcher.finish()

    # -- shutdown -----------------------------------------------------------------------

    def finish_all(self, last_frame: Callable[[], bytes]) -> None:
        """End every open stream after what is pending, with ``last_frame()`` last."""
        for watcher in list(self._watchers):
            watcher.finish(last_frame())

    @property
    def channel_count(self) -> int:
        return len(self._channels)

    @property
    def watcher_count(self) -> int:
        return len(self._watchers)
