"""The update script from Python: what each operation sends and what comes back.

Shared by the worker library (async and sync) and the gateway's own changes (create,
cancel, delete), so that all of them build exactly the same calls.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from importlib import resources
from typing import Any

from gateway.contract import keys
from gateway.errors import REFUSALS, ChangeRefused, InvalidUpdate

SCRIPT = resources.files("gateway.contract").joinpath("update.lua").read_text(encoding="utf-8")
FORGET_SCRIPT = resources.files("gateway.contract").joinpath("forget.lua").read_text(
    encoding="utf-8")

Snapshot = dict[str, Any]

_UNSET: Any = object()


@dataclass(frozen=True, slots=True)
class Change:
    """The outcome of one accepted call of the update script."""

    event_id: str
    event: str
    data: Snapshot
    changed: bool


@dataclass(frozen=True, slots=True)
class Lifetimes:
    """How long a job's record and its output live (docs/api.md, The job snapshot)."""

    retention_seconds: int = 24 * 3600  # the record, after the job ended
    output_ttl_seconds: int = 3600  # the output, after completion
    active_ttl_seconds: int = 7 * 24 * 3600  # a job not ended, after its last change


@dataclass(frozen=True, slots=True)
class Call:
    """One invocation of the update script: its KEYS and ARGV."""

    op: str
    job_id: str
    keys: list[str]
    args: list[str | int]


def call(
    op: str,
    job_id: str,
    payload: dict[str, Any],
    *,
    tenant: str,
    lifetimes: Lifetimes,
    publish: str = "PUBLISH",
) -> Call:
    """The call of ``op``; ``publish`` is SPUBLISH where channels are sharded (a cluster)."""
    if not keys.valid_job_id(job_id):
        raise InvalidUpdate(job_id, op, "a job id is 1-128 characters of [A-Za-z0-9_-]", None)
    if not keys.valid_tenant(tenant):
        raise InvalidUpdate(job_id, op, "a tenant is 1-64 characters of [a-z0-9_-], "
                            "starting with a letter or digit", None)
    args: list[str | int] = [
        op,
        job_id,
        json.dumps(payload, separators=(",", ":")),
        keys.job_channel(tenant, job_id),
        keys.tenant_channel(tenant),
        lifetimes.retention_seconds,
        lifetimes.output_ttl_seconds,
        secrets.token_hex(8),
        publish,
        lifetimes.active_ttl_seconds,
    ]
    return Call(op, job_id, keys.script_keys(tenant, job_id), args)


def result(c: Call, reply: list[Any]) -> Change:
    """Turn the script's reply into a Change, or raise the refusal it reports."""
    fields = [f.decode() if isinstance(f, bytes) else f for f in reply]
    if fields[0] != 1:
        _, code, message, status = fields
        cls = REFUSALS.get(code, ChangeRefused)
        raise cls(c.job_id, c.op, message, status or None)
    _, event_id, event, data, changed = fields
    return Change(event_id, event, json.loads(data), bool(changed))


def drop_unset(**fields: Any) -> dict[str, Any]:
    """Keyword arguments the caller gave, so that "not given" and None stay distinct."""
    return {k: v for k, v in fields.items() if v is not _UNSET}


def output(
    file_url: str | None,
    file_name: str | None,
    content_type: str | None,
    file_size_bytes: int | None,
    file_count: int,
) -> dict[str, Any]:
    return {
        "file_name": file_name,
        "content_type": content_type,
        "file_size_bytes": file_size_bytes,
        "file_count": file_count,
        "file_url": file_url,
    }


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def new_job_id(now_ms: int) -> str:
    """A ULID: 26 characters, sortable by creation time."""
    value = (now_ms << 80) | secrets.randbits(80)
    return "".join(_CROCKFORD[(value >> shift) & 31] for shift in range(125, -1, -5))
