"""After channels are restored: send what changed while their connection was away.

docs/architecture.md: streams stay open through a Redis outage; once the backend has
resubscribed, the hub re-reads the snapshots of every watched job and sends those that
moved (watchers drop what they already have). A tenant channel gets every job changed
after where it stood when its connection was lost, from the tenant index.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import TYPE_CHECKING

from gateway.contract import keys
from gateway.contract.events import Message
from gateway.contract.record import Record

if TYPE_CHECKING:
    from gateway.fanout.hub import Hub


class Stale(Exception):
    """The connection these channels were restored on was lost in turn: stop here."""


def _message(record: Record, seen_seq: int) -> Message:
    return Message.from_record(record, record.catch_up_event(seen_seq))


async def resync(hub: Hub, channels: list[bytes], current: Callable[[], bool]) -> None:
    """Dispatch what moved on ``channels``; BackendUnavailable when Redis did not answer
    (the hub tries again), Stale when ``current()`` turned false meanwhile: nothing is
    dispatched after that, and the next restoration starts from the same place."""
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
        await _resync_jobs(hub, tenant, job_ids, current)
    for tenant in tenants:
        await _resync_tenant(hub, tenant, current)


def _check(current: Callable[[], bool]) -> None:
    if not current():
        raise Stale


async def _resync_jobs(hub: Hub, tenant: str, job_ids: list[str],
                       current: Callable[[], bool]) -> None:
    backend = hub.backend
    records = await backend.read_many(tenant, job_ids)
    _check(current)
    gone = [job_id for job_id, record in records.items() if record is None]
    deleted_at: dict[str, int | None] = {}
    epoch: str | None = None
    if gone:
        deleted_at = await backend.index_seqs(tenant, gone)
        epoch = await backend.epoch(tenant)
        _check(current)
    for job_id, record in records.items():
        channel = keys.job_channel(tenant, job_id).encode()
        if record is not None:
            seen = hub.resync_position(channel)
            hub.dispatch(channel, _message(record, seen[1] if seen else 0))
        elif epoch is not None and deleted_at.get(job_id):
            # Deleted (or expired) meanwhile: streams that saw it end drop this as older.
            hub.dispatch(channel, Message.deleted(epoch, deleted_at[job_id] or 0, job_id, None))
        else:
            # Not there and not in the index (it never was, or Redis lost its data): a
            # single-job stream ends, and its client learns which on reconnecting (404 or
            # a fresh snapshot); a multi-job stream keeps watching, as for a job it named
            # that did not exist yet.
            hub.finish_channel(channel, single_job_only=True)


async def _resync_tenant(hub: Hub, tenant: str, current: Callable[[], bool]) -> None:
    backend = hub.backend
    channel = keys.tenant_channel(tenant).encode()
    seen = hub.resync_position(channel)
    epoch = await backend.epoch(tenant)
    _check(current)
    if seen is not None and seen[0] != epoch:
        hub.finish_channel(channel)  # Redis lost its data: clients resume to fresh snapshots
        return
    if seen is None:
        # No position before the outage: the jobs not ended are what may have moved.
        changed = [(job_id, 0) for job_id in await backend.active(tenant)]
    else:
        changed = await backend.changed_since(tenant, seen[1])
    records = await backend.read_many(tenant, [job_id for job_id, _ in changed])
    _check(current)
    for job_id, seq in changed:
        record = records[job_id]
        if record is not None:
            hub.dispatch(channel, _message(record, seen[1] if seen else 0))
        elif epoch is not None and seq:
            hub.dispatch(channel, Message.deleted(epoch, seq, job_id, None))
