"""The keyring against a real Valkey: keys load once, verify without Redis, and a change
anywhere reaches it with the next refresh (docs/api.md, Auth)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Collection

import anyio
import pytest
import redis

from gateway.auth import apikeys, tokens
from gateway.auth.keyring import Credential, Keyring, NotLoaded, Unauthenticated, UnknownKey
from gateway.auth.principal import ANONYMOUS, OPEN, Principal, Scope
from gateway.backend.standalone import StandaloneBackend
from gateway.contract import keys

pytestmark = pytest.mark.anyio


@pytest.fixture
async def backend(redis_url: str) -> AsyncIterator[StandaloneBackend]:
    async with StandaloneBackend.connected(redis_url, timeout=2, max_connections=4,
                                           subscribe_timeout=2, probe_seconds=10) as backend:
        yield backend


def keyring(backend: StandaloneBackend, ended: list[set[str]], host: str = "127.0.0.1",
            insecure: bool = False) -> Keyring:
    def on_revoked(owners: Collection[str]) -> None:
        ended.append(set(owners))

    return Keyring(backend, host=host, insecure=insecure, token_secret=None,
                   on_revoked=on_revoked)


async def test_keys_verify_and_a_revocation_ends_what_the_key_owns(
    backend: StandaloneBackend, r: redis.Redis
) -> None:
    key, record = apikeys.create(r, "acme", Scope.READ)
    ended: list[set[str]] = []
    ring = keyring(backend, ended)
    with pytest.raises(NotLoaded):
        ring.authenticate(None, None)
    await ring.refresh()
    assert not ring.open and ring.has_keys
    principal = ring.authenticate(Credential("authorization", key), "127.0.0.1")
    assert (principal.tenant, principal.scope, principal.kind) == ("acme", Scope.READ, "key")
    for bad in ("", "gwk_", key[:-1] + ("A" if key[-1] != "A" else "B"), "a.b.c"):
        with pytest.raises(Unauthenticated):
            ring.authenticate(Credential("authorization", bad), None)
    with pytest.raises(Unauthenticated, match="URL"):
        ring.authenticate(Credential("query", key), None)
    token, _ = tokens.mint(ring.secret, principal, Scope.READ, ttl_seconds=60, job_ids=None)
    assert ring.authenticate(Credential("cookie", token), None).kind == "token"
    with pytest.raises(Unauthenticated):
        ring.authenticate(None, "127.0.0.1")  # keys exist: a credential is needed

    apikeys.revoke(r, record.key_id)
    await ring.refresh()
    assert ended == [{record.key_id}]
    for credential in (Credential("authorization", key), Credential("cookie", token)):
        with pytest.raises(Unauthenticated, match="revoked"):
            ring.authenticate(credential, None)
    assert not ring.open  # a revoked key still keeps auth on


async def test_without_keys_loopback_is_open_and_the_first_key_closes_it(
    backend: StandaloneBackend, r: redis.Redis
) -> None:
    ended: list[set[str]] = []
    ring = keyring(backend, ended)
    await ring.refresh()
    assert ring.open and ring.authenticate(None, "127.0.0.1") is ANONYMOUS
    with pytest.raises(Unauthenticated, match="public address"):
        ring.authenticate(None, "10.1.2.3")  # reached on another address: never open
    open_token, _ = tokens.mint(ring.secret, ANONYMOUS, Scope.READ, ttl_seconds=60,
                                job_ids=None)
    assert ring.authenticate(Credential("query", open_token), None).tenant == "default"
    apikeys.create(r, "acme", Scope.WRITE)
    await ring.refresh()
    assert not ring.open and ended == [{OPEN}]
    with pytest.raises(Unauthenticated, match="minted without a key"):
        ring.authenticate(Credential("query", open_token), None)


async def test_a_public_host_is_open_only_when_insecure(backend: StandaloneBackend) -> None:
    public = keyring(backend, [], host="0.0.0.0")
    await public.refresh()
    assert not public.open
    with pytest.raises(Unauthenticated):
        public.authenticate(None, "127.0.0.1")
    insecure = keyring(backend, [], host="0.0.0.0", insecure=True)
    await insecure.refresh()
    assert insecure.authenticate(None, "10.1.2.3") is ANONYMOUS


async def test_every_process_shares_one_token_secret(backend: StandaloneBackend) -> None:
    first, second = keyring(backend, []), keyring(backend, [])
    await first.refresh()
    await second.refresh()
    assert first.secret == second.secret and len(first.secret) >= 32


async def test_keys_that_vanish_never_turn_auth_off(
    backend: StandaloneBackend, r: redis.Redis
) -> None:
    """Found in review: a Redis that lost the keys (a flush, a failover to an empty
    replica) made every loopback gateway open again, silently."""
    apikeys.create(r, "acme", Scope.WRITE)
    ring = keyring(backend, [])
    await ring.refresh()
    r.delete(keys.api_keys_key(), keys.api_keys_version_key())
    await ring.refresh()
    assert not ring.open and ring.has_keys
    with pytest.raises(Unauthenticated):
        ring.authenticate(None, "127.0.0.1")


async def test_a_token_minted_without_a_key_is_refused_on_a_public_address(
    backend: StandaloneBackend,
) -> None:
    """Found in review: the check that a request without keys reached a loopback address
    was skipped for tokens minted then."""
    ring = keyring(backend, [])
    await ring.refresh()
    token, _ = tokens.mint(ring.secret, ANONYMOUS, Scope.READ, ttl_seconds=60, job_ids=None)
    assert ring.authenticate(Credential("query", token), "127.0.0.1").tenant == "default"
    with pytest.raises(Unauthenticated, match="public address"):
        ring.authenticate(Credential("query", token), "10.1.2.3")


async def test_a_lost_token_secret_is_read_again_with_the_keys(
    backend: StandaloneBackend, r: redis.Redis
) -> None:
    """Found in review: a process kept the secret it first read, so after Redis lost it,
    processes signed with different secrets."""
    ring = keyring(backend, [])
    await ring.refresh()
    old = ring.secret
    r.flushall()  # the data is lost; another process makes a new secret
    other = keyring(backend, [])
    await other.refresh()
    assert other.secret != old
    await ring.refresh()
    assert ring.secret == other.secret == r.get(keys.token_secret_key())


def test_every_create_and_revoke_moves_the_version(r: redis.Redis) -> None:
    """Found in review: a revoke run again after one that failed before the version bump
    changed nothing, and gateways never reloaded the key."""
    def version() -> int:
        return int(r.get(keys.api_keys_version_key()) or 0)

    _, record = apikeys.create(r, "acme", Scope.READ)
    assert version() == 1
    first = apikeys.revoke(r, record.key_id)
    again = apikeys.revoke(r, record.key_id)
    assert version() == 3
    assert first is not None and again is not None and again.revoked_at == first.revoked_at


async def test_a_token_verified_once_still_expires(backend: StandaloneBackend) -> None:
    ring = keyring(backend, [])
    await ring.refresh()
    token, _ = tokens.mint(ring.secret, ANONYMOUS, Scope.READ, ttl_seconds=1, job_ids=None)
    credential = Credential("query", token)
    assert ring.authenticate(credential, None) == ring.authenticate(credential, None)
    await anyio.sleep(2.05)  # exp is whole seconds: at most 2 s after minting
    with pytest.raises(Unauthenticated, match="expired"):
        ring.authenticate(credential, None)


async def test_vanished_keys_are_reported_once(
    backend: StandaloneBackend, r: redis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    """With no version left in Redis the keyring reads the keys on every refresh: the
    error that they are gone must not come again each second."""
    apikeys.create(r, "acme", Scope.WRITE)
    ring = keyring(backend, [])
    await ring.refresh()
    r.delete(keys.api_keys_key(), keys.api_keys_version_key())
    for _ in range(3):
        await ring.refresh()
    assert sum("are gone from Redis" in m for m in caplog.messages) == 1


async def test_a_token_of_a_key_made_a_moment_ago_asks_for_a_catch_up(
    backend: StandaloneBackend, r: redis.Redis
) -> None:
    """Another process (or ``gateway dashboard-url``) may mint under a key this one has not
    read yet: that is an unknown key, which the guard reads the keys again for, not a
    revoked one (refused for good)."""
    apikeys.create(r, "acme", Scope.WRITE)
    ring = keyring(backend, [])
    await ring.refresh()
    _, record = apikeys.create(r, "acme", Scope.WRITE)
    minter = Principal("acme", Scope.WRITE, record.key_id, "key")
    token, _ = tokens.mint(ring.secret, minter, Scope.READ, ttl_seconds=60, job_ids=None)
    with pytest.raises(UnknownKey):
        ring.authenticate(Credential("query", token), None)
    await ring.refresh()
    assert ring.authenticate(Credential("query", token), None).tenant == "acme"
    apikeys.revoke(r, record.key_id)
    await ring.refresh()
    with pytest.raises(Unauthenticated, match="revoked") as refused:
        ring.authenticate(Credential("query", token), None)
    assert not isinstance(refused.value, UnknownKey)
