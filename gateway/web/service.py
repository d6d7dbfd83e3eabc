"""The gateway's own routes: liveness, readiness, metrics."""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Send

from gateway.web import problems
from gateway.web.context import Context
from gateway.web.services import Services
from gateway.web.types import Reply


class Service:
    def __init__(self, services: Services) -> None:
        self.services = services

    async def healthz(self, request: Request, context: Context, send: Send) -> Reply:
        return JSONResponse({"status": "ok"})

    async def readyz(self, request: Request, context: Context, send: Send) -> Reply:
        backend = self.services.backend
        # Until the keyring has read the API keys once, /v1 answers 503: not ready yet.
        if backend.listening and self.services.keyring.loaded and await backend.ping():
            return JSONResponse({"status": "ready"})
        raise problems.backend_unavailable()

    async def metrics(self, request: Request, context: Context, send: Send) -> Reply:
        return Response(self.services.metrics.render(), media_type=CONTENT_TYPE_LATEST)
