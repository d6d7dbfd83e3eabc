"""The ASGI entry: reads of ``/v1/jobs`` and ``/v1/jobs/{id}`` go straight to their
endpoint, everything else to Starlette.

An open stream keeps every layer it passed through suspended for its whole life, and every
event it is sent goes back out through each layer's ``send`` wrapper. Starlette's stack
(error middleware, exception middleware, router, route) is about ten coroutine frames and
two send wrappers per stream: memory per idle stream and CPU per fanned-out event that buy
nothing once the response has started (DESIGN.md section 5; bench/RESULTS.md measures it).
The JSON reads of the same URLs are the polling clients' hot path, and the same layers
were a quarter of their cost. So these two URLs are matched here, by hand; the endpoints
are raw ASGI already, and the rest of the API keeps Starlette.
"""

from __future__ import annotations

import logging
from typing import Any

from gateway import problems
from gateway.state import RawEndpoint

log = logging.getLogger("gateway.front")

_JOBS = "/v1/jobs"
_READS = ("GET", "HEAD")
_ROUTE = "gateway.route"  # a scope key: what serves() matched, for __call__ to reuse


class Front:
    """Routes ``GET`` and ``HEAD`` of ``/v1/jobs`` and ``/v1/jobs/{id}`` directly."""

    def __init__(self, app: Any, *, job: RawEndpoint, jobs: RawEndpoint) -> None:
        self.app = app
        self.job = job
        self.jobs = jobs

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # The access log asked serves() already for most requests: its answer is reused.
        matched = scope.pop(_ROUTE) if _ROUTE in scope else self._match(scope)
        if matched is None:
            await self.app(scope, receive, send)
            return
        endpoint, job_id = matched
        if job_id is not None:
            scope["path_params"] = {"job_id": job_id}
        try:
            await endpoint(scope, receive, send)
        except Exception:
            # What Starlette's error middleware would have done: a 500 in the contract's
            # shape while nothing was sent yet (the server logs what it re-raises).
            if "status" in scope.setdefault("state", {}):
                raise
            log.exception("unexpected error before a response started")
            error = problems.ApiError(500, "internal", "an unexpected error; it has been logged")
            await problems.answer(scope, receive, send, error)

    def serves(self, scope: dict[str, Any]) -> bool:
        """Whether this request goes straight to a raw endpoint (see logs.AccessLog)."""
        matched = scope[_ROUTE] = self._match(scope)
        return matched is not None

    def _match(self, scope: dict[str, Any]) -> tuple[RawEndpoint, str | None] | None:
        if scope["method"] not in _READS:
            return None
        path: str = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):  # as Starlette's router sees it
            path = path[len(root):]
        if path == _JOBS:
            return self.jobs, None
        if path.startswith(_JOBS + "/"):
            job_id = path[len(_JOBS) + 1:]
            # The route /v1/jobs/{job_id}: one non-empty segment (the endpoint validates it).
            if job_id and "/" not in job_id:
                return self.job, job_id
        return None
