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

from gateway.backend.base import Listener
from gateway.backend.subscriber import Publish, Subscriber
from gateway.backend.topology import Topology

log = logging.getLogger("gateway.backend")

# How often the slot map is read again: while some connection is down (a failover), and
# otherwise (a primary added, a slot moved with no watched channel on it).
_UNHEALTHY_REFRESH, _HEALTHY_REFRESH = 0.5, 10.0
# At most this often however many connections ask at once.
_MIN_REFRESH_GAP = 0.1
# A channel its node dropped waits this many reads of the slot map for another owner (the
# node asked may not have learnt of the move yet) before it is subscribed where the map
# says, whatever that is.
_DROPPED_TRIES = 10
# A slot map that cannot be read is said once per distinct error, and again this often.
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
        self._unhomed: set[bytes] = set()  # watched before the slot map was known
        # Channels a node ended of its own accord: (its URL, reads of the map since).
        self._dropped: dict[bytes, tuple[str, int]] = {}
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
                now = anyio.current_time()
                if str(exc) != said or now - said_at > _REPEAT_SECONDS:
                    log.warning("the cluster's slot map could not be read: %s; retrying", exc)
                    said, said_at = str(exc), now
            else:
                if said:
                    log.warning("the cluster's slot map is read again")
                    said = ""
                self._apply()
            await anyio.sleep(_MIN_REFRESH_GAP)
            settled = self._all_listening and not self._dropped
            with anyio.move_on_after(_HEALTHY_REFRESH if settled else _UNHEALTHY_REFRESH):
                await self._wake.wait()
            self._wake.clear()

    def _moved(self, channels: Collection[bytes]) -> None:
        """A connection's node stopped serving ``channels`` (it dropped them: no longer
        subscribed there), or none: the node cannot be reached."""
        for name in channels:
            home = self._home.pop(name, None)
            if home is not None:
                self._dropped[name] = (home.url, 0)
        if channels and self._listener is not None:
            self._listener.on_lost(channels)
        if self._wake is not None:
            self._wake.set()

    def _apply(self) -> None:
        topology, listener = self._topology, self._listener
        primaries = topology.primaries()
        for url in primaries:
            self._subscriber(url)
        moved: dict[Subscriber, list[bytes]] = {}
        for name, (url, tries) in list(self._dropped.items()):
            owner = topology.owner(name)
            if owner is None or (owner == url and tries < _DROPPED_TRIES):
                self._dropped[name] = (url, tries + 1)  # the map may not know yet
                continue
            del self._dropped[name]
            target = self._home[name] = self._subscriber(owner)
            moved.setdefault(target, []).append(name)
        for name in [*self._home, *self._unhomed]:
            owner = topology.owner(name)
            home = self._home.get(name)
            if owner is None or (home is not None and home.url == owner):
                continue
            target = self._subscriber(owner)
            if home is not None:
                home.forget((name,))
                moved.setdefault(target, []).append(name)
            else:
                self._unhomed.discard(name)
                target.subscribe((name,))
            self._home[name] = target
        if moved and listener is not None:
            names = [name for batch in moved.values() for name in batch]
            log.info("%d watched channels moved to other cluster nodes", len(names))
            listener.on_lost(names)
        for target, names in moved.items():
            target.subscribe(names, restore=True)
        for url, (subscriber, scope) in list(self._subscribers.items()):
            if url not in primaries and not subscriber.channels:
                scope.cancel()  # no longer a primary (failed over), and nothing left on it
                del self._subscribers[url]

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
        """The slot map is known and some primary's connection works. Not all of them:
        while one shard fails over, every gateway process is as cut off from it as the
        others, and a readiness check that failed on all of them would take the other
        shards' streams out of the load balancer too."""
        return not self._unhomed and any(
            subscriber.listening for subscriber, _ in self._subscribers.values())

    @property
    def _all_listening(self) -> bool:
        return bool(self._subscribers) and not self._unhomed and all(
            subscriber.listening for subscriber, _ in self._subscribers.values())

    def subscribe(self, names: Iterable[bytes]) -> None:
        batches: dict[Subscriber, list[bytes]] = {}
        for name in names:
            if name in self._home or name in self._unhomed or name in self._dropped:
                continue
            owner = self._topology.owner(name)
            if owner is None:
                self._unhomed.add(name)  # subscribed once the slot map is known
                if self._wake is not None:
                    self._wake.set()
                continue
            subscriber = self._home[name] = self._subscriber(owner)
            batches.setdefault(subscriber, []).append(name)
        for subscriber, batch in batches.items():
            subscriber.subscribe(batch)

    def unsubscribe(self, names: Iterable[bytes]) -> None:
        batches: dict[Subscriber, list[bytes]] = {}
        for name in names:
            self._unhomed.discard(name)
            self._dropped.pop(name, None)
            subscriber = self._home.pop(name, None)
            if subscriber is not None:
                batches.setdefault(subscriber, []).append(name)
        for subscriber, batch in batches.items():
            subscriber.unsubscribe(batch)

    def subscribed(self, channel: bytes) -> bool:
        subscriber = self._home.get(channel)
        return subscriber is not None and subscriber.subscribed(channel)
