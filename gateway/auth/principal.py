"""What a verified credential grants: a tenant, a scope, perhaps a list of jobs, a time."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from gateway.contract import keys


class Scope(enum.Enum):
    READ = "read"  # GET and HEAD: snapshots, lists, streams, long-polls, downloads
    WRITE = "write"  # also create, cancel, delete, and minting tokens

    @classmethod
    def parse(cls, value: object) -> Scope:
        """The scope named ``value``; ValueError naming the two there are."""
        for scope in cls:
            if value == scope.value:
                return scope
        raise ValueError('scope must be "read" or "write"')


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller of one request, as its credential says (and nothing else does)."""

    tenant: str
    scope: Scope
    # The API key the credential is, or that minted the token: what a revocation ends.
    # OPEN for a request served without auth (no key exists yet, docs/api.md, Auth).
    key_id: str
    kind: str  # "key", "token" or "open"
    job_ids: frozenset[str] | None = None  # a token limited to these jobs
    expires_at: float | None = None  # a token's expiry (unix seconds)

    def sees(self, job_id: str) -> bool:
        return self.job_ids is None or job_id in self.job_ids

    @property
    def can_mint(self) -> bool:
        """Tokens are minted with a write key (or, with no key yet, by anyone): a token
        never mints another, so none outlives the expiry it was given."""
        return self.scope is Scope.WRITE and self.kind != "token"


OPEN = ""  # the key id of requests served without auth

# Served when no key exists: the one tenant there was before keys.
ANONYMOUS = Principal(keys.DEFAULT_TENANT, Scope.WRITE, OPEN, "open")
