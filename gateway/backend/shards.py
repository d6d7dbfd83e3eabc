"""The sharded subscriptions of a cluster: one pub/sub connection per primary.

docs/architecture.md, Cluster: every primary that serves slots gets a Subscriber of its
own (SSUBSCRIBE, with its own probe), and each watched channel is subscribed on the
primary that serves its slot. When a slot moves (the node ends the subscription with a
``sunsubscribe`` of its own, or refuses one as ``MOVED``) or a primary fails over (its
connection fails), the slot map is read again and the channels that moved are
subscribed on their new primary; the listener hears them lost and then restored, and
resyncs them as after any outage. Messages go from each connection to the listener
directly, as on one server.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection, Iterable

import anyio
import anyio.abc
from redis.crc import key_slot

from gateway.backend.base import Listener
from gateway.backend.subscriber import Publish, Subscriber
from gateway.backend.topology import Topology

log = logging.getLogger("gateway.backend")

# How often the slot map is read again: while something is unsettled (a connection down,
# a channel its node dropped), and otherwise (a primary added, a slot moved with no
# watched channel on it).
_UNSETTLED_REFRESH, _SETTLED_REFRESH = 0.5, 10.0
# At most this often however many connections ask at once.
_MIN_REFRESH_GAP = 0.1
# A channel its node dropped waits this many reads of the slot map for another owner (the
# node asked may not have learnt of the move yet) before it is subscribed where the map
# says, whatever that is.
_DROPPED_TRIES = 10
# A slot map that cannot be read is said once per kind of error, and again this often.
_REPEAT_SECONDS = 60.0


class Shards:
    def __init__(self, topology: Topology, *, connect_timeout: float, probe_seconds: float,
                 publish: Publish) -> None:
        self._topology = topology
        self._connect_timeout = connect_timeout
        self._probe_seconds = probe_seconds
        self._publish = publish
        self._listener: Listener | None = None
        self._tasks: anyio.abc.TaskGroup | None = None
        self._subscribers: dict[str, tuple[Subscriber, anyio.CancelScope]] = {}
        self._home: dict[bytes, Subscriber] = {}  # each watched channel's subscriber
        self._slots: dict[int, set[bytes]] = {}  # the channels in _home, by slot
        self._unhomed: set[bytes] = set()  # their slot served by no known primary
        # Channels a node ended of its own accord: (its URL, reads of the map since).
        self._dropped: dict[bytes, tuple[str, int]] = {}
        self._applied: tuple[str, ...] | None = None  # the slot map last applied
        self._formed = False  # a slot map that covered every slot was seen
        self._wake: asyncio.Event | None = None

    # -- lifetime -----------------------------------------------------------------------

    async def run(self, listener: Listener) -> None:
        """Keep every primary's connection up until cancelled."""
        self._listener = listener
        self._wake = asyncio.Event()
        try:
            async with anyio.create_task_group() as tg:
                self._tasks = tg
                await self._follow()
        finally:
            self._tasks = None

    async def _follow(self) -> None:
        """Read the slot map whenever asked (and now and then), and re-route."""
        assert self._wake is not None
        said, said_at = "", 0.0
        while True:
            try:
                with anyio.fail_after(self._connect_timeout):
                    await self._topology.refresh()
            except Exception as exc:  # no node answers: as an outage, retried
                # Once per kind: redis-py's text names the node it tried last, which varies.
                now, kind = anyio.current_time(), type(exc).__name__
                if kind != said or now - said_at > _REPEAT_SECONDS:
                    log.warning("the cluster's slot map could not be read: %s; retrying", exc)
                    said, said_at = kind, now
            else:
                if said:
                    log.warning("the cluster's slot map is read again")
                    said = ""
                self._apply()
            await anyio.sleep(_MIN_REFRESH_GAP)
            settled = (self._all_listening and not self._dropped and not self._unhomed
                       and self._topology.covered)
            with anyio.move_on_after(_SETTLED_REFRESH if settled else _UNSETTLED_REFRESH):
                await self._wake.wait()
            self._wake.clear()

    def _moved(self, channels: Collection[bytes]) -> None:
        """A connection's node stopped serving ``channels`` (it dropped them: no longer
        subscribed there), or none: the node cannot be reached."""
        for name in channels:
            home = self._unhome(name)
            if home is not None:
                self._dropped[name] = (home.url, 0)
        if channels and self._listener is not None:
            self._listener.on_lost(channels)
        if self._wake is not None:
            self._wake.set()

    def _apply(self) -> None:
        """Re-route what the slot map moved (only the slots whose owner changed are
        looked at channel by channel), and start or stop connections with the primaries."""
        topology = self._topology
        self._formed = self._formed or topology.covered
        signature = topology.signature()
        if signature == self._applied and not self._dropped and not self._unhomed:
            return
        self._applied = signature
        primaries = topology.primaries()
        for url in primaries:
            self._subscriber(url)
        moved: dict[Subscriber, list[bytes]] = {}
        for name, (url, tries) in list(self._dropped.items()):
            slot = key_slot(name)
            owner = topology.slot_owner(slot)
            if owner is None or (owner == url and tries < _DROPPED_TRIES):
                self._dropped[name] = (url, tries + 1)  # the map may not know yet
                continue
            del self._dropped[name]
            moved.setdefault(self._home_in(name, owner, slot), []).append(name)
        for slot, names in list(self._slots.items()):
            owner = topology.slot_owner(slot)
            if owner is None:
                continue
            for name in [n for n in names if self._home[n].url != owner]:
                home = self._unhome(name)
                assert home is not None
                home.forget((name,))
                moved.setdefault(self._home_in(name, owner, slot), []).append(name)
        for name in list(self._unhomed):
            slot = key_slot(name)
            owner = topology.slot_owner(slot)
            if owner is not None:
                self._unhomed.discard(name)
                self._home_in(name, owner, slot).subscribe((name,))
        if moved and self._listener is not None:
            lost = [name for batch in moved.values() for name in batch]
            log.info("%d watched channels moved to other cluster nodes", len(lost))
            self._listener.on_lost(lost)
        for target, batch in moved.items():
            target.subscribe(batch, restore=True)
        for url, (subscriber, scope) in list(self._subscribers.items()):
            if url not in primaries and not subscriber.channels:
                scope.cancel()  # no longer a primary (failed over), and nothing left on it
                del self._subscribers[url]

    def _home_in(self, name: bytes, url: str, slot: int) -> Subscriber:
        """Note ``url``'s subscriber as the home of ``name``, of ``slot`` (not subscribed
        here)."""
        subscriber = self._home[name] = self._subscriber(url)
        self._slots.setdefault(slot, set()).add(name)
        return subscriber

    def _unhome(self, name: bytes) -> Subscriber | None:
        home = self._home.pop(name, None)
        if home is not None:
            slot = key_slot(name)
            names = self._slots.get(slot)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._slots[slot]
        return home

    def _subscriber(self, url: str) -> Subscriber:
        found = self._subscribers.get(url)
        if found is not None:
            return found[0]
        subscriber = Subscriber(
            url, connect_timeout=self._connect_timeout, probe_seconds=self._probe_seconds,
            publish=self._publish, sharded=True, on_moved=self._moved,
            probe_channel=lambda: self._topology.probe_channel(url))
        scope = anyio.CancelScope()
        self._subscribers[url] = (subscriber, scope)
        if self._tasks is not None and self._listener is not None:
            self._tasks.start_soon(self._run_subscriber, subscriber, scope, self._listener)
        return subscriber

    @staticmethod
    async def _run_subscriber(subscriber: Subscriber, scope: anyio.CancelScope,
                              listener: Listener) -> None:
        with scope:
            await subscriber.run(listener)

    # -- channels -----------------------------------------------------------------------

    @property
    def listening(self) -> bool:
        """A slot map that covered every slot was seen (not a cluster still being formed,
        whose nodes each know their own slots only), and some primary's connection works.
        Not all of them: while one shard fails over (or has no primary at all), every
        gateway process is as cut off from it as the others, and a readiness check that
        failed on all of them would take the other shards' streams out of the load
        balancer too."""
        return self._formed and any(
            subscriber.listening for subscriber, _ in self._subscribers.values())

    @property
    def _all_listening(self) -> bool:
        return bool(self._subscribers) and all(
            subscriber.listening for subscriber, _ in self._subscribers.values())

    def subscribe(self, names: Iterable[bytes]) -> None:
        batches: dict[Subscriber, list[bytes]] = {}
        for name in names:
            if name in self._home or name in self._unhomed or name in self._dropped:
                continue
            slot = key_slot(name)  # once per channel: a stream opening runs this
            owner = self._topology.slot_owner(slot)
            if owner is None:
                self._unhomed.add(name)  # subscribed once a primary serves its slot
                if self._wake is not None:
                    self._wake.set()
                continue
            batches.setdefault(self._home_in(name, owner, slot), []).append(name)
        for subscriber, batch in batches.items():
            subscriber.subscribe(batch)

    def unsubscribe(self, names: Iterable[bytes]) -> None:
        batches: dict[Subscriber, list[bytes]] = {}
        for name in names:
            self._unhomed.discard(name)
            self._dropped.pop(name, None)
            subscriber = self._unhome(name)
            if subscriber is not None:
                batches.setdefault(subscriber, []).append(name)
        for subscriber, batch in batches.items():
            subscriber.unsubscribe(batch)

    def subscribed(self, channel: bytes) -> bool:
        subscriber = self._home.get(channel)
        return subscriber is not None and subscriber.subscribed(channel)
