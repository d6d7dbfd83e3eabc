"""After the hub's pub/sub connection comes back: send what changed while it was away.

DESIGN.md section 5: streams stay open through a Redis outage; once the hub has
resubscribed, it re-reads the snapshots of every watched job and sends those that moved
(watchers drop what they already have). A tenant channel gets every job changed after the
last seq the hub saw on it, from the tenant index.
"""

from __future__ import annotations

import json
from collections import defaultdict

from gateway.contract import keys
from gateway.contract.events import Message
from gateway.errors import BackendUnavailable
from gateway.hub import Hub
from gateway.store import Record, Store


def _message(record: Record, seen_seq: int) -> Message:
    return record.message("status" if record.status_seq > seen_seq else "progress")


async def resync(hub: Hub, store: Store, channels: list[str]) -> bool:
    """True once done; False when Redis did not answer (the hub tries again)."""
    jobs_by_tenant: dict[str, list[str]] = defaultdict(list)
    tenants: list[str] = []
    for name in channels:
        parsed = keys.parse_job_channel(name)
        if parsed is not None:
            jobs_by_tenant[parsed[0]].append(parsed[1])
        elif (tenant := keys.parse_tenant_channel(name)) is not None:
            tenants.append(tenant)
    try:
        for tenant, job_ids in jobs_by_tenant.items():
            records = await store.read_many(tenant, job_ids)
            for job_id, record in records.items():
                channel = keys.job_channel(tenant, job_id)
                if record is None:
                    # Gone (deleted, expired, or Redis lost its data): the streams end, and
                    # their clients learn which on reconnecting (404 or a fresh snapshot).
                    hub.finish_channel(channel)
                else:
                    seen = hub.last_seq.get(channel)
                    hub.dispatch(channel.encode(), _message(record, seen[1] if seen else 0))
        for tenant in tenants:
            await _resync_tenant(hub, store, tenant)
    except BackendUnavailable:
        return False
    return True


async def _resync_tenant(hub: Hub, store: Store, tenant: str) -> None:
    channel = keys.tenant_channel(tenant)
    seen = hub.last_seq.get(channel)
    epoch = await store.epoch(tenant)
    if seen is not None and seen[0] != epoch:
        hub.finish_channel(channel)  # Redis lost its data: clients resume to fresh snapshots
        return
    if seen is None:
        # No message came before the outage: the jobs not ended are what may have moved.
        changed = [(job_id, 0) for job_id in await store.active(tenant)]
    else:
        changed = await store.changed_since(tenant, seen[1])
    records = await store.read_many(tenant, [job_id for job_id, _ in changed])
    for job_id, seq in changed:
        record = records[job_id]
        if record is not None:
            hub.dispatch(channel.encode(), _message(record, seen[1] if seen else 0))
        elif epoch is not None and seq:
            data = json.dumps({"job_id": job_id, "version": None}).encode()
            hub.dispatch(channel.encode(), Message(
                epoch=epoch, seq=seq, event="deleted", version=0, status="deleted",
                job_id=job_id, data=data))
