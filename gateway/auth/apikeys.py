"""API keys: their shape, their hash, and their records in Redis (docs/api.md, Auth).

A key is ``gwk_<key id>_<secret>``: the id (12 hex digits) finds the record, the secret
(32 random bytes) proves the caller holds the key. Redis keeps the SHA-256 of the whole
key, never the key: a hash that cannot be reversed, and a plain one is enough because the
secret is 256 random bits. Slow, salted hashes (bcrypt, argon2) protect passwords people
choose, which can be guessed; nothing guesses 2**256, and a fast hash keeps verifying a
key cheap.

The management commands (``gateway keys``) use these functions with a redis-py client, as
the worker library does; the gateway reads the same records through its backend
(gateway.auth.keyring).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, replace
from typing import Any

import redis

from gateway.auth.principal import Scope
from gateway.contract import keys
from gateway.contract.record import rfc3339

PREFIX = "gwk_"
_KEY = re.compile(r"gwk_([0-9a-f]{12})_[A-Za-z0-9_-]{43}")


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The id of a well-formed key; None for anything else."""
    match = _KEY.fullmatch(key)
    return match[1] if match else None


def _now() -> str:
    """RFC 3339 UTC to the millisecond (keys made in one second still list in order)."""
    return rfc3339(time.time(), millis=True)


@dataclass(frozen=True, slots=True)
class KeyRecord:
    key_id: str
    tenant: str
    scope: Scope
    name: str
    created_at: str
    hash: str
    revoked_at: str | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def matches(self, key: str) -> bool:
        # Constant time: how much of a hash matched says nothing to a caller.
        return hmac.compare_digest(self.hash, digest(key))

    def encode(self) -> str:
        return json.dumps({**asdict(self), "scope": self.scope.value}, separators=(",", ":"))

    @classmethod
    def decode(cls, key_id: str, raw: bytes | str) -> KeyRecord:
        """ValueError for a record this version cannot read."""
        try:
            data = json.loads(raw)
            return cls(key_id=key_id, tenant=keys.check_tenant(data["tenant"]),
                       scope=Scope.parse(data["scope"]), name=str(data.get("name") or ""),
                       created_at=str(data["created_at"]), hash=str(data["hash"]),
                       revoked_at=data.get("revoked_at"))
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"unreadable API key record {key_id!r}: {exc}") from None

    def public(self, last_used: str | None) -> dict[str, Any]:
        """What ``gateway keys list`` shows: everything but the hash."""
        return {"key_id": self.key_id, "tenant": self.tenant, "scope": self.scope.value,
                "name": self.name, "created_at": self.created_at, "last_used_at": last_used,
                "revoked_at": self.revoked_at}


def create(client: redis.Redis, tenant: str, scope: Scope, name: str = "") -> tuple[str, KeyRecord]:
    """A new key and its record; the key is returned once and stored nowhere."""
    keys.check_tenant(tenant)
    while True:
        key_id = secrets.token_hex(6)
        key = f"{PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
        record = KeyRecord(key_id, tenant, scope, name, _now(), digest(key))
        if _write(client, record, only_new=True):
            return key, record


def records(client: redis.Redis) -> list[KeyRecord]:
    """Every key, oldest first (unreadable records are skipped)."""
    found = []
    rows: dict[bytes, bytes] = client.hgetall(keys.api_keys_key())  # type: ignore[assignment]
    for key_id, raw in rows.items():
        try:
            found.append(KeyRecord.decode(key_id.decode(), raw))
        except ValueError:
            continue
    return sorted(found, key=lambda r: (r.created_at, r.key_id))


def last_used(client: redis.Redis) -> dict[str, str]:
    rows: dict[bytes, bytes] = client.hgetall(keys.api_keys_used_key())  # type: ignore[assignment]
    return {k.decode(): v.decode() for k, v in rows.items()}


def revoke(client: redis.Redis, key_id: str) -> KeyRecord | None:
    """Mark a key revoked (its record stays, so the gateway stays closed: docs/api.md, Auth);
    None when there is no such key. Revoking a revoked key changes nothing."""
    raw = client.hget(keys.api_keys_key(), key_id)
    if raw is None:
        return None
    record = KeyRecord.decode(key_id, raw)
    revoked = record if record.revoked else replace(record, revoked_at=_now())
    # Written (again) with the version bump in one transaction, even when it was revoked
    # already: a revoke that failed half-way and is run again still reaches the gateways.
    _write(client, revoked, only_new=False)
    return revoked


def _write(client: redis.Redis, record: KeyRecord, *, only_new: bool) -> bool:
    """Write ``record`` (``only_new``: unless its id is taken) with the keys' version bump
    in one MULTI/EXEC: gateways reload the keys when the version moves, so a record never
    lands without it. Whether it was written."""
    with client.pipeline(transaction=True) as pipe:
        if only_new:
            pipe.hsetnx(keys.api_keys_key(), record.key_id, record.encode())
        else:
            pipe.hset(keys.api_keys_key(), record.key_id, record.encode())
        pipe.incr(keys.api_keys_version_key())
        written, _ = pipe.execute()
    return not only_new or bool(written)
