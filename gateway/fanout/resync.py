"""After channels are restored: send what changed while their connection was away.

DESIGN.md section 5: streams stay open through a Redis outage; once the backend has
resubscribed, the hub re-reads the snapshots of every watched job and sends those that
moved (watchers drop what they already have). A tenant channel gets every job changed
after the last seq the hub saw on it, from the tenant index.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

from gateway.contract import keys
from gateway.contract.events import Message
from gateway.contract.record import Record

if TYPE_CHECKING:
    from gateway.fanout.hub import Hub


def _message(record: Record, seen_seq: int) -> Message:
    return Message.from_record(record, "status" if record.status_seq > seen_seq else "progress")


async def resync(hub: Hub, channels: list[bytes]) -> None:
    """Dispatch what moved on ``channels``; BackendUnavailable when Redis did not answer
    (the hub tries again)."""
    jobs_by_tenant: dict[str, list[str]] = defaultdict(list)
    tenants: list[str] = []
    for name in channels:
        text = name.decode()
        parsed = keys.parse_job_channel(text)
        if parsed is not None:
            jobs_by_tenant[parsed[0]].append(parsed[1])
        elif (tenant := keys.parse_tenant_channel(text)) is not None:
            tenants.append(tenant)
    for tenant, job_ids in jobs_by_tenant.items():
        records = await hub.backend.read_many(tenant, job_ids)
        for job_id, record in records.items():
            channel = keys.job_channel(tenant, job_id).encode()
            if record is None:
                # Gone (deleted, expired, or Redis lost its data): the streams end, and
                # their clients learn which on reconnecting (404 or a fresh snapshot).
                hub.finish_channel(channel)
            else:
                seen = hub.last_position(channel)
                hub.dispatch(channel, _message(record, seen[1] if seen else 0))
    for tenant in tenants:
        await _resync_tenant(hub, tenant)


async def _resync_tenant(hub: Hub, tenant: str) -> None:
    backend = hub.backend
    channel = keys.tenant_channel(tenant).encode()
    seen = hub.last_position(channel)
    epoch = await backend.epoch(tenant)
    if seen is not None and seen[0] != epoch:
        hub.finish_channel(channel)  # Redis lost its data: clients resume to fresh snapshots
        return
    if seen is None:
        # No message came before the outage: the jobs not ended are what may have moved.
        changed = [(job_id, 0) for job_id in await backend.active(tenant)]
    else:
        changed = await backend.changed_since(tenant, seen[1])
    records = await backend.read_many(tenant, [job_id for job_id, _ in changed])
    for job_id, seq in changed:
        record = records[job_id]
        if record is not None:
            hub.dispatch(channel, _message(record, seen[1] if seen else 0))
        elif epoch is not None and seq:
            hub.dispatch(channel, Message.deleted(epoch, seq, job_id, None))
