"""Browser tokens: what they carry, and what makes one worthless (docs/api.md, Auth)."""

from __future__ import annotations

import time

import jwt
import pytest

from gateway.auth import tokens
from gateway.auth.principal import Principal, Scope

SECRET = b"k" * 32
KEY = Principal("acme", Scope.WRITE, "0123456789ab", "key")


def test_a_token_carries_tenant_scope_jobs_expiry_and_its_key() -> None:
    token, expires = tokens.mint(SECRET, KEY, Scope.READ, ttl_seconds=300, job_ids=["a", "b"])
    assert tokens.looks_like_token(token)
    principal = tokens.verify(SECRET, token)
    assert principal == Principal("acme", Scope.READ, "0123456789ab", "token",
                                  frozenset({"a", "b"}), float(expires))
    assert abs(expires - time.time() - 300) < 2
    assert principal.sees("a") and not principal.sees("c") and not principal.can_mint


@pytest.mark.parametrize("spoil", [
    lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"),  # the signature
    lambda t: jwt.encode({**jwt.decode(t, options={"verify_signature": False}),
                          "tenant": "globex"}, b"x" * 32, algorithm="HS256"),  # another key
    lambda t: jwt.encode({**jwt.decode(t, options={"verify_signature": False})}, None,
                         algorithm="none"),  # unsigned
    lambda t: jwt.encode({"tenant": "acme", "scope": "read", "kid": "", "exp": 2**40},
                         SECRET, algorithm="HS256"),  # no iat
    lambda t: jwt.encode({"tenant": "a}b", "scope": "read", "kid": "", "iat": 1,
                          "exp": 2**40}, SECRET, algorithm="HS256"),  # a brace in a tenant
    lambda t: jwt.encode({"tenant": "acme", "scope": "admin", "kid": "", "iat": 1,
                          "exp": 2**40}, SECRET, algorithm="HS256"),
    lambda t: jwt.encode({"tenant": "acme", "scope": "read", "kid": "", "iat": 1,
                          "exp": 2**40, "job_ids": ["a*"]}, SECRET, algorithm="HS256"),
])
def test_a_spoiled_token_grants_nothing(spoil) -> None:  # type: ignore[no-untyped-def]
    token, _ = tokens.mint(SECRET, KEY, Scope.READ, ttl_seconds=300, job_ids=None)
    with pytest.raises(tokens.InvalidToken):
        tokens.verify(SECRET, spoil(token))


def test_an_expired_token_says_so() -> None:
    token, _ = tokens.mint(SECRET, KEY, Scope.READ, ttl_seconds=60, job_ids=None,
                           now=time.time() - 61)
    with pytest.raises(tokens.InvalidToken, match="expired"):
        tokens.verify(SECRET, token)
