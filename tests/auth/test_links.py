"""``gateway dashboard-url``'s links: a token minted as the gateway mints one, in the
fragment, under the tenant's newest write key (docs/dashboard.md)."""

from __future__ import annotations

import time

import pytest
import redis

from gateway.auth import apikeys, tokens
from gateway.auth.links import Link, LinkRefused, dashboard_link, parse_ttl
from gateway.auth.principal import Scope
from gateway.contract import keys


@pytest.mark.parametrize("text,seconds", [
    ("8h", 28_800), ("30m", 1_800), ("90s", 90), ("1d", 86_400), ("600", 600), (" 2h ", 7_200),
])
def test_ttl_in_units(text: str, seconds: int) -> None:
    assert parse_ttl(text) == seconds


@pytest.mark.parametrize("text", ["0", "25h", "2d", "1.5h", "h", "", "-1m", "8 h", "1w"])
def test_ttl_out_of_range_or_unreadable(text: str) -> None:
    with pytest.raises(ValueError, match="24h"):
        parse_ttl(text)


def _tokens(link: Link) -> dict[str, str]:
    page, _, fragment = link.url.partition("#")
    assert page == "http://gw.example:8000/"
    return dict(part.split("=", 1) for part in fragment.split("&"))


def test_with_no_key_auth_is_off_and_the_link_has_no_token(r: redis.Redis) -> None:
    assert dashboard_link(r, tenant="default", write=False, ttl_seconds=60,
                          base="http://gw.example:8000/") == Link("http://gw.example:8000/",
                                                                  None, None)
    with pytest.raises(LinkRefused, match="auth is off"):
        dashboard_link(r, tenant="acme", write=False, ttl_seconds=60, base="http://x")


def test_a_tenant_without_a_live_write_key_gets_no_link(r: redis.Redis) -> None:
    apikeys.create(r, "acme", Scope.READ)
    _, revoked = apikeys.create(r, "acme", Scope.WRITE)
    apikeys.revoke(r, revoked.key_id)
    apikeys.create(r, "globex", Scope.WRITE)
    with pytest.raises(LinkRefused, match="gateway keys create --tenant acme --scope write"):
        dashboard_link(r, tenant="acme", write=False, ttl_seconds=60, base="http://x")
    with pytest.raises(ValueError, match="not a tenant name"):
        dashboard_link(r, tenant="Bad Name", write=False, ttl_seconds=60, base="http://x")


def test_the_token_is_the_gateways_own_under_the_newest_write_key(r: redis.Redis) -> None:
    apikeys.create(r, "acme", Scope.WRITE)
    time.sleep(1.1)  # created_at is to the second
    _, newest = apikeys.create(r, "acme", Scope.WRITE)
    link = dashboard_link(r, tenant="acme", write=False, ttl_seconds=3600,
                          base="http://gw.example:8000")
    secret = r.get(keys.token_secret_key())
    assert isinstance(secret, bytes)
    assert list(_tokens(link)) == ["token"]  # read-only: no write token at all
    granted = tokens.verify(secret, _tokens(link)["token"])
    assert (granted.tenant, granted.scope, granted.key_id, granted.job_ids) == (
        "acme", Scope.READ, newest.key_id, None)
    assert granted.expires_at is not None and abs(granted.expires_at - time.time() - 3600) < 5
    assert link.key_id == newest.key_id
    assert link.expires_at is not None and link.expires_at.endswith("Z")


def test_a_write_link_keeps_its_write_token_apart(r: redis.Redis) -> None:
    """The URLs the page makes carry the read token; the write one goes in headers only."""
    apikeys.create(r, "acme", Scope.WRITE)
    link = dashboard_link(r, tenant="acme", write=True, ttl_seconds=60,
                          base="http://gw.example:8000", secret=b"s" * 32)
    found = _tokens(link)
    assert list(found) == ["token", "write_token"]
    assert tokens.verify(b"s" * 32, found["token"]).scope is Scope.READ
    assert tokens.verify(b"s" * 32, found["write_token"]).scope is Scope.WRITE


def test_a_key_named_dashboard_is_preferred_and_key_id_chooses(r: redis.Redis) -> None:
    _, dashboard = apikeys.create(r, "acme", Scope.WRITE, "dashboard")
    time.sleep(1.1)
    _, backend = apikeys.create(r, "acme", Scope.WRITE, "backend")
    _, other = apikeys.create(r, "globex", Scope.WRITE, "dashboard")
    link = dashboard_link(r, tenant="acme", write=False, ttl_seconds=60, base="http://x")
    assert link.key_id == dashboard.key_id
    chosen = dashboard_link(r, tenant="acme", write=False, ttl_seconds=60, base="http://x",
                            key_id=backend.key_id)
    assert chosen.key_id == backend.key_id
    with pytest.raises(LinkRefused, match="no live write key"):
        dashboard_link(r, tenant="acme", write=False, ttl_seconds=60, base="http://x",
                       key_id=other.key_id)  # another tenant's


@pytest.mark.parametrize("base", ["javascript:alert(1)", "ftp://gw.example", "gw.example",
                                  "http://", "https://gw.example/?a=1", "http://gw#x"])
def test_a_base_is_an_address_a_browser_opens(r: redis.Redis, base: str) -> None:
    with pytest.raises(ValueError, match="not the address of a gateway"):
        dashboard_link(r, tenant="default", write=False, ttl_seconds=60, base=base)
