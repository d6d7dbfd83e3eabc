"""Many jobs on one connection: the event stream of ``GET /v1/jobs`` (docs/api.md).

Browsers open at most six HTTP/1.1 connections per origin, so a dashboard that follows
twenty jobs needs them on one stream; a backend service wants all of its tenant's jobs on
one. docs/api.md, Event streams: the stream opens with the snapshots of the named jobs (or of the
tenant's jobs that have not ended), stays open after jobs end, and resumes from an event
id by sending again, as snapshots, exactly the jobs that changed after it.
"""

from __future__ import annotations

from starlette.types import Receive, Send

from gateway.contract import frames, keys
from gateway.contract.events import EventId, Message
from gateway.web.context import Context
from gateway.web.services import Services
from gateway.web.streams import end_watcher, new_watcher, wait_for_disconnect

MAX_JOB_IDS = 100


async def jobs_stream(
    services: Services,
    context: Context,
    receive: Receive,
    send: Send,
    *,
    job_ids: list[str] | None,
    last_event_id: EventId | None,
) -> None:
    watcher = new_watcher(services, context, send, close_on_terminal=False)
    tenant = context.tenant
    if job_ids:
        channels = [keys.job_channel(tenant, job_id) for job_id in job_ids]
    else:
        channels = [keys.tenant_channel(tenant)]
    try:
        # As for one job: subscribe first, then read, and let the watcher drop what the
        # snapshots already cover.
        async with services.hub.watch(channels, watcher, "jobs" if job_ids else "tenant"):
            position = await services.backend.position(tenant)
            if position is not None and not job_ids:
                services.hub.opened(channels[0].encode(), position)
            body = frames.retry(services.settings.retry_ms)
            opening, extra = await _opening(services, tenant, job_ids, last_event_id,
                                            position)
            if isinstance(opening, int):  # too many jobs to send: a reset at the position
                assert position is not None
                watcher.reset_to(position)
                body += frames.reset(EventId(*position), jobs=opening,
                                     limit=services.settings.stream_open_max_jobs)
                opening = []
            await send(context.start(200, frames.STREAM_HEADERS))
            await send(frames.body(body + extra, more=True))
            watcher.open_with(opening)
            watcher.release()
            await wait_for_disconnect(receive, watcher)
    finally:
        end_watcher(services, context, watcher)


async def _opening(
    services: Services, tenant: str, job_ids: list[str] | None,
    last_event_id: EventId | None, position: tuple[str, int] | None,
) -> tuple[list[Message] | int, bytes]:
    """What the stream opens with: its snapshots (and the frame of named jobs that do not
    exist), or, for a tenant stream, the number of jobs it would have to send when that is
    more than GATEWAY_STREAM_OPEN_MAX_JOBS: a resume from long ago, or a tenant with that
    many jobs not ended, must not make one request send the whole tenant."""
    backend, most = services.backend, services.settings.stream_open_max_jobs
    epoch = position[0] if position is not None else None
    # A position past the tenant's last change is no position in its history.
    resume = (last_event_id is not None and position is not None
              and last_event_id.epoch == position[0] and last_event_id.seq <= position[1])
    changed_at: dict[str, int] = {}
    if resume and last_event_id is not None:
        if job_ids:
            seqs = await backend.index_seqs(tenant, job_ids)
            changed_at = {job_id: seq for job_id, seq in seqs.items()
                          if seq is not None and seq > last_event_id.seq}
        else:
            count = await backend.count_changed_since(tenant, last_event_id.seq)
            if count > most:
                return count, b""
            changed_at = dict(await backend.changed_since(tenant, last_event_id.seq))
        ids = sorted(changed_at, key=changed_at.__getitem__)
    elif job_ids:
        ids = job_ids
    else:
        count = await backend.count_active(tenant)
        if count > most:
            return count, b""
        ids = await backend.active(tenant)
    records = await backend.read_many(tenant, ids)
    opening: list[Message] = []
    unknown: list[str] = []
    for job_id in ids:
        record = records[job_id]
        if record is not None:
            opening.append(Message.from_record(record, "snapshot"))
        elif resume and epoch is not None:
            opening.append(Message.deleted(epoch, changed_at[job_id], job_id, None))
        elif job_ids:
            unknown.append(job_id)
    return opening, frames.unknown(unknown) if unknown else b""
