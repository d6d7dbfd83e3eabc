"""The keyring: every API key and the token secret, held by each gateway process.

Verifying a credential is a lookup here, never a Redis round trip. Every
``REFRESH_SECONDS`` the keyring asks Redis for the keys' version (one GET) and reloads the
keys when it moved, so a key created or revoked anywhere counts on every process within a
second or two (docs/api.md, API keys, promises 5 s). A revoked key's open streams, and those of the
tokens it minted, are ended then; so are the streams served without auth once the first
key exists.

When a key was last used is written back at most once a minute per key and process.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import secrets
import time
from collections.abc import AsyncIterator, Callable, Collection
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from gateway.auth import apikeys, tokens
from gateway.auth.apikeys import KeyRecord
from gateway.auth.principal import ANONYMOUS, OPEN, Principal
from gateway.backend.base import Backend
from gateway.contract.record import rfc3339
from gateway.errors import BackendUnavailable

log = logging.getLogger("gateway.auth")

REFRESH_SECONDS = 1.0
USE_NOTED_EVERY_SECONDS = 60.0
# Tokens verified and not expired, kept so that a page's reconnects (EventSource comes
# back with the same URL) skip the signature check (docs/architecture.md has the cost).
MAX_VERIFIED_TOKENS = 4096
# A key this process does not know makes it read the keys again at once (a key made a
# moment ago works at once), at most this often: unknown keys sent in a flood cost Redis
# a few GETs a second, not one each.
CATCH_UP_SECONDS = 0.25


class Unauthenticated(Exception):
    """The credential grants nothing; the text says why, never what it was."""


class UnknownKey(Unauthenticated):
    """A well-formed key this process has not read: perhaps one made a moment ago."""


class NotLoaded(Exception):
    """The keys could not be read from Redis yet: nobody can be told who they are."""


@dataclass(frozen=True, slots=True)
class Credential:
    """A credential as a request gave it: where it came from, and its text."""

    source: str  # "authorization", "x-api-key", "query" or "cookie"
    value: str

    @property
    def in_url_or_cookie(self) -> bool:
        return self.source in ("query", "cookie")


def _seen(future: asyncio.Future[None]) -> None:
    # Its callers got the outcome (or left): asyncio need not report it again.
    if not future.cancelled():
        future.exception()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def exposure_refusal(host: str, insecure: bool) -> str | None:
    """Why serving on ``host`` with no API key is refused; None when it is allowed."""
    if insecure or is_loopback(host):
        return None
    return (f"no API key exists, and {host} is not a loopback address: anyone who reaches "
            "it could read, cancel and delete every job. Create a key first (gateway keys "
            "create --tenant NAME --scope write, with the same REDIS_URL), or serve without "
            "auth on purpose with --insecure (GATEWAY_INSECURE=true)")


class Keyring:
    def __init__(self, backend: Backend, *, host: str, insecure: bool,
                 token_secret: bytes | None,
                 on_revoked: Callable[[Collection[str]], None]) -> None:
        self._backend = backend
        self._host = host
        # While the app starts, a public address without keys stops it (gateway.app);
        # keys read later can only be reported.
        self._starting = True
        self._may_open = insecure or is_loopback(host)
        self._insecure = insecure
        self._given_secret = token_secret
        self._on_revoked = on_revoked
        self._records: dict[str, KeyRecord] = {}
        self._any = False  # a key record exists (even one this version cannot read)
        self._version: bytes | None = None
        self.loaded = False
        self.secret = b""
        self._used: dict[str, float] = {}  # key id → last use not yet written
        self._written: dict[str, float] = {}  # key id → when its use was last written
        self._servers: dict[str, bool] = {}  # local address → loopback?
        self._verified: dict[str, Principal] = {}  # token → what it grants
        self._catching_up: asyncio.Future[None] | None = None
        self._caught_up_at = -CATCH_UP_SECONDS

    # -- lifetime -----------------------------------------------------------------------

    @classmethod
    @asynccontextmanager
    async def running(cls, backend: Backend, **options: object) -> AsyncIterator[Keyring]:
        """Loaded once (if Redis answers), then refreshed in the background."""
        keyring = cls(backend, **options)  # type: ignore[arg-type]
        try:
            await keyring.refresh()
        except BackendUnavailable as exc:
            log.error("cannot read the API keys yet (%s): /v1 answers 503 until they are", exc)
        keyring._starting = False
        async with anyio.create_task_group() as tg:
            tg.start_soon(keyring._refresh_loop)
            try:
                yield keyring
            finally:
                tg.cancel_scope.cancel()

    async def _refresh_loop(self) -> None:
        failing = False
        while True:
            await anyio.sleep(REFRESH_SECONDS)
            try:
                await self.refresh()
                failing = False
            except BackendUnavailable as exc:
                if not failing:  # logged once per outage
                    log.warning("cannot refresh the API keys (%s); the last ones known "
                                "stay in force", exc)
                failing = True

    async def refresh(self) -> None:
        """Reload the keys if they changed, and write down when keys were last used."""
        backend = self._backend
        version = await backend.api_keys_version()
        # No version: no key was ever made, or Redis lost them: read again every time
        # (one more round trip a second, only then).
        if not self.loaded or version is None or version != self._version:
            # The secret too: a Redis that lost it (and the keys' version with it) gets a
            # new one, which every process then reads, instead of each keeping its own.
            secret = self._given_secret or await backend.token_secret(
                secrets.token_hex(32).encode())
            rows = await backend.api_keys()
            if secret != self.secret:
                self._verified.clear()
            self.secret, self._version = secret, version
            self._replace(rows)
        await self._write_uses()

    async def catch_up(self) -> None:
        """Read the keys now, once for every caller that asks meanwhile, and at most every
        CATCH_UP_SECONDS (a caller waits for the next turn, so a flood of unknown keys is
        slowed, not served). An outage is no error here: the caller's key stays unknown."""
        catching_up = self._catching_up
        if catching_up is None or catching_up.done():
            catching_up = self._catching_up = asyncio.ensure_future(self._catch_up())
            catching_up.add_done_callback(_seen)
        with contextlib.suppress(BackendUnavailable):
            await asyncio.shield(catching_up)

    async def _catch_up(self) -> None:
        wait = self._caught_up_at + CATCH_UP_SECONDS - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)
        self._caught_up_at = time.monotonic()
        await self.refresh()

    def _replace(self, rows: dict[str, bytes]) -> None:
        records: dict[str, KeyRecord] = {}
        for key_id, raw in rows.items():
            try:
                records[key_id] = apikeys.KeyRecord.decode(key_id, raw)
            except ValueError as exc:
                log.error("%s: it is ignored", exc)
        was_open, previous, first = self.loaded and self.open, self._records, not self.loaded
        if previous and not rows:  # said once: a reload with no version finds none again
            # Keys this process has seen are gone (a Redis that lost its data, a flush):
            # that never turns auth off. Until a key exists again, nobody is let in.
            log.error("the API keys this gateway knew are gone from Redis: every /v1 "
                      "request gets 401 until a key is created again")
        self._records, self._any, self.loaded = records, self._any or bool(rows), True
        if first:
            self._tell_exposure()
        ended = {key_id for key_id, record in previous.items()
                 if not record.revoked and self._live(key_id) is None}
        if was_open and not self.open:
            ended.add(OPEN)
            log.info("an API key exists now: every /v1 request needs a credential")
        if ended:
            self._on_revoked(ended)

    def _tell_exposure(self) -> None:
        """Say loudly how requests without a credential are treated, once keys are read."""
        if self._any:
            return
        refusal = exposure_refusal(self._host, self._insecure)
        if refusal is not None:
            if not self._starting:
                log.error("%s. Until one exists every /v1 request gets 401.", refusal)
            return
        log.warning(
            "NO AUTH: no API key exists, so every /v1 request is served, as the tenant "
            "'default', to anyone who can reach %s%s. Create a key to turn auth on (no "
            "restart needed): REDIS_URL=... .venv/bin/gateway keys create --tenant NAME "
            "--scope write",
            self._host, " (--insecure)" if self._insecure else "")

    def _live(self, key_id: str) -> KeyRecord | None:
        record = self._records.get(key_id)
        return record if record is not None and not record.revoked else None

    @property
    def has_keys(self) -> bool:
        """Whether any key exists, or existed since this process started (a revoked one
        counts: revoking the last key, or losing them all, never turns auth off)."""
        return self._any

    @property
    def open(self) -> bool:
        """Whether requests without a credential are served (as the tenant ``default``)."""
        return not self._any and self._may_open

    # -- verifying ----------------------------------------------------------------------

    def authenticate(self, credential: Credential | None, server_host: str | None) -> Principal:
        """Who the request is; Unauthenticated or NotLoaded when that cannot be said."""
        if not self.loaded:
            raise NotLoaded
        if credential is None:
            if not self.open:
                raise Unauthenticated("this request needs a credential: an API key "
                                      "(Authorization: Bearer, or X-Api-Key) or a token")
            self._check_local(server_host)
            return ANONYMOUS
        value = credential.value
        key_id = apikeys.key_id_of(value)
        if key_id is not None:
            if credential.in_url_or_cookie:
                raise Unauthenticated("an API key is never accepted in a URL or a cookie: "
                                      "send it in the Authorization header, and give pages "
                                      "a token (POST /v1/tokens)")
            record = self._records.get(key_id)
            if record is None:
                raise UnknownKey("unknown API key")
            if record.revoked or not record.matches(value):
                raise Unauthenticated("unknown or revoked API key")
            self._note_use(key_id)
            return Principal(record.tenant, record.scope, key_id, "key")
        if not tokens.looks_like_token(value):
            raise Unauthenticated("malformed credential: neither an API key nor a token")
        principal = self._verify_token(value)
        if principal.key_id == OPEN:
            if not self.open:
                raise Unauthenticated("the token was minted without a key, and keys exist now")
            self._check_local(server_host)
        else:
            record = self._records.get(principal.key_id)
            if record is None:
                # Minted under a key this process has not read yet (by another process,
                # or gateway dashboard-url): read the keys again, as for an unknown key.
                raise UnknownKey("the key that minted the token is unknown")
            if record.revoked or record.tenant != principal.tenant:
                raise Unauthenticated("the key that minted the token was revoked")
        return principal

    def _verify_token(self, token: str) -> Principal:
        verified = self._verified
        principal = verified.get(token)
        if principal is not None:
            assert principal.expires_at is not None
            if principal.expires_at > time.time():
                return principal
            del verified[token]
        try:
            principal = tokens.verify(self.secret, token)
        except tokens.InvalidToken as exc:
            raise Unauthenticated(str(exc)) from None
        if len(verified) >= MAX_VERIFIED_TOKENS:
            del verified[next(iter(verified))]  # the oldest
        verified[token] = principal
        return principal

    def _check_local(self, server_host: str | None) -> None:
        """Without keys, only a request that reached a loopback address is served (or any,
        with --insecure): plain uvicorn bound to a public address with no key (gateway
        serve refuses to start so) never serves it without auth."""
        if self._insecure or server_host is None:
            return
        local = self._servers.get(server_host)
        if local is None:
            local = self._servers[server_host] = is_loopback(server_host)
        if not local:
            raise Unauthenticated("no API key exists, and this gateway was reached on a "
                                  "public address: create a key (docs/api.md, Auth)")

    # -- last use -----------------------------------------------------------------------

    def _note_use(self, key_id: str) -> None:
        now = time.time()
        if now - self._written.get(key_id, 0.0) >= USE_NOTED_EVERY_SECONDS:
            self._used[key_id] = now

    async def _write_uses(self) -> None:
        if not self._used:
            return
        used, self._used = self._used, {}
        await self._backend.note_key_use({
            key_id: rfc3339(at)
            for key_id, at in used.items()})
        self._written.update(used)
