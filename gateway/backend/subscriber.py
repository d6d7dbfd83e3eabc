"""One pub/sub connection that stays up: reconnects, resubscribes, and checks itself.

docs/architecture.md: one subscriber connection per gateway process (per shard, on a
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
from collections.abc import Awaitable, Callable, Collection, Iterable
from urllib.parse import urlsplit

import anyio
from redis.crc import key_slot

from gateway.backend.base import Listener
from gateway.backend.connection import RedisConnection, Reply
from gateway.observability.metrics import STATS

log = logging.getLogger("gateway.backend")

Publish = Callable[[bytes, bytes], Awaitable[object]]
# Replies of a cluster node that mean a channel's slot is served elsewhere now.
_MOVED = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")

# SUBSCRIBE/UNSUBSCRIBE take this many channels per command at most.
_BATCH = 1000
# Writes to streams one read of messages may make before the connection lets the event
# loop run everything else that is ready (other requests, heartbeats) once.
_WRITES_PER_TURN = 5000
# Reconnect backoff: doubling from the first to the last, with jitter.
_FIRST_BACKOFF, _MAX_BACKOFF = 0.05, 5.0
# A Redis that stays unreachable is said once per backoff step; once the step stops
# growing, again only this often (with the count of attempts), not at every attempt.
_REPEAT_SECONDS = 60.0


async def _sleep(backoff: float) -> None:
    # Jitter spreads the reconnects of many gateway processes after an outage.
    await anyio.sleep(backoff * random.uniform(0.5, 1.5))


class Subscriber:
    def __init__(
        self,
        url: str,
        *,
        connect_timeout: float,
        probe_seconds: float,
        publish: Publish,
        sharded: bool = False,
        probe_channel: Callable[[], bytes | None] | None = None,
        on_moved: Callable[[Collection[bytes]], None] | None = None,
    ) -> None:
        """``sharded``: one node of a cluster, with SSUBSCRIBE and SPUBLISH; its probe
        channel, one of the node's slots, is picked by ``probe_channel`` at each connect
        (the slot may have moved meanwhile). ``on_moved`` is told the channels
        the node stopped serving (their slot moved, or the node refused them as moved),
        or none when the node cannot be reached: what to re-route."""
        self._url = url
        self._connect_timeout = connect_timeout
        self._probe_seconds = probe_seconds
        self._publish = publish
        self._listener: Listener | None = None
        self._messages: list[tuple[bytes, bytes]] = []  # of the read being handled
        # What the fan-out wants subscribed; resubscribed whole after a reconnect.
        self.channels: set[bytes] = set()
        # SUBSCRIBE/UNSUBSCRIBE commands sent per channel whose replies have not come yet.
        # A channel is subscribed once its count is back to zero: counting both kinds keeps
        # a late reply to an earlier SUBSCRIBE from confirming a later one too early.
        self._inflight: dict[bytes, int] = {}
        self._conn: RedisConnection | None = None
        # The connection publishes to a channel of its own and expects to hear it back.
        self._probe_channel = f"gw:probe:{secrets.token_hex(8)}".encode()
        self._pick_probe = probe_channel
        self._sharded = sharded
        # Which node a log line is about, on a cluster (its address, never credentials).
        parts = urlsplit(url)
        self._where = f" (node {parts.hostname}:{parts.port})" if sharded else ""
        self._commands = (b"SSUBSCRIBE", b"SUNSUBSCRIBE") if sharded else (
            b"SUBSCRIBE", b"UNSUBSCRIBE")
        self._message = b"smessage" if sharded else b"message"
        self._on_moved = on_moved
        # Channels subscribed in another connection's place (their slot moved here): told
        # as restored once confirmed, since messages may have been missed meanwhile.
        self._owed: set[bytes] = set()
        self._probe_heard: asyncio.Event | None = None
        # After a reconnect: the channels resubscribed, told as restored once Redis has
        # processed every SUBSCRIBE before the PING that follows them.
        self._restoring: list[set[bytes] | None] = []  # None: the first connection
        self._healthy = False
        # The error reply that made the current connection close, and the last reported.
        self._refusal: str | None = None
        self._reported: str | None = None
        self._refusals = 0
        self.reconnects = 0

    @property
    def url(self) -> str:
        return self._url

    @property
    def listening(self) -> bool:
        """Connected, and Redis has confirmed the subscriptions it was connected with."""
        return self._conn is not None and self._healthy

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
        backoff = _FIRST_BACKOFF
        failures, said, said_at = 0, ("", 0.0), 0.0
        while True:
            try:
                with anyio.fail_after(self._connect_timeout):
                    conn = await RedisConnection.open(
                        self._url, self._on_reply, name=f"gateway-hub-{os.getpid()}",
                        on_read=self._on_read)
            except (OSError, TimeoutError, ConnectionError) as exc:
                failures += 1
                if self._on_moved is not None:
                    self._on_moved(())  # a node that fails over: ask where its slots went
                now = asyncio.get_running_loop().time()
                if (str(exc), backoff) != said:
                    log.warning("pub/sub connection to Redis%s failed: %s; retrying in "
                                "%.2fs", self._where, exc, backoff)
                    said, said_at = (str(exc), backoff), now
                elif now - said_at >= _REPEAT_SECONDS:
                    log.warning("pub/sub connection to Redis%s still failing after %d "
                                "attempts: %s; retrying every %.2fs", self._where, failures,
                                exc, backoff)
                    said_at = now
                await _sleep(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)
                continue
            failures, said = 0, ("", 0.0)
            self._conn, self._healthy, self._refusal = conn, False, None
            self._inflight.clear()
            if self._pick_probe is not None:
                self._probe_channel = self._pick_probe() or self._probe_channel
            self._send(self._commands[0], [self._probe_channel, *self.channels])
            # Redis answers in order: the PONG comes once every SUBSCRIBE before it is done.
            owed, self._owed = self._owed & self.channels, set()
            self._restoring.append(set(self.channels) if self.reconnects else owed or None)
            conn.send(b"PING")
            await conn.closed
            healthy, refusal = self._healthy, self._refusal
            self._conn, self._healthy = None, False
            self._restoring.clear()
            self.reconnects += 1
            STATS.redis_reconnects += 1
            listener.on_lost(frozenset(self.channels))
            if self._on_moved is not None and (refusal is None or refusal.startswith(_MOVED)):
                self._on_moved(())
            if healthy:
                # A connection that worked: reconnect at once, from the first backoff.
                backoff = _FIRST_BACKOFF
                log.warning("pub/sub connection to Redis%s lost; reconnecting", self._where)
                if refusal is None:
                    continue
            # Refused before it ever worked, or refused again: an outage, not a blip.
            # Backing off keeps a refusal that repeats (an ACL without channel rights, a
            # cluster node that moves every channel away) from becoming a reconnect storm.
            if refusal is not None:
                self._report_refusal(refusal, backoff)
            await _sleep(backoff)
            backoff = min(backoff * 2, _MAX_BACKOFF)

    def _report_refusal(self, refusal: str, backoff: float) -> None:
        """Once per distinct reply while it repeats: the log says what to do about it."""
        self._refusals += 1
        if refusal == self._reported:
            return
        self._reported = refusal
        hint = ""
        if refusal.startswith("NOPERM"):
            hint = (" The Redis user needs the pub/sub commands and the gateway's channels:"
                    " `ACL SETUSER <user> +@pubsub &gw:*` (Redis 7 gives a new user no"
                    " channel at all: resetchannels).")
        elif self._sharded and refusal.startswith(_MOVED):
            log.warning("a cluster node refused a channel as moved (%s): re-routing", refusal)
            return
        elif refusal.startswith(("MOVED", "ASK", "CROSSSLOT")):
            hint = (" REDIS_URL names a node of a Redis Cluster: set"
                    " GATEWAY_REDIS_CLUSTER=true.")
        log.error("Redis%s refused a pub/sub command: %s.%s Retrying with backoff (from "
                  "%.2fs up to %.0fs); logged again only if the reply changes.",
                  self._where, refusal, hint, backoff, _MAX_BACKOFF)

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

    def subscribe(self, names: Iterable[bytes], *, restore: bool = False) -> None:
        """``restore``: the channels come from another connection, which lost them; they
        are told as restored once Redis confirmed them here."""
        new = [name for name in names if name not in self.channels]
        self.channels.update(new)
        self._send(self._commands[0], new)
        if restore and new:
            if self._conn is None:
                self._owed.update(new)  # the connection loop tells them once connected
            else:
                self._restoring.append(set(new))
                self._conn.send(b"PING")

    def unsubscribe(self, names: Iterable[bytes]) -> None:
        gone = [name for name in names if name in self.channels]
        self.channels.difference_update(gone)
        self._send(self._commands[1], gone)

    def forget(self, names: Iterable[bytes]) -> None:
        """Stop delivering channels the node no longer serves, without a command (the
        node would refuse it as moved). Messages it still sends for them reach the
        listener, which drops what its watchers already have."""
        self.channels.difference_update(names)
        self._owed.difference_update(names)

    def _send(self, command: bytes, names: list[bytes]) -> None:
        if self._conn is None or not names:
            return  # the connection loop subscribes every channel when it connects
        if self._sharded:
            # One SSUBSCRIBE takes the channels of one slot only (else CROSSSLOT).
            by_slot: dict[int, list[bytes]] = {}
            for name in names:
                by_slot.setdefault(key_slot(name), []).append(name)
            for same_slot in by_slot.values():
                for name in same_slot:
                    self._inflight[name] = self._inflight.get(name, 0) + 1
                self._conn.send(command, *same_slot)
            return
        for start in range(0, len(names), _BATCH):
            batch = names[start:start + _BATCH]
            for name in batch:
                self._inflight[name] = self._inflight.get(name, 0) + 1
            self._conn.send(command, *batch)

    # -- replies ------------------------------------------------------------------------

    def _on_reply(self, reply: Reply) -> None:
        # Called from data_received for every message: whatever happens here must not
        # break the reader, and a message takes the first branch.
        listener = self._listener
        try:
            if self._refusal is not None:
                return  # what follows a refusal on a closing connection counts for nothing
            if (type(reply) is list and reply[0] == self._message
                    and reply[1] != self._probe_channel):
                self._messages.append((reply[1], reply[2]))  # handed on at the read's end
                return
            self._on_other_reply(reply, listener)
        except Exception:
            log.exception("a pub/sub reply could not be handled: %.200r", reply)

    def _on_read(self) -> None:
        """The read's messages go to the listener together, so that it can skip all but
        the newest of each job (a burst); a read that made many writes lets the event loop
        run the rest before the next."""
        messages, listener, conn = self._messages, self._listener, self._conn
        if not messages:
            return
        self._messages = []
        if listener is None or self._refusal is not None:
            return
        try:
            writes = listener.on_messages(messages)
        except Exception:
            log.exception("pub/sub messages could not be handled")
            return
        if writes > _WRITES_PER_TURN and conn is not None:
            conn.pause_for_a_turn()

    def _on_other_reply(self, reply: Reply, listener: Listener | None) -> None:
        if isinstance(reply, Exception):
            if self._sharded and self._moved_slot(str(reply)):
                return
            # A refused SUBSCRIBE would leave channels silently unsubscribed: start over
            # (the connection loop reports it and backs off).
            if self._refusal is None:
                self._refusal = str(reply).strip()
            if self._conn is not None:
                self._conn.close()
            return
        kind = reply[0] if isinstance(reply, list) and reply else None
        if kind == self._message:  # the probe's
            if self._probe_heard is not None:
                self._probe_heard.set()
        elif kind in (b"subscribe", b"unsubscribe", b"ssubscribe"):
            self._confirmed(reply[1], listener)
        elif kind == b"sunsubscribe":
            if reply[1] in self._inflight:
                self._confirmed(reply[1], listener)
            else:
                self._dropped(reply[1])
        elif kind == b"pong" and self._restoring:
            restored = self._restoring.pop(0)
            if not self._healthy:
                self._healthy = True
                if self._reported is not None:
                    log.warning("pub/sub subscriptions work again, after %d failed "
                                "attempts", self._refusals)
                    self._reported, self._refusals = None, 0
            if restored is not None and listener is not None:
                # Not those that left meanwhile (moved to another node, unsubscribed).
                listener.on_restored(restored & self.channels)

    def _moved_slot(self, refusal: str) -> bool:
        """A cluster node refused an SSUBSCRIBE or SUNSUBSCRIBE as ``MOVED <slot> ...``
        (or ``ASK``): the channels of that slot in flight are not subscribed here, and
        go where the slot map sends them; the connection and its other channels stay.
        Whether the refusal was that."""
        parts = refusal.split()
        if len(parts) < 2 or parts[0] not in ("MOVED", "ASK") or not parts[1].isdigit():
            return False
        slot = int(parts[1])
        names = [name for name in self._inflight if key_slot(name) == slot]
        for name in names:
            del self._inflight[name]
        moved = [name for name in names if name in self.channels]
        self.channels.difference_update(moved)
        if moved and self._on_moved is not None:
            self._on_moved(moved)
        return True

    def _dropped(self, name: bytes) -> None:
        """A cluster node ended a subscription of its own accord: the channel's slot moved
        to another node (or the probe's did, and this connection starts over)."""
        if name == self._probe_channel:
            if self._conn is not None:
                self._conn.close()
        elif name in self.channels and self._on_moved is not None:
            self.channels.discard(name)  # no longer subscribed here
            self._on_moved((name,))

    def _confirmed(self, name: bytes, listener: Listener | None) -> None:
        left = self._inflight.get(name, 0) - 1
        if left > 0:
            self._inflight[name] = left
            return
        self._inflight.pop(name, None)
        if listener is not None and name in self.channels:
            listener.on_subscribed(name)
