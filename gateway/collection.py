"""``GET /v1/jobs``: the tenant's jobs as a JSON page, or many jobs on one event stream."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from gateway import problems
from gateway.backend.base import Backend
from gateway.contract import keys
from gateway.contract.record import Status
from gateway.multistream import MAX_JOB_IDS, jobs_stream
from gateway.negotiation import Representation, last_event_id, requested
from gateway.state import TENANT, RawEndpoint
from gateway.streams import stream_head

STATUSES = frozenset(status.value for status in Status)
DEFAULT_LIMIT, MAX_LIMIT = 50, 200


def _job_ids(request: Request) -> list[str]:
    ids = list(dict.fromkeys(request.query_params.getlist("job_id")))  # in order, once each
    for job_id in ids:
        if not keys.valid_job_id(job_id):
            raise problems.invalid_job_id(job_id)
    if len(ids) > MAX_JOB_IDS:
        raise problems.ApiError(
            400, "request.invalid_parameter",
            f"at most {MAX_JOB_IDS} job_id parameters on one request ({len(ids)} given)",
        )
    return ids


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise problems.ApiError(
            400, "request.invalid_parameter", f"{name} must be a whole number from {low} to {high}"
        )
    return value


async def _page(request: Request, store: Backend, tenant: str, job_ids: list[str]) -> Response:
    """Newest change first; ``cursor`` is the seq to continue below (exclusive)."""
    status = request.query_params.get("status")
    if status is not None and status not in STATUSES:
        raise problems.ApiError(400, "request.invalid_parameter",
                                f"status must be one of {', '.join(sorted(STATUSES))}")
    limit = _int_param(request, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    cursor = _int_param(request, "cursor", 2**63 - 1, 0, 2**63 - 1)
    bodies: list[bytes] = []
    next_cursor: int | None = None
    if job_ids:
        records = await store.read_many(tenant, job_ids)
        found = sorted((r for r in records.values() if r is not None), key=lambda r: -r.seq)
        bodies = [r.body() for r in found if status is None or r.status == status]
    else:
        # A status filter may skip many entries: read a bounded number of index pages.
        for _ in range(20):
            entries = await store.newest_first(tenant, below=cursor, count=limit * 2)
            records = await store.read_many(tenant, [job_id for job_id, _ in entries])
            for job_id, seq in entries:
                cursor = seq
                record = records[job_id]
                if record is None or (status is not None and record.status != status):
                    continue
                bodies.append(record.body())
                if len(bodies) == limit:
                    break
            if len(bodies) == limit or len(entries) < limit * 2:
                break
        more = bool(await store.newest_first(tenant, below=cursor, count=1))
        next_cursor = cursor if more else None
    body = b'{"jobs":[' + b",".join(bodies) + b'],"next_cursor":'
    body += (b'"%d"' % next_cursor if next_cursor is not None else b"null") + b"}"
    return Response(body, media_type="application/json",
                    headers={"Vary": "Accept", "Cache-Control": "no-cache"})


class JobsEndpoint(RawEndpoint):
    """``GET /v1/jobs`` (``POST`` is the create route, matched before this one)."""

    async def handle(self, request: Request, send: Any) -> Coroutine[Any, Any, None] | None:
        state = self.state
        representation = requested(request, "GET, HEAD, POST")
        job_ids = _job_ids(request)
        if representation is Representation.JSON:
            response = await _page(request, state.backend, TENANT, job_ids)
            await response(request.scope, request.receive, send)
            return None
        if request.method == "HEAD":
            await state.backend.epoch(TENANT)  # one round trip: an outage is a 503, as for GET
            await stream_head(send, request.scope.setdefault("state", {}))
            return None
        return jobs_stream(request.receive, send, hub=state.hub, backend=state.backend,
                           tenant=TENANT, job_ids=job_ids or None,
                           last_event_id=last_event_id(request),
                           retry_ms=state.settings.retry_ms,
                           state=request.scope.setdefault("state", {}))
