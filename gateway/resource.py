"""``/v1/jobs/{id}``: one job, as a JSON snapshot or an event stream (DESIGN.md section 2)."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, MutableMapping
from typing import Any

import anyio
from starlette.requests import Request
from starlette.responses import Response

from gateway import problems
from gateway.contract import keys
from gateway.contract.events import Message
from gateway.contract.frames import HEARTBEAT
from gateway.contract.record import Record
from gateway.fanout.watcher import Watcher
from gateway.negotiation import Representation, last_event_id, requested
from gateway.state import TENANT, AppState, RawEndpoint
from gateway.streams import job_stream, opening_event, stream_head

# DESIGN.md section 2: the polite polling interval of a job that is not done, and the
# longest a long-poll (Prefer: wait=N) is held.
POLL_INTERVAL_SECONDS = 2
MAX_WAIT_SECONDS = 60


def _etag_matches(header: str, version: int) -> bool:
    wanted = f'"{version}"'
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/") == wanted:
            return True
    return False


def _snapshot_headers(record: Record) -> dict[str, str]:
    headers = {"ETag": f'"{record.version}"', "Vary": "Accept", "Cache-Control": "no-cache"}
    if not record.terminal:
        headers["Retry-After"] = str(POLL_INTERVAL_SECONDS)
    return headers


class JobEndpoint(RawEndpoint):
    """``/v1/jobs/{id}``: a raw ASGI endpoint, so that its event streams stay lean."""

    async def handle(self, request: Request, send: Any) -> Coroutine[Any, Any, None] | None:
        representation = requested(request, "GET, HEAD, DELETE")
        job_id = request.path_params["job_id"]
        if not keys.valid_job_id(job_id):
            raise problems.invalid_job_id(job_id)
        state = self.state
        if representation is Representation.STREAM:
            if request.method == "HEAD":
                record = await state.backend.read(TENANT, job_id)
                if record is None:
                    raise problems.not_found(job_id)
                past_end = record.terminal and opening_event(record, last_event_id(request)) is None
                await stream_head(send, request.scope.setdefault("state", {}),
                                  204 if past_end else 200)
                return None
            return job_stream(
                request.receive,
                send,
                hub=state.hub,
                backend=state.backend,
                tenant=TENANT,
                job_id=job_id,
                last_event_id=last_event_id(request),
                retry_ms=state.settings.retry_ms,
                state=request.scope.setdefault("state", {}),
            )
        if_none_match = request.headers.get("if-none-match")
        wait = _preferred_wait(request.headers.get("prefer")) if if_none_match else None
        if wait is not None:
            record = await _long_poll(state, job_id, if_none_match or "", wait)
        else:
            record = await state.backend.read(TENANT, job_id)
        if record is None:
            raise problems.not_found(job_id)
        headers = _snapshot_headers(record)
        if wait is not None:
            headers["Preference-Applied"] = f"wait={wait}"
        if if_none_match and _etag_matches(if_none_match, record.version):
            response = Response(status_code=304, headers=headers)
        else:
            response = Response(record.body(), media_type="application/json", headers=headers)
        await response(request.scope, request.receive, send)
        return None


def _preferred_wait(prefer: str | None) -> int | None:
    """``Prefer: wait=N`` (RFC 7240), capped at MAX_WAIT_SECONDS; None when absent."""
    for preference in (prefer or "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                return min(max(int(value.strip()), 0), MAX_WAIT_SECONDS)
            except ValueError:
                return None
    return None


async def _long_poll(state: AppState, job_id: str, if_none_match: str, wait: int) -> Record | None:
    """The job once its version differs from ``If-None-Match``, or after ``wait`` seconds.

    It waits like a stream (subscribe, then read), with a watcher whose ``send`` only
    notes that something arrived: no task, nothing held but one event.
    """
    changed = asyncio.Event()

    async def note(message: MutableMapping[str, Any]) -> None:
        if message.get("body") != HEARTBEAT:
            changed.set()

    watcher = Watcher(note, close_on_terminal=True)
    async with state.hub.watch([keys.job_channel(TENANT, job_id)], watcher, "longpoll"):
        record = await state.backend.read(TENANT, job_id)
        if record is None or not _etag_matches(if_none_match, record.version) or record.terminal:
            return record
        watcher.mark_sent(Message.from_record(record, "progress"))
        watcher.release()
        with anyio.move_on_after(wait):
            await changed.wait()
        watcher.discard()
        return await state.backend.read(TENANT, job_id)
