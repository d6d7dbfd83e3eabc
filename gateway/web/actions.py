"""What users do to a job besides reading it: cancel, delete, download (docs/api.md).

Cancel and delete run the update script like any worker change, so their watchers see
them at once (a ``status`` or ``deleted`` event) and the transition rules stay in one
place.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.types import Send

from gateway.contract.record import Status
from gateway.contract.script import Change
from gateway.errors import InvalidTransition, JobNotFound
from gateway.web import params, problems
from gateway.web.context import Context
from gateway.web.services import Services
from gateway.web.types import Reply


class Actions:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def _change(self, context: Context, op: str, job_id: str) -> Change:
        settings = self.services.settings
        try:
            return await self.services.backend.change(
                op, job_id, {}, tenant=context.tenant, lifetimes=settings.lifetimes)
        except JobNotFound:
            raise problems.not_found(job_id) from None

    async def cancel(self, request: Request, context: Context, send: Send) -> Reply:
        """A queued job is canceled at once; a running one gets ``cancel_requested``."""
        job_id = params.job_id(request, context)
        try:
            change = await self._change(context, "request_cancel", job_id)
        except InvalidTransition as exc:
            raise problems.not_cancellable(job_id, exc.status) from None
        return JSONResponse(change.data, status_code=202,
                            headers={"Location": f"/v1/jobs/{job_id}"})

    async def delete(self, request: Request, context: Context, send: Send) -> Reply:
        job_id = params.job_id(request, context)
        try:
            await self._change(context, "delete", job_id)
        except InvalidTransition as exc:
            raise problems.not_deletable(job_id, exc.status) from None
        return Response(status_code=204)

    async def download(self, request: Request, context: Context, send: Send) -> Reply:
        """307 to the output's presigned URL, while it lives."""
        job_id = params.job_id(request, context)
        record = await self.services.backend.read(context.tenant, job_id)
        if record is None:
            raise problems.not_found(job_id)
        if record.status != Status.COMPLETED:
            raise problems.not_ready(f"job {job_id!r} is {record.status}: there is no output")
        if record.output_expired(time.time()):
            raise problems.expired(job_id)
        output = json.loads(record.snapshot).get("output") or {}
        url = output.get("file_url")
        if not url:
            raise problems.not_ready(f"the worker gave no file_url for job {job_id!r}")
        if not self._redirectable(url):
            raise problems.not_ready(f"the output of job {job_id!r} has no https URL to go to")
        return RedirectResponse(url, status_code=307, headers={"Cache-Control": "no-store"})

    def _redirectable(self, url: str) -> bool:
        """An absolute https URL (http too when GATEWAY_ALLOW_HTTP_DOWNLOADS is set): the
        update script checks it at completion, and this again, for records written before
        it did or by hand: a redirect is never to javascript:, data:, file: or another
        scheme, nor scheme-relative."""
        parts = urlsplit(url)
        schemes = ("https", "http") if self.services.settings.allow_http_downloads else (
            "https",)
        return (parts.scheme.lower() in schemes and bool(parts.hostname)
                and not any(c.isspace() or ord(c) < 32 for c in url))
