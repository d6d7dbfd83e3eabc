"""``GET /v1/jobs/{id}``: one job, as a JSON snapshot or an event stream (docs/api.md)."""

from __future__ import annotations

import asyncio
import time

import anyio
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Message as AsgiMessage
from starlette.types import Send

from gateway.contract import keys
from gateway.contract.events import Message
from gateway.contract.frames import HEARTBEAT
from gateway.contract.record import Record
from gateway.fanout.watcher import Watcher
from gateway.web import params, problems, streams
from gateway.web.context import Context
from gateway.web.negotiation import Representation
from gateway.web.services import Services
from gateway.web.types import Reply

# docs/api.md: the polite polling interval of a job that is not done.
POLL_INTERVAL_SECONDS = 2


def _etag_matches(header: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 section 13.1.2), as If-None-Match asks."""
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == etag:
            return True
    return False


def _snapshot_headers(record: Record, etag: str) -> dict[str, str]:
    headers = {"ETag": etag, "Vary": "Accept", "Cache-Control": "no-cache"}
    if not record.terminal:
        headers["Retry-After"] = str(POLL_INTERVAL_SECONDS)
    return headers


class JobEndpoint:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def get(self, request: Request, context: Context, send: Send) -> Reply:
        representation = context.negotiated()
        job_id = params.job_id(request, context)
        services, tenant = self.services, context.tenant
        if representation is Representation.STREAM:
            if request.method == "HEAD":
                record = await services.backend.read(tenant, job_id)
                if record is None:
                    raise problems.not_found(job_id)
                past_end = record.terminal and streams.opening_event(
                    record, params.last_event_id(request, context)) is None
                return streams.head(context, send, 204 if past_end else 200)
            return streams.job_stream(services, context, request.receive, send, job_id=job_id,
                                      last_event_id=params.last_event_id(request, context))
        if_none_match = context.if_none_match
        wait = params.preferred_wait(context.prefer) if if_none_match else None
        if wait is not None:
            record = await self._long_poll(context, job_id, if_none_match or "", wait)
        else:
            record = await services.backend.read(tenant, job_id)
        if record is None:
            raise problems.not_found(job_id)
        now = time.time()
        etag = record.etag(now)
        headers = _snapshot_headers(record, etag)
        if wait is not None:
            headers["Preference-Applied"] = f"wait={wait}"
        if if_none_match and _etag_matches(if_none_match, etag):
            return Response(status_code=304, headers=headers)
        return Response(record.body(now), media_type="application/json", headers=headers)

    async def _long_poll(self, context: Context, job_id: str, if_none_match: str,
                         wait: int) -> Record | None:
        """The job once its version differs from ``If-None-Match``, or after ``wait`` seconds.

        It waits like a stream (subscribe, then read), with a watcher whose ``send`` only
        notes that something arrived: no task, nothing held but one event.
        """
        changed = asyncio.Event()
        backend, tenant = self.services.backend, context.tenant

        async def note(message: AsgiMessage) -> None:
            if message.get("body") != HEARTBEAT:
                changed.set()

        # Owned by its credential, as a stream: a revocation ends the wait too.
        principal = context.principal
        watcher = Watcher(note, close_on_terminal=True,
                          owner=principal.key_id if principal is not None else None)
        async with self.services.hub.watch([keys.job_channel(tenant, job_id)], watcher,
                                           "longpoll"):
            record = await backend.read(tenant, job_id)
            if record is None or not _etag_matches(if_none_match, record.etag(time.time())) or (
                    record.terminal):
                return record
            watcher.mark_sent(Message.from_record(record, "progress"))
            watcher.release()
            with anyio.move_on_after(wait):
                await changed.wait()
            watcher.discard()
            return await backend.read(tenant, job_id)

