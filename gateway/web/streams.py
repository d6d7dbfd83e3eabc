"""The event stream of ``GET /v1/jobs/{id}`` (docs/api.md, Event streams), on the lean path.

The stream is a plain ASGI exchange: no task group, no disconnect listener, no per-stream
heartbeat task (docs/architecture.md). Its one task writes the opening frames, hands the
stream to the hub, and then waits for the client to leave.
"""

from __future__ import annotations

import asyncio
import random
import time

from starlette.types import Receive, Send

from gateway.contract import frames, keys
from gateway.contract.events import EventId, Message
from gateway.contract.record import Record
from gateway.fanout.watcher import Watcher
from gateway.web import problems
from gateway.web.context import Context
from gateway.web.services import Services


async def head(context: Context, send: Send, status: int = 200) -> None:
    """``HEAD`` with ``Accept: text/event-stream``: the status and headers a GET would
    start with, and no stream."""
    headers = frames.STREAM_HEADERS if status == 200 else frames.NO_CONTENT_HEADERS
    await send(context.start(status, headers))
    await send(frames.body(b"", more=False))


def opening_event(record: Record, last: EventId | None) -> str | None:
    """What a (re)connecting client gets first: an event name, or None when up to date.

    docs/api.md, Event streams: an id from another epoch, or none, gets a fresh ``snapshot``; an id
    of this epoch that is behind gets the current snapshot as ``status`` when the status
    moved since then and as ``progress`` otherwise; an id at the job's last change gets
    nothing until the next change. An id past it cannot be a position in this job's
    history (a future id, another job's): it is foreign, and gets a fresh ``snapshot``.
    """
    if last is None or last.epoch != record.epoch or last.seq > record.seq:
        return "snapshot"
    if last.seq == record.seq:
        return None
    return record.catch_up_event(last.seq)


def new_watcher(services: Services, context: Context, send: Send, *,
                close_on_terminal: bool) -> Watcher:
    """A stream's watcher, within its tenant's quota (429 past it), owned by its
    credential (a revocation ends it) and ending with a ``retry:`` when its time is up:
    GATEWAY_MAX_STREAM_SECONDS, less up to a tenth so that streams opened together do not
    all end together, or the expiry of its token, whichever comes first. The stream calls
    ``end_watcher`` when it ends, however it ends. (Two calls, not a context manager: a
    suspended generator per open stream is memory that buys nothing.)"""
    principal = context.principal
    services.quota.take(context.tenant)
    seconds = services.settings.max_stream_seconds * random.uniform(0.9, 1.0)
    owner = None
    if principal is not None:
        owner = principal.key_id
        if principal.expires_at is not None:
            seconds = min(seconds, principal.expires_at - time.time())
    hub = services.hub
    direct = context.direct_write
    if direct is not None and not direct.serves(send):
        direct = None  # send is wrapped: every write goes through the wrapper
    return Watcher(send, close_on_terminal=close_on_terminal, owner=owner,
                   ends_at=hub.now() + seconds, loop=hub.loop, direct=direct)


def end_watcher(services: Services, context: Context, watcher: Watcher) -> None:
    watcher.discard()
    services.quota.give_back(context.tenant)


async def wait_for_disconnect(receive: Receive, watcher: Watcher) -> None:
    """Until the client leaves, the hub ends the stream, or the watcher is aborted.

    ASGI: receive() returns http.disconnect once the client left or the response is
    complete. An aborted watcher (a client that took no data within the send timeout)
    cancels this task; returning then, with the response unfinished, makes the server
    close the connection.
    """
    try:
        while (await receive())["type"] != "http.disconnect":
            pass
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if not watcher.aborted or task is None:
            raise
        task.uncancel()


async def job_stream(
    services: Services,
    context: Context,
    receive: Receive,
    send: Send,
    *,
    job_id: str,
    last_event_id: EventId | None,
) -> None:
    watcher = new_watcher(services, context, send, close_on_terminal=True)
    try:
        # Subscribe first, read second: whatever changes after the read is already on its
        # way through the hub, and the watcher drops what the snapshot already covered.
        async with services.hub.watch([keys.job_channel(context.tenant, job_id)], watcher,
                                      "job"):
            if await _open_job_stream(services, context, send, watcher, job_id,
                                      last_event_id):
                watcher.release()
                await wait_for_disconnect(receive, watcher)
    finally:
        end_watcher(services, context, watcher)


async def _open_job_stream(services: Services, context: Context, send: Send,
                           watcher: Watcher, job_id: str, last_event_id: EventId | None
                           ) -> bool:
    """Write the stream's opening; True if it stays open. (A function of its own so that
    the snapshot, its frame and the job's record are not held for the stream's life.)"""
    record = await services.backend.read(context.tenant, job_id)
    if record is None:
        raise problems.not_found(job_id)
    event = opening_event(record, last_event_id)
    if event is None and record.terminal:
        # A reconnect at or past the terminal change: 204 stops EventSource.
        await head(context, send, 204)
        return False
    opening = Message.from_record(record, event or "progress")
    watcher.mark_sent(opening)
    # The retry field shares the opening event's block when there is one: some clients
    # (httpx-sse) report a block without data as an empty event.
    body = frames.retry(services.settings.retry_ms)
    if event is not None:
        body = body[:-1] + opening.frame
    final = opening.terminal
    await send(context.start(200, frames.STREAM_HEADERS))
    await send(frames.body(body, more=not final))
    return not final
