"""``/v1/jobs``: create a job; the tenant's jobs as a JSON page, or many jobs on one stream."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Send

from gateway.backend.base import Backend
from gateway.contract import keys, script
from gateway.contract.record import Status, etag
from gateway.errors import InvalidUpdate, JobAlreadyExists
from gateway.web import params, problems, streams
from gateway.web.context import Context
from gateway.web.multistream import MAX_JOB_IDS, jobs_stream
from gateway.web.negotiation import Representation
from gateway.web.services import Services
from gateway.web.types import Reply

STATUSES = frozenset(status.value for status in Status)
DEFAULT_LIMIT, MAX_LIMIT = 50, 200
# The most index entries one page reads, looking for jobs that match (and live).
SCAN_ENTRIES = 10_000


async def _page(request: Request, backend: Backend, tenant: str, job_ids: list[str]) -> Response:
    """Newest change first; ``cursor`` is the seq to continue below (exclusive)."""
    statuses = set(request.query_params.getlist("status")) or None
    if statuses is not None and not statuses <= STATUSES:
        raise problems.invalid_parameter(f"status must be one of {', '.join(sorted(STATUSES))}")
    limit = params.whole_number(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    cursor = params.whole_number(request, "cursor", 2**63 - 1, 0, 2**63 - 1)
    bodies: list[bytes] = []
    next_cursor: int | None = None
    if job_ids:
        records = await backend.read_many(tenant, job_ids)
        found = sorted((r for r in records.values() if r is not None), key=lambda r: -r.seq)
        bodies = [r.body() for r in found if statuses is None or r.status in statuses]
    else:
        # A status filter, or jobs whose records expired, may skip many entries: read the
        # index in batches until the page is full, up to SCAN_ENTRIES of them; the dead
        # entries met on the way are taken out of the index.
        batch, scanned, dead = max(limit * 2, 100), 0, []
        while scanned < SCAN_ENTRIES:
            entries = await backend.newest_first(tenant, below=cursor, count=batch)
            scanned += len(entries)
            records = await backend.read_many(tenant, [job_id for job_id, _ in entries])
            for job_id, seq in entries:
                cursor = seq
                record = records[job_id]
                if record is None:
                    dead.append(job_id)
                    continue
                if statuses is not None and record.status not in statuses:
                    continue
                bodies.append(record.body())
                if len(bodies) == limit:
                    break
            if len(bodies) == limit or len(entries) < batch:
                break
        more = bool(await backend.newest_first(tenant, below=cursor, count=1))
        next_cursor = cursor if more else None
        if dead:
            await backend.forget(tenant, dead)
    body = b'{"jobs":[' + b",".join(bodies) + b'],"next_cursor":'
    body += (b'"%d"' % next_cursor if next_cursor is not None else b"null") + b"}"
    return Response(body, media_type="application/json",
                    headers={"Vary": "Accept", "Cache-Control": "no-cache"})


class JobsEndpoint:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def get(self, request: Request, context: Context, send: Send) -> Reply:
        representation = context.negotiated()
        services = self.services
        job_ids = params.job_ids(request, context, most=MAX_JOB_IDS)
        if representation is Representation.JSON:
            return await _page(request, services.backend, context.tenant, job_ids)
        if request.method == "HEAD":
            # One Redis round trip: an outage is a 503, as for GET.
            await services.backend.epoch(context.tenant)
            return streams.head(context, send)
        return jobs_stream(services, context, request.receive, send, job_ids=job_ids or None,
                           last_event_id=params.last_event_id(request, context))

    async def create(self, request: Request, context: Context, send: Send) -> Reply:
        """``POST /v1/jobs``: register a queued job (backend services)."""
        settings = self.services.settings
        body = params.json_object(await params.body(request, settings.max_body_bytes))
        unknown = set(body) - {"job_id", "conversion"}
        if unknown:
            raise problems.invalid_parameter(f"unknown field(s): {', '.join(sorted(unknown))}")
        job_id = body.get("job_id")
        if job_id is None:
            job_id = script.new_job_id(int(time.time() * 1000))
        elif not isinstance(job_id, str) or not keys.valid_job_id(job_id):
            raise problems.invalid_job_id(str(job_id))
        principal = context.principal
        if principal is not None and not principal.sees(job_id):
            raise problems.insufficient_scope(
                "this token is limited to some jobs: it creates only those, by job_id")
        conversion = body.get("conversion")
        if conversion is not None and not isinstance(conversion, dict):
            raise problems.invalid_parameter("conversion must be an object")
        try:
            change = await self.services.backend.change(
                "create", job_id, {"conversion": conversion or {}}, tenant=context.tenant,
                lifetimes=settings.lifetimes)
        except JobAlreadyExists:
            raise problems.already_exists(job_id) from None
        except InvalidUpdate as exc:
            raise problems.invalid_parameter(str(exc)) from None
        return JSONResponse(
            change.data,
            status_code=201,
            headers={"Location": f"/v1/jobs/{job_id}", "ETag": etag(change.event_id)},
        )
