"""``gateway dashboard-url``: a link to the dashboard with a token in its fragment.

Made as the gateway would mint it, from Redis (the same ``REDIS_URL``): the token is
signed with the shared secret, for a tenant, read or write, under one of the tenant's
write keys, so that revoking that key ends the link too (docs/dashboard.md). The token
rides in the fragment (``/#token=...``), which a browser never sends to a server.
"""

from __future__ import annotations

import re
import secrets

import redis

from gateway.auth import apikeys, tokens
from gateway.auth.principal import Principal, Scope
from gateway.contract import keys
from gateway.contract.record import rfc3339

_DURATION = re.compile(r"(\d+)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86_400}


class LinkRefused(Exception):
    """No link can be made; the text says why and what to do."""


def parse_ttl(text: str) -> int:
    """``8h``, ``30m``, ``90s``, ``1d`` or seconds; ValueError naming the range."""
    match = _DURATION.fullmatch(text.strip())
    seconds = int(match[1]) * _UNITS[match[2]] if match else 0
    if not tokens.MIN_TTL_SECONDS <= seconds <= tokens.MAX_TTL_SECONDS:
        raise ValueError(f"{text!r} is not a duration from {tokens.MIN_TTL_SECONDS} s to "
                         "24h (for example 8h, 30m, 90s)")
    return seconds


def dashboard_link(client: redis.Redis, *, tenant: str, write: bool, ttl_seconds: int,
                   base: str, secret: bytes | None = None) -> tuple[str, str | None]:
    """The link and its expiry (RFC 3339), or no expiry when no key exists (auth is off)."""
    keys.check_tenant(tenant)
    page = base.rstrip("/") + "/"
    if not client.exists(keys.api_keys_key()):
        if tenant != keys.DEFAULT_TENANT:
            raise LinkRefused(
                f"no API key exists, so auth is off and the gateway shows every request the "
                f"tenant '{keys.DEFAULT_TENANT}', not {tenant!r}: create a key for it first "
                f"(gateway keys create --tenant {tenant} --scope write)")
        return page, None
    minting = [record for record in apikeys.records(client)
               if record.tenant == tenant and record.scope is Scope.WRITE
               and not record.revoked]
    if not minting:
        raise LinkRefused(
            f"tenant {tenant!r} has no write key: a link's token is minted under one, and "
            f"ends when it is revoked. Create one: gateway keys create --tenant {tenant} "
            "--scope write --name dashboard")
    key = minting[-1]  # the newest
    if secret is None:
        name = keys.token_secret_key()
        client.set(name, secrets.token_hex(32).encode(), nx=True)  # as the gateway does
        stored = client.get(name)
        assert isinstance(stored, bytes)
        secret = stored
    token, expires = tokens.mint(secret, Principal(tenant, Scope.WRITE, key.key_id, "key"),
                                 Scope.WRITE if write else Scope.READ,
                                 ttl_seconds=ttl_seconds, job_ids=None)
    return f"{page}#token={token}", rfc3339(expires)
