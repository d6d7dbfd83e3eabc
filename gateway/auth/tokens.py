"""Short-lived signed tokens for browsers (docs/api.md, Auth): ``EventSource`` sends no headers,
so a page streams with a token in ``?access_token=`` or a cookie instead of a key.

A token is a JWT signed with HMAC-SHA256 (PyJWT): it carries the tenant, the scope, the
jobs it is limited to, its expiry and the key that minted it, and any gateway process
verifies it with the shared secret alone, without Redis. Revoking the minting key ends
its tokens too (the keyring checks the ``kid``).
"""

from __future__ import annotations

import re
import time
from typing import Any

import jwt

from gateway.auth.principal import Principal, Scope
from gateway.contract import keys

ALGORITHM = "HS256"
MIN_TTL_SECONDS, MAX_TTL_SECONDS, DEFAULT_TTL_SECONDS = 1, 86_400, 300
MAX_JOB_IDS = 100
MIN_SECRET_BYTES = 32  # RFC 7518 section 3.2: a key at least as long as the hash

_SHAPE = re.compile(r"[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+")


class InvalidToken(ValueError):
    """Malformed, tampered with, expired, or not ours."""


def looks_like_token(value: str) -> bool:
    return _SHAPE.fullmatch(value) is not None


def mint(secret: bytes, principal: Principal, scope: Scope, *, ttl_seconds: int,
         job_ids: list[str] | None, now: float | None = None) -> tuple[str, int]:
    """A token of ``principal``'s tenant and its expiry (unix seconds)."""
    issued = int(time.time() if now is None else now)
    expires = issued + ttl_seconds
    claims: dict[str, Any] = {"tenant": principal.tenant, "scope": scope.value,
                              "kid": principal.key_id, "iat": issued, "exp": expires}
    if job_ids is not None:
        claims["job_ids"] = job_ids
    return jwt.encode(claims, secret, algorithm=ALGORITHM), expires


def verify(secret: bytes, token: str) -> Principal:
    """What a token grants; InvalidToken when it grants nothing."""
    try:
        claims = jwt.decode(token, secret, algorithms=[ALGORITHM],
                            options={"require": ["exp", "iat", "tenant", "scope", "kid"]})
        tenant, kid, job_ids = claims["tenant"], claims["kid"], claims.get("job_ids")
        if not (isinstance(tenant, str) and keys.valid_tenant(tenant) and isinstance(kid, str)):
            raise InvalidToken("unreadable claims")
        if job_ids is not None and not (
                isinstance(job_ids, list) and len(job_ids) <= MAX_JOB_IDS
                and all(isinstance(j, str) and keys.valid_job_id(j) for j in job_ids)):
            raise InvalidToken("unreadable job ids")
        return Principal(tenant, Scope.parse(claims["scope"]), kid, "token",
                         None if job_ids is None else frozenset(job_ids),
                         float(claims["exp"]))
    except InvalidToken:
        raise
    except jwt.ExpiredSignatureError:
        raise InvalidToken("the token expired") from None
    except (jwt.InvalidTokenError, ValueError, TypeError) as exc:
        raise InvalidToken(f"not a valid token ({type(exc).__name__})") from None
