"""Error responses: ``{"error": "<code>", "detail": "<human text>"}`` (DESIGN.md section 2)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.responses import JSONResponse

from gateway.errors import BackendUnavailable

VARY = {"Vary": "Accept"}


class ApiError(Exception):
    """Raised by a route; the app answers with the error body and these headers."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return error_response(self.status, self.code, self.detail, self.headers)


def error_response(
    status: int, code: str, detail: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    return JSONResponse({"error": code, "detail": detail}, status_code=status, headers=headers)


def invalid_job_id(job_id: str) -> ApiError:
    return ApiError(
        400,
        "request.invalid_job_id",
        f"{job_id[:140]!r} is not a job id: 1-128 characters of A-Z, a-z, 0-9, '_' and '-'",
    )


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "jobs.not_found", f"no job {job_id!r}", VARY)


def not_acceptable() -> ApiError:
    return ApiError(
        406,
        "request.not_acceptable",
        "this resource is served as application/json or text/event-stream",
        VARY,
    )


def backend_unavailable(retry_after: int = 2) -> ApiError:
    return ApiError(
        503,
        "backend.unavailable",
        "the job store (Redis) is not reachable; try again shortly",
        {"Retry-After": str(retry_after)},
    )


async def answering_errors(
    scope: dict[str, Any], receive: Any, send: Any, handler: Callable[[], Awaitable[None]]
) -> None:
    """Run a raw ASGI endpoint's handler; an ApiError or a Redis outage becomes its answer.

    Both can only come before a response starts: streams touch Redis before they open.
    """
    try:
        await handler()
    except ApiError as exc:
        await answer(scope, receive, send, exc)
    except BackendUnavailable:
        await answer(scope, receive, send, backend_unavailable())


async def answer(scope: dict[str, Any], receive: Any, send: Any, error: ApiError) -> None:
    """Send ``error`` as the response, noting its status for the access log.

    A stream request's ``send`` is not wrapped by the access log (gateway.logs), so its
    error response carries the request id itself.
    """
    state = scope.setdefault("state", {})
    state["status"] = error.status
    headers = error.headers
    if state.get("stream") and state.get("request_id"):
        headers = {**headers, "X-Request-ID": state["request_id"]}
    await error_response(error.status, error.code, error.detail, headers)(scope, receive, send)
