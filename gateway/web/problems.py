"""Error answers: ``{"error": "<code>", "detail": "<human text>"}`` (docs/api.md, Errors).

Endpoints raise ApiError; the front (gateway.web.front) turns it into the response. Every
code is in CODES, with its status and what it means: ``/openapi.json`` publishes them.
"""

from __future__ import annotations

from starlette.responses import JSONResponse

VARY = {"Vary": "Accept"}

CODES: dict[str, tuple[int, str]] = {
    "request.malformed": (400, "the request could not be read as HTTP/1.1"),
    "request.invalid_job_id": (400, "a job id that breaks the rule (checked before Redis)"),
    "request.invalid_parameter": (400, "a query parameter or body field that is not "
                                       "allowed, out of range or of the wrong type"),
    "auth.invalid_credentials": (401, "no credential, a malformed one, an unknown or revoked "
                                      "key, an expired or tampered token"),
    "auth.insufficient_scope": (403, "a read credential on a change, a token limited to "
                                     "other jobs, or a token minting a token"),
    "request.not_found": (404, "no such URL"),
    "jobs.not_found": (404, "no such job (or another tenant's)"),
    "request.method_not_allowed": (405, "the URL does not take this method (see Allow)"),
    "request.not_acceptable": (406, "Accept names neither application/json nor "
                                    "text/event-stream"),
    "request.timeout": (408, "the request head did not arrive in time"),
    "jobs.already_exists": (409, "a job with this id exists"),
    "jobs.not_cancellable": (409, "the job already ended"),
    "jobs.not_deletable": (409, "the job is queued or running: cancel it first"),
    "jobs.not_ready": (409, "no output to download: the job did not complete, or its "
                            "worker gave no https URL"),
    "jobs.expired": (410, "the job's output expired"),
    "request.too_large": (413, "the body is over the limit"),
    "request.headers_too_large": (431, "the request line and headers are over the limit"),
    "limits.too_many_streams": (429, "the tenant has its most open streams on this gateway "
                                     "process (see Retry-After)"),
    "internal": (500, "an unexpected error (logged)"),
    "backend.unavailable": (503, "Redis did not answer in time (see Retry-After)"),
}


class ApiError(Exception):
    """Raised by an endpoint; the front answers with the error body and these headers."""

    def __init__(
        self, status: int, code: str, detail: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.code, "detail": self.detail},
                            status_code=self.status, headers=self.headers)


def invalid_job_id(job_id: str) -> ApiError:
    return ApiError(
        400,
        "request.invalid_job_id",
        f"{job_id[:140]!r} is not a job id: 1-128 characters of A-Z, a-z, 0-9, '_' and '-'",
    )


def invalid_parameter(detail: str) -> ApiError:
    return ApiError(400, "request.invalid_parameter", detail)


def too_large(limit: int) -> ApiError:
    return ApiError(413, "request.too_large", f"the body is limited to {limit} bytes")


def headers_too_large(limit: int) -> ApiError:
    return ApiError(431, "request.headers_too_large",
                    f"the request line and headers are limited to {limit} bytes")


def head_timeout(seconds: float) -> ApiError:
    return ApiError(408, "request.timeout",
                    f"the request head did not arrive within {seconds:g} s")


def not_found(job_id: str) -> ApiError:
    return ApiError(404, "jobs.not_found", f"no job {job_id!r}", VARY)


def already_exists(job_id: str) -> ApiError:
    return ApiError(409, "jobs.already_exists", f"job {job_id!r} already exists")


def not_cancellable(job_id: str, status: str | None) -> ApiError:
    return ApiError(409, "jobs.not_cancellable", f"job {job_id!r} already ended ({status})")


def not_deletable(job_id: str, status: str | None) -> ApiError:
    return ApiError(409, "jobs.not_deletable",
                    f"job {job_id!r} is {status}: cancel it first, then delete it")


def not_ready(detail: str) -> ApiError:
    """No output to download (yet, or at all)."""
    return ApiError(409, "jobs.not_ready", detail)


def expired(job_id: str) -> ApiError:
    return ApiError(410, "jobs.expired", f"the output of job {job_id!r} expired")


def invalid_credentials(detail: str, *, given: bool) -> ApiError:
    """401: no credential, or one that grants nothing (RFC 6750 section 3). The detail
    says why, and never what the credential was."""
    challenge = 'Bearer realm="gateway"'
    if given:
        challenge += ', error="invalid_token"'
    return ApiError(401, "auth.invalid_credentials", detail,
                    {"WWW-Authenticate": challenge, "Cache-Control": "no-store"})


def insufficient_scope(detail: str) -> ApiError:
    return ApiError(403, "auth.insufficient_scope", detail,
                    {"WWW-Authenticate": 'Bearer realm="gateway", error="insufficient_scope"'})


def too_many_streams(limit: int, retry_after: int) -> ApiError:
    return ApiError(429, "limits.too_many_streams",
                    f"this tenant has reached its limit of {limit} open streams on this gateway "
                    "process; try again later", {"Retry-After": str(retry_after)})


def malformed() -> ApiError:
    """What the HTTP parser could not read (before any route: gateway.server)."""
    return ApiError(400, "request.malformed", "the request could not be read as HTTP/1.1")


def no_route() -> ApiError:
    return ApiError(404, "request.not_found",
                    "nothing is served at this URL: the API is under /v1 (see /docs)")


def method_not_allowed(method: str, allow: str) -> ApiError:
    return ApiError(405, "request.method_not_allowed", f"{method} is not allowed here",
                    {"Allow": allow})


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


def internal() -> ApiError:
    return ApiError(500, "internal", "an unexpected error; it has been logged")
