"""One pub/sub connection that stays up: reconnects, resubscribes, and checks itself.

DESIGN.md section 5: one subscriber connection per gateway process (per shard, on a
cluster), shared by every stream. It subscribes what the fan-out asks for, tells which
subscriptions Redis confirmed, and after a loss reconnects with jittered backoff,
resubscribes everything and says which channels may have missed messages. A
self-publish probe finds a connection that stopped delivering without an error.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
from collections.abc import Awaitable, Callable, Iterable

import anyio

from gateway.backend.base import Listener
from gateway.backend.connection import RedisConnection, Reply
from gateway.observability.metrics import STATS

log = logging.getLogger("gateway.backend")

Publish = Callable[[bytes, bytes], Awaitable[object]]

# SUBSCRIBE/UNSUBSCRIBE take this many channels per command at most.
_BATCH = 1000


class Subscriber:
    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        probe_seconds: float,
        publish: Publish,
    ) -> None:
        self._url = url
        self._connect_timeout = connect_timeout
        self._probe_seconds = probe_seconds
        self._publish = publish
        self._listener: Listener | None = None
        # What the fan-out wants subscribed; resubscribed whole after a reconnect.
        self.channels: set[bytes] = set()
        # SUBSCRIBE/UNSUBSCRIBE commands sent per channel whose replies have not come yet.
        # A channel is subscribed once its count is back to zero: counting both kinds keeps
        # a late reply to an earlier SUBSCRIBE from confirming a later one too early.
        self._inflight: dict[bytes, int] = {}
        self._conn: RedisConnection | None = None
        # The connection publishes to a channel of its own and expects to hear it back.
        self._probe_channel = f"gw:probe:{secrets.token_hex(8)}".encode()
        self._probe_heard: asyncio.Event | None = None
        # After a reconnect: the channels resubscribed, told as restored once Redis has
        # processed every SUBSCRIBE before the PING that follows them.
        self._restoring: list[set[bytes]] = []
        self.reconnects = 0

    @property
    def listening(self) -> bool:
        return self._conn is not None

    def subscribed(self, channel: bytes) -> bool:
        return (self._conn is not None and channel in self.channels
                and channel not in self._inflight)

    # -- lifetime -----------------------------------------------------------------------

    async def run(self, listener: Listener) -> None:
        """Keep the connection up until cancelled; the caller's task group owns this."""
        self._listener = listener
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._probe_loop)
                await self._connection_loop(listener)
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    async def _connection_loop(self, listener: Listener) -> None:
        backoff = 0.05
        while True:
            try:
                with anyio.fail_after(self._connect_timeout):
                    conn = await RedisConnection.open(
                        self._url, self._on_reply, name=f"gateway-hub-{os.getpid()}")
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
            self._send(b"SUBSCRIBE", [self._probe_channel, *self.channels])
            if self.reconnects:
                self._restoring.append(set(self.channels))
                conn.send(b"PING")
            await conn.closed
            self._conn = None
            self._restoring.clear()
            self.reconnects += 1
            STATS.redis_reconnects += 1
            log.warning("pub/sub connection to Redis lost; reconnecting")
            listener.on_lost(self.channels)

    async def _probe_loop(self) -> None:
        while True:
            await anyio.sleep(self._probe_seconds)
            conn = self._conn
            if conn is None:
                continue
            self._probe_heard = heard = asyncio.Event()
            with anyio.move_on_after(self._connect_timeout):
                try:
                    await self._publish(self._probe_channel, b"probe")
                    await heard.wait()
                    continue
                except Exception as exc:
                    # Redis unreachable: the pub/sub connection may be as dead without
                    # knowing it (a cut network sends no FIN), so it is restarted too.
                    log.warning("pub/sub probe could not be published: %s", exc)
            if conn is self._conn:
                STATS.probe_failures += 1
                log.warning("pub/sub probe not heard back in %.1fs: reconnecting",
                            self._connect_timeout)
                conn.close()

    # -- channels -----------------------------------------------------------------------

    def subscribe(self, names: Iterable[bytes]) -> None:
        new = [name for name in names if name not in self.channels]
        self.channels.update(new)
        self._send(b"SUBSCRIBE", new)

    def unsubscribe(self, names: Iterable[bytes]) -> None:
        gone = [name for name in names if name in self.channels]
        self.channels.difference_update(gone)
        self._send(b"UNSUBSCRIBE", gone)

    def _send(self, command: bytes, names: list[bytes]) -> None:
        if self._conn is None or not names:
            return  # the connection loop subscribes every channel when it connects
        for start in range(0, len(names), _BATCH):
            batch = names[start:start + _BATCH]
            for name in batch:
                self._inflight[name] = self._inflight.get(name, 0) + 1
            self._conn.send(command, *batch)

    # -- replies ------------------------------------------------------------------------

    def _on_reply(self, reply: Reply) -> None:
        listener = self._listener
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
            elif listener is not None:
                listener.on_message(reply[1], reply[2])
        elif kind in (b"subscribe", b"unsubscribe"):
            self._confirmed(reply[1], listener)
        elif kind == b"pong" and self._restoring and listener is not None:
            listener.on_restored(self._restoring.pop(0))

    def _confirmed(self, name: bytes, listener: Listener | None) -> None:
        left = self._inflight.get(name, 0) - 1
        if left > 0:
            self._inflight[name] = left
            return
        self._inflight.pop(name, None)
        if listener is not None and name in self.channels:
            listener.on_subscribed(name)
