"""The gateway's reads of Redis keys, the same on every topology.

Each method is a command or a few pipelined commands on the keys of one tenant (one hash
tag) or of the API keys (``{_auth}``), so that on a cluster each lands on one shard. The
backends give the path the commands take (``ReadPath``): one pipelined connection on a
single server (gateway.backend.reads), the slot's owner on a cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from gateway.backend.connection import Reply
from gateway.contract import keys
from gateway.contract.record import FIELDS, Record
from gateway.errors import BackendUnavailable

# Commands per write when reading many jobs at once.
_READ_BATCH = 500


class ReadPath(Protocol):
    async def request(self, *args: str | bytes) -> Reply:
        """One command; BackendUnavailable when Redis does not answer in time."""

    async def request_many(self, commands: list[tuple[str | bytes, ...]]) -> list[Reply]:
        """Several commands on the keys of one hash tag, their replies in order;
        BackendUnavailable as for one, or when Redis refused any of them."""


class Queries:
    def __init__(self, reads: ReadPath) -> None:
        self._reads = reads

    async def read(self, tenant: str, job_id: str) -> Record | None:
        values = await self._reads.request("HMGET", keys.job_key(tenant, job_id), *FIELDS)
        return Record.from_fields(job_id, values)

    async def read_many(self, tenant: str, job_ids: Sequence[str]) -> dict[str, Record | None]:
        found: dict[str, Record | None] = {}
        for start in range(0, len(job_ids), _READ_BATCH):
            batch = job_ids[start:start + _READ_BATCH]
            rows = await self._reads.request_many(
                [("HMGET", keys.job_key(tenant, job_id), *FIELDS) for job_id in batch])
            for job_id, values in zip(batch, rows, strict=True):
                found[job_id] = Record.from_fields(job_id, values)
        return found

    async def epoch(self, tenant: str) -> str | None:
        value = await self._reads.request("GET", keys.epoch_key(tenant))
        return value.decode() if isinstance(value, bytes) else None

    async def position(self, tenant: str) -> tuple[str, int] | None:
        epoch, seq = await self._reads.request_many(
            [("GET", keys.epoch_key(tenant)), ("GET", keys.seq_key(tenant))])
        if not isinstance(epoch, bytes):
            return None
        return epoch.decode(), int(seq or 0)

    async def index_seqs(self, tenant: str, job_ids: Sequence[str]) -> dict[str, int | None]:
        if not job_ids:
            return {}
        scores = await self._reads.request("ZMSCORE", keys.index_key(tenant), *job_ids)
        return {job_id: int(float(score)) if score is not None else None
                for job_id, score in zip(job_ids, scores, strict=True)}

    async def changed_since(self, tenant: str, seq: int) -> list[tuple[str, int]]:
        rows = await self._reads.request(
            "ZRANGE", keys.index_key(tenant), f"({seq}", "+inf", "BYSCORE", "WITHSCORES")
        return _scored(rows)

    async def newest_first(self, tenant: str, *, below: int, count: int) -> list[tuple[str, int]]:
        rows = await self._reads.request(
            "ZRANGE", keys.index_key(tenant), f"({below}", "-inf", "BYSCORE", "REV",
            "LIMIT", "0", str(count), "WITHSCORES")
        return _scored(rows)

    async def count_changed_since(self, tenant: str, seq: int) -> int:
        count: int = await self._reads.request("ZCOUNT", keys.index_key(tenant), f"({seq}", "+inf")
        return count

    async def count_active(self, tenant: str) -> int:
        count: int = await self._reads.request("ZCARD", keys.active_key(tenant))
        return count

    async def active(self, tenant: str) -> list[str]:
        rows = await self._reads.request("ZRANGE", keys.active_key(tenant), "0", "-1")
        return [job_id.decode() for job_id in rows]

    async def ping(self) -> bool:
        """Whether Redis answers requests now."""
        try:
            await self._reads.request("PING")
        except BackendUnavailable:
            return False
        return True

    # -- API keys -----------------------------------------------------------------------

    async def api_keys_version(self) -> bytes | None:
        version = await self._reads.request("GET", keys.api_keys_version_key())
        return version if isinstance(version, bytes) else None

    async def api_keys(self) -> dict[str, bytes]:
        rows = await self._reads.request("HGETALL", keys.api_keys_key())
        return {rows[i].decode(): rows[i + 1] for i in range(0, len(rows), 2)}

    async def token_secret(self, candidate: bytes) -> bytes:
        name = keys.token_secret_key()
        _, secret = await self._reads.request_many(
            [("SET", name, candidate, "NX"), ("GET", name)])
        assert isinstance(secret, bytes)
        return secret

    async def note_key_use(self, used: dict[str, str]) -> None:
        pairs = [part for key_id, at in used.items() for part in (key_id, at)]
        await self._reads.request("HSET", keys.api_keys_used_key(), *pairs)


def _scored(rows: list[bytes]) -> list[tuple[str, int]]:
    """(member, score) pairs of a WITHSCORES reply (RESP2: a flat list)."""
    return [(rows[i].decode(), int(float(rows[i + 1]))) for i in range(0, len(rows), 2)]
