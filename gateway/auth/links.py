"""``gateway dashboard-url``: a link to the dashboard with a token in its fragment.

Made as the gateway would mint it, from Redis (the same ``REDIS_URL``): the token is
signed with the shared secret, for a tenant, under one of the tenant's write keys, so that
revoking that key ends the link too (docs/dashboard.md). The token rides in the fragment
(``/#token=...``), which a browser never sends to a server. A link that may change jobs
carries a second token, of scope write (``&write_token=...``), which the page sends only
in headers: the first, a read token, is the one its URLs carry.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from urllib.parse import urlsplit

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
        raise ValueError(f"{text!r} is not a duration from {tokens.MIN_TTL_SECONDS}s to 24h "
                         "in one unit (for example 8h, 30m, 90s; a number alone is seconds)")
    return seconds


def check_base(base: str) -> str:
    """``base`` if it is an http(s) address a browser can open; ValueError otherwise."""
    parts = urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query \
            or parts.fragment:
        raise ValueError(f"{base!r} is not the address of a gateway: http(s)://host[:port]"
                         "[/path], as browsers reach it")
    return base


@dataclass(frozen=True)
class Link:
    url: str
    expires_at: str | None  # RFC 3339; None: no key exists, the page needs no token
    key_id: str | None  # the key it was minted under: revoking it ends the link


def _minting_key(client: redis.Redis, tenant: str, key_id: str | None) -> str:
    """The key to mint under: ``key_id``, else the tenant's newest write key named
    ``dashboard``, else its newest write key."""
    live = [record for record in apikeys.records(client)
            if record.tenant == tenant and record.scope is Scope.WRITE and not record.revoked]
    if key_id is not None:
        if key_id not in {record.key_id for record in live}:
            raise LinkRefused(f"--key-id {key_id}: no live write key of tenant {tenant!r} has "
                              "this id (gateway keys list)")
        return key_id
    if not live:
        raise LinkRefused(
            f"tenant {tenant!r} has no write key: a link's token is minted under one, and "
            f"ends when it is revoked. Create one: gateway keys create --tenant {tenant} "
            "--scope write --name dashboard")
    named = [record for record in live if record.name == "dashboard"]
    return (named or live)[-1].key_id  # the newest (records come oldest first)


def dashboard_link(client: redis.Redis, *, tenant: str, write: bool, ttl_seconds: int,
                   base: str, key_id: str | None = None, secret: bytes | None = None) -> Link:
    """The link to ``base``'s dashboard for ``tenant``; LinkRefused says why there is none."""
    keys.check_tenant(tenant)
    page = check_base(base).rstrip("/") + "/"
    if not client.exists(keys.api_keys_key()):
        if tenant != keys.DEFAULT_TENANT:
            raise LinkRefused(
                f"no API key exists, so auth is off and the gateway shows every request the "
                f"tenant '{keys.DEFAULT_TENANT}', not {tenant!r}: create a key for it first "
                f"(gateway keys create --tenant {tenant} --scope write --name dashboard)")
        return Link(page, None, None)
    minting = _minting_key(client, tenant, key_id)
    if secret is None:
        name = keys.token_secret_key()
        client.set(name, secrets.token_hex(32).encode(), nx=True)  # as the gateway does
        stored = client.get(name)
        assert isinstance(stored, bytes)
        secret = stored
    principal = Principal(tenant, Scope.WRITE, minting, "key")
    token, expires = tokens.mint(secret, principal, Scope.READ, ttl_seconds=ttl_seconds,
                                 job_ids=None)
    fragment = f"token={token}"
    if write:
        changes, _ = tokens.mint(secret, principal, Scope.WRITE, ttl_seconds=ttl_seconds,
                                 job_ids=None)
        fragment += f"&write_token={changes}"
    return Link(f"{page}#{fragment}", rfc3339(expires), minting)
