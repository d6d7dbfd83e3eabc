"""What the gateway asks of Redis, and what Redis tells it back.

The fan-out (gateway.fanout) and the endpoints (gateway.web) see Redis only through
these two protocols; the cluster issue adds an implementation without touching them.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from gateway.contract.record import Record
from gateway.contract.script import Change, Lifetimes


class Listener(Protocol):
    """Told about channels by the backend. Every call runs on the event loop, straight
    from a connection's ``data_received`` or its reconnect loop; none may block or raise."""

    def on_messages(self, batch: list[tuple[bytes, bytes]]) -> int:
        """The messages (channel, payload) of subscribed channels that came in one read of
        a connection, in order. Returns how many writes to streams they made: the backend
        lets the event loop run other work before it reads on when that was many."""

    def on_subscribed(self, channel: bytes) -> None:
        """Redis confirmed the subscription of ``channel``: nothing published on it from
        now on is missed (until ``on_lost``)."""

    def on_lost(self, channels: Collection[bytes]) -> None:
        """The connection of these channels is gone: what is published now is missed."""

    def on_restored(self, channels: Collection[bytes]) -> None:
        """These channels are subscribed again after a loss: anything may have been
        missed meanwhile."""


class Backend(Protocol):
    # -- reads: each bounded in time; BackendUnavailable when Redis does not answer ------

    async def read(self, tenant: str, job_id: str) -> Record | None:
        """One job; None when it does not exist."""

    async def read_many(self, tenant: str, job_ids: Sequence[str]) -> dict[str, Record | None]:
        """Several jobs, pipelined; None for each that does not exist."""

    async def epoch(self, tenant: str) -> str | None:
        """The tenant's epoch (None before its first change)."""

    async def position(self, tenant: str) -> tuple[str, int] | None:
        """(epoch, seq) of the tenant's last change (None before its first change)."""

    async def index_seqs(self, tenant: str, job_ids: Sequence[str]) -> dict[str, int | None]:
        """The seq of each job's last change in the tenant index (None: not in it)."""

    async def changed_since(self, tenant: str, seq: int) -> list[tuple[str, int]]:
        """(job id, seq of its last change) of every job changed after ``seq``, oldest first."""

    async def newest_first(self, tenant: str, *, below: int, count: int) -> list[tuple[str, int]]:
        """(job id, seq) of the jobs whose last change is below ``below``, newest first."""

    async def count_changed_since(self, tenant: str, seq: int) -> int:
        """How many jobs changed after ``seq``."""

    async def count_active(self, tenant: str) -> int:
        """How many of the tenant's jobs have not ended."""

    async def active(self, tenant: str) -> list[str]:
        """The tenant's jobs that have not ended, oldest change first."""

    async def forget(self, tenant: str, job_ids: Sequence[str]) -> None:
        """Take jobs whose records are gone out of the tenant's index and active set."""

    async def ping(self) -> bool:
        """Whether Redis answers requests now."""

    # -- API keys (gateway.auth.keyring) ------------------------------------------------

    async def api_keys_version(self) -> bytes | None:
        """The version of the API keys: it moves whenever one is created or revoked."""

    async def api_keys(self) -> dict[str, bytes]:
        """Every API key's record, by key id."""

    async def token_secret(self, candidate: bytes) -> bytes:
        """The secret that signs tokens: ``candidate`` if no gateway made one before."""

    async def note_key_use(self, used: dict[str, str]) -> None:
        """Write down when keys were last used (key id → RFC 3339 time)."""

    # -- the one write ----------------------------------------------------------------

    async def change(self, op: str, job_id: str, payload: dict[str, Any], *, tenant: str,
                     lifetimes: Lifetimes) -> Change:
        """Run the update script; a ChangeRefused subclass when it refuses."""

    # -- channels -----------------------------------------------------------------------

    def listen(self, listener: Listener) -> AbstractAsyncContextManager[None]:
        """Deliver to ``listener`` while the block runs (the pub/sub connections live
        exactly that long)."""

    @property
    def listening(self) -> bool:
        """Whether messages are delivered now (what /readyz tells): every pub/sub
        connection is up (on a cluster: some primary's is, see gateway.backend.shards)."""

    def subscribe(self, channels: Sequence[bytes]) -> None:
        """Start delivering ``channels``; ``on_subscribed`` follows for each."""

    def unsubscribe(self, channels: Sequence[bytes]) -> None:
        """Stop delivering ``channels``."""

    def subscribed(self, channel: bytes) -> bool:
        """Whether ``channel`` is subscribed and confirmed now (no command in flight)."""
