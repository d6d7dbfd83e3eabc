"""What users do to a job besides reading it: cancel, delete, download (DESIGN.md s. 2).

Cancel and delete run the update script like any worker change, so their watchers see
them at once (a ``status`` or ``deleted`` event) and the transition rules stay in one
place.
"""

from __future__ import annotations

import json
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response

from gateway import problems
from gateway.contract import keys
from gateway.contract import script as changes
from gateway.errors import InvalidTransition, JobNotFound
from gateway.state import TENANT, AppState


def _job_id(request: Request) -> str:
    job_id: str = request.path_params["job_id"]
    if not keys.valid_job_id(job_id):
        raise problems.invalid_job_id(job_id)
    return job_id


async def _change(request: Request, op: str, job_id: str) -> changes.Change:
    state: AppState = request.app.state.gateway
    try:
        return await state.backend.change(op, job_id, {}, tenant=TENANT,
                                          retention_seconds=state.settings.retention_seconds,
                                          output_ttl_seconds=state.settings.output_ttl_seconds)
    except JobNotFound:
        raise problems.not_found(job_id) from None


async def cancel_job(request: Request) -> Response:
    """A queued job is canceled at once; a running one gets ``cancel_requested``."""
    job_id = _job_id(request)
    try:
        change = await _change(request, "request_cancel", job_id)
    except InvalidTransition as exc:
        raise problems.ApiError(409, "jobs.not_cancellable",
                                f"job {job_id!r} already ended ({exc.status})") from None
    return JSONResponse(change.data, status_code=202, headers={"Location": f"/v1/jobs/{job_id}"})


async def delete_job(request: Request) -> Response:
    job_id = _job_id(request)
    try:
        await _change(request, "delete", job_id)
    except InvalidTransition as exc:
        raise problems.ApiError(
            409, "jobs.not_deletable",
            f"job {job_id!r} is {exc.status}: cancel it first, then delete it") from None
    return Response(status_code=204)


async def download(request: Request) -> Response:
    """307 to the output's presigned URL, while it lives."""
    job_id = _job_id(request)
    state: AppState = request.app.state.gateway
    record = await state.backend.read(TENANT, job_id)
    if record is None:
        raise problems.not_found(job_id)
    if record.status != "completed":
        raise problems.ApiError(409, "jobs.not_ready",
                                f"job {job_id!r} is {record.status}: there is no output")
    if record.output_expires is not None and time.time() >= record.output_expires:
        raise problems.ApiError(410, "jobs.expired", f"the output of job {job_id!r} expired")
    output = json.loads(record.snapshot).get("output") or {}
    if not output.get("file_url"):
        raise problems.ApiError(409, "jobs.not_ready",
                                f"the worker gave no file_url for job {job_id!r}")
    return RedirectResponse(output["file_url"], status_code=307,
                            headers={"Cache-Control": "no-store"})
