"""Many jobs on one connection: the event stream of ``GET /v1/jobs`` (issue 3).

Browsers open at most six HTTP/1.1 connections per origin, so a dashboard that follows
twenty jobs needs them on one stream; a backend service wants all of its tenant's jobs on
one. DESIGN.md section 3: the stream opens with the snapshots of the named jobs (or of the
tenant's jobs that have not ended), stays open after jobs end, and resumes from an event
id by sending again, as snapshots, exactly the jobs that changed after it.
"""

from __future__ import annotations

from starlette.types import Receive, Send

from gateway.contract import frames, keys
from gateway.contract.events import EventId, Message
from gateway.fanout.watcher import Watcher
from gateway.web.context import Context
from gateway.web.services import Services
from gateway.web.streams import wait_for_disconnect

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
    watcher = Watcher(send, close_on_terminal=False)
    tenant, backend = context.tenant, services.backend
    if job_ids:
        channels = [keys.job_channel(tenant, job_id) for job_id in job_ids]
    else:
        channels = [keys.tenant_channel(tenant)]
    try:
        # As for one job: subscribe first, then read, and let the watcher drop what the
        # snapshots already cover.
        async with services.hub.watch(channels, watcher, "jobs" if job_ids else "tenant"):
            position = await backend.position(tenant)
            epoch = position[0] if position is not None else None
            if position is not None and not job_ids:
                services.hub.opened(channels[0].encode(), position)
            # A position past the tenant's last change is no position in its history.
            resume = (last_event_id is not None and position is not None
                      and last_event_id.epoch == position[0]
                      and last_event_id.seq <= position[1])
            changed_at: dict[str, int] = {}
            if resume:
                assert last_event_id is not None
                changed = await backend.changed_since(tenant, last_event_id.seq)
                if job_ids:
                    wanted = set(job_ids)
                    changed = [(job_id, seq) for job_id, seq in changed if job_id in wanted]
                changed_at = dict(changed)
                ids = list(changed_at)
            else:
                ids = job_ids or await backend.active(tenant)
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
            body = frames.retry(services.settings.retry_ms)
            if unknown:
                body += frames.unknown(unknown)
            await send(context.start(200, frames.STREAM_HEADERS))
            await send(frames.body(body, more=True))
            watcher.open_with(opening)
            watcher.release()
            await wait_for_disconnect(receive, watcher)
    finally:
        watcher.discard()
