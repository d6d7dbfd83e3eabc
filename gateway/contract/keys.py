"""Redis key and channel names: built here and nowhere else (docs/workers.md, Other languages).

Every key of a tenant carries the tenant in a hash tag, ``{T}``, so that the update script
can touch all of them atomically, also on Redis Cluster. A job's channel has the same
name as its key.
"""

from __future__ import annotations

import re

DEFAULT_TENANT = "default"

# docs/api.md, The job snapshot: 1-128 characters of [A-Za-z0-9_-]; checked before any Redis command
# so that user input never reaches a key pattern or a pattern subscription.
_JOB_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")


def valid_job_id(job_id: str) -> bool:
    return _JOB_ID.fullmatch(job_id) is not None


# A tenant names every key and channel of its jobs inside a hash tag, so it can hold no
# brace; it comes from a credential (docs/api.md, Auth) or a worker's own setting, never from
# a request. Lower case, so that "Acme" and "acme" are never two tenants by accident.
_TENANT = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


def valid_tenant(tenant: str) -> bool:
    return _TENANT.fullmatch(tenant) is not None


def check_tenant(tenant: str) -> str:
    """``tenant``, or ValueError saying what a tenant name may be."""
    if not valid_tenant(tenant):
        raise ValueError(f"{tenant[:80]!r} is not a tenant name: 1-64 characters of a-z, "
                         "0-9, '_' and '-', starting with a letter or digit")
    return tenant


def _prefix(tenant: str) -> str:
    return f"gw:{{{tenant}}}:"


def job_key(tenant: str, job_id: str) -> str:
    return f"{_prefix(tenant)}job:{job_id}"


def job_channel(tenant: str, job_id: str) -> str:
    return job_key(tenant, job_id)


_JOB_CHANNEL = re.compile(r"gw:\{([^}]*)\}:job:([A-Za-z0-9_-]{1,128})")


def parse_job_channel(name: str) -> tuple[str, str] | None:
    """(tenant, job id) of a job channel; None for any other channel."""
    match = _JOB_CHANNEL.fullmatch(name)
    return (match[1], match[2]) if match else None


def job_of_channel(name: bytes) -> str | None:
    """The job id of a job channel's name as bytes; None for any other channel. Cheaper
    than parse_job_channel: the hub asks it of every channel a stream opens."""
    head, sep, job_id = name.rpartition(b"}:job:")
    if not sep or not head.startswith(b"gw:{"):
        return None
    return job_id.decode()


_TENANT_CHANNEL = re.compile(r"gw:\{([^}]*)\}:jobs")


def parse_tenant_channel(name: str) -> str | None:
    match = _TENANT_CHANNEL.fullmatch(name)
    return match[1] if match else None


def tenant_channel(tenant: str) -> str:
    return f"{_prefix(tenant)}jobs"


def index_key(tenant: str) -> str:
    return f"{_prefix(tenant)}index"


def active_key(tenant: str) -> str:
    """The tenant's jobs that have not ended (sorted set, score = seq of the last change)."""
    return f"{_prefix(tenant)}active"


def seq_key(tenant: str) -> str:
    return f"{_prefix(tenant)}seq"


def epoch_key(tenant: str) -> str:
    return f"{_prefix(tenant)}epoch"


def expiry_key(tenant: str) -> str:
    """When each job's record expires (sorted set, score = unix seconds): the update script
    takes expired jobs out of the index and the active set with it."""
    return f"{_prefix(tenant)}expiry"


def forget_keys(tenant: str, job_id: str) -> list[str]:
    """The KEYS of ``forget.lua``."""
    return [job_key(tenant, job_id), index_key(tenant), active_key(tenant), expiry_key(tenant)]


def script_keys(tenant: str, job_id: str) -> list[str]:
    """The KEYS of the update script, in the order ``update.lua`` reads them."""
    return [job_key(tenant, job_id), index_key(tenant), seq_key(tenant), epoch_key(tenant),
            active_key(tenant), expiry_key(tenant)]


# -- API keys and the token secret (docs/api.md, Auth): one hash tag of their own, which no
# tenant can have (a tenant starts with a letter or digit), so that they share one slot
# on Redis Cluster and are never a tenant's key.
_AUTH = "gw:{_auth}:"


def api_keys_key() -> str:
    """Every API key ever made (hash: key id → its record as JSON, with the hash of the
    key, never the key)."""
    return f"{_AUTH}keys"


def api_keys_version_key() -> str:
    """Bumped by every change of ``api_keys_key``: gateways poll it to reload the keys."""
    return f"{_AUTH}version"


def api_keys_used_key() -> str:
    """When each key was last used (hash: key id → RFC 3339 time), at most once a minute."""
    return f"{_AUTH}used"


def token_secret_key() -> str:
    """The secret that signs browser tokens, made once by the first gateway (SET NX)."""
    return f"{_AUTH}token-secret"
