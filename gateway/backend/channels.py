"""The channel half of a Backend, the same on every topology: handed to what keeps the
pub/sub connections (one Subscriber on one server, Shards on a cluster)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Protocol

import anyio

from gateway.backend.base import Listener


class Connections(Protocol):
    """What keeps the pub/sub connections: gateway.backend.subscriber.Subscriber, or
    gateway.backend.shards.Shards."""

    async def run(self, listener: Listener) -> None: ...

    @property
    def listening(self) -> bool: ...

    def subscribe(self, names: Iterable[bytes]) -> None: ...

    def unsubscribe(self, names: Iterable[bytes]) -> None: ...

    def subscribed(self, channel: bytes) -> bool: ...


class Channels:
    """The Backend protocol's channel methods, on ``self._connections``."""

    _connections: Connections

    @asynccontextmanager
    async def listen(self, listener: Listener) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._connections.run, listener)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    @property
    def listening(self) -> bool:
        return self._connections.listening

    def subscribe(self, channels: Sequence[bytes]) -> None:
        self._connections.subscribe(channels)

    def unsubscribe(self, channels: Sequence[bytes]) -> None:
        self._connections.unsubscribe(channels)

    def subscribed(self, channel: bytes) -> bool:
        return self._connections.subscribed(channel)
