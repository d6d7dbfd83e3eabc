"""A backend the fan-out tests script by hand: no Redis, no emulation of one.

It records what the hub asks (subscribe, unsubscribe), answers reads from plain dicts,
and lets a test play the backend's side of the Listener protocol: confirm a
subscription, deliver a message, lose and restore channels.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

from gateway.backend.base import Listener
from gateway.contract.record import Record, Status
from gateway.contract.script import Change, Lifetimes
from gateway.errors import BackendUnavailable


def record(job_id: str, version: int, seq: int, status: str = "running", *,
           status_seq: int | None = None, epoch: str = "epoch1") -> Record:
    snapshot = b'{"job_id":"%s","status":"%s","version":%d}' % (
        job_id.encode(), status.encode(), version)
    return Record(job_id=job_id, snapshot=snapshot, version=version, seq=seq, epoch=epoch,
                  status=Status(status), status_seq=status_seq or seq, output_expires=None)


class ScriptedBackend:
    def __init__(self) -> None:
        self.listener: Listener | None = None
        self.listening = True
        self.subscribed_now: set[bytes] = set()
        self.calls: list[tuple[str, list[bytes]]] = []
        self.records: dict[str, Record] = {}  # by job id (one tenant)
        self.epochs: dict[str, str] = {}
        self.index: dict[str, int] = {}  # job id -> seq of its last change
        self.unavailable = False
        self.reads = 0

    # -- the backend's side of the Listener protocol, played by the test ---------------

    def confirm(self, *channels: bytes) -> None:
        assert self.listener is not None
        for channel in channels:
            self.subscribed_now.add(channel)
            self.listener.on_subscribed(channel)

    def publish(self, channel: bytes, payload: bytes) -> None:
        """A message that comes alone in its read."""
        self.publish_batch([(channel, payload)])

    def publish_batch(self, batch: list[tuple[bytes, bytes]]) -> int:
        """Messages that come in one read of the connection."""
        assert self.listener is not None
        return self.listener.on_messages(batch)

    def lose(self, *channels: bytes) -> None:
        """The connection of ``channels`` is lost (of every channel, when none are named:
        on a cluster each shard's connection is lost alone)."""
        assert self.listener is not None
        self.listening = False
        lost = set(channels or self.subscribed_now)
        self.subscribed_now.difference_update(lost)
        self.listener.on_lost(lost)

    def restore(self, *channels: bytes) -> None:
        assert self.listener is not None
        self.listening = True
        self.subscribed_now.update(channels)
        self.listener.on_restored(set(channels))

    # -- Backend ------------------------------------------------------------------------

    def _read(self) -> None:
        self.reads += 1
        if self.unavailable:
            raise BackendUnavailable("scripted outage")

    async def read(self, tenant: str, job_id: str) -> Record | None:
        self._read()
        return self.records.get(job_id)

    async def read_many(self, tenant: str, job_ids: Sequence[str]) -> dict[str, Record | None]:
        self._read()
        return {job_id: self.records.get(job_id) for job_id in job_ids}

    async def epoch(self, tenant: str) -> str | None:
        self._read()
        return self.epochs.get(tenant)

    async def position(self, tenant: str) -> tuple[str, int] | None:
        self._read()
        epoch = self.epochs.get(tenant)
        return None if epoch is None else (epoch, max(self.index.values(), default=0))

    async def index_seqs(self, tenant: str, job_ids: Sequence[str]) -> dict[str, int | None]:
        self._read()
        return {job_id: self.index.get(job_id) for job_id in job_ids}

    async def changed_since(self, tenant: str, seq: int) -> list[tuple[str, int]]:
        self._read()
        return sorted(((j, s) for j, s in self.index.items() if s > seq), key=lambda p: p[1])

    async def newest_first(self, tenant: str, *, below: int, count: int) -> list[tuple[str, int]]:
        self._read()
        return sorted(((j, s) for j, s in self.index.items() if s < below),
                      key=lambda p: -p[1])[:count]

    async def count_changed_since(self, tenant: str, seq: int) -> int:
        return len(await self.changed_since(tenant, seq))

    async def count_active(self, tenant: str) -> int:
        return len(await self.active(tenant))

    async def active(self, tenant: str) -> list[str]:
        self._read()
        return [j for j, r in sorted(self.records.items(), key=lambda p: p[1].seq)
                if not r.terminal]

    async def forget(self, tenant: str, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self.index.pop(job_id, None)

    async def ping(self) -> bool:
        return not self.unavailable

    async def change(self, op: str, job_id: str, payload: dict[str, Any], *, tenant: str,
                     lifetimes: Lifetimes) -> Change:
        raise NotImplementedError("the fan-out never writes")

    @asynccontextmanager
    async def listen(self, listener: Listener) -> AsyncIterator[None]:
        self.listener = listener
        try:
            yield
        finally:
            self.listener = None

    def subscribe(self, channels: Sequence[bytes]) -> None:
        self.calls.append(("subscribe", list(channels)))

    def unsubscribe(self, channels: Sequence[bytes]) -> None:
        self.calls.append(("unsubscribe", list(channels)))
        self.subscribed_now.difference_update(channels)

    def subscribed(self, channel: bytes) -> bool:
        return self.listening and channel in self.subscribed_now
