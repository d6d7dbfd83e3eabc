"""Request parameters, checked: the job id rule, numbers in range, resume positions.

Every job id a request names passes ``keys.valid_job_id`` here before any Redis command
(docs/api.md, The job snapshot), and the credential's job list where it has one (a 404 for any
other job, as for one that does not exist); a bad parameter is a 400 that names it.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request

from gateway.contract import keys
from gateway.contract.events import EventId
from gateway.web import problems
from gateway.web.context import Context

# docs/api.md: the longest a long-poll (Prefer: wait=N) is held.
MAX_WAIT_SECONDS = 60


def job_id(request: Request, context: Context) -> str:
    """The ``{job_id}`` of the path."""
    value: str = request.path_params["job_id"]
    if not keys.valid_job_id(value):
        raise problems.invalid_job_id(value)
    context.sees(value)
    return value


def job_ids(request: Request, context: Context, *, most: int) -> list[str]:
    """The ``job_id`` query parameters, in order and once each (at most ``most``). A
    credential limited to some jobs must name them: it cannot see the whole tenant."""
    given = request.query_params.getlist("job_id")
    if len(given) > most:  # counted as sent: a repeated id counts each time
        raise problems.invalid_parameter(
            f"at most {most} job_id parameters on one request ({len(given)} given)")
    ids = list(dict.fromkeys(given))
    for value in ids:
        if not keys.valid_job_id(value):
            raise problems.invalid_job_id(value)
    for value in ids:
        context.sees(value)
    if not ids and context.principal is not None and context.principal.job_ids is not None:
        raise problems.insufficient_scope(
            "this token is limited to some jobs: name them with job_id")
    return ids


def whole_number(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = low - 1
    if not low <= value <= high:
        raise problems.invalid_parameter(f"{name} must be a whole number from {low} to {high}")
    return value


async def body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (before reading it whole)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise problems.too_large(limit)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise problems.too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


class _Inexact(Exception):
    pass


def _exact_int(text: str) -> int:
    """A whole number the update script (Lua: doubles) reads as it was written."""
    value = int(text)
    if abs(value) > 2**53:
        raise _Inexact(text[:40])
    return value


def json_object(raw: bytes) -> dict[str, Any]:
    """A body that must be a JSON object (or no body at all: an empty object)."""
    if not raw:
        return {}
    try:
        value = json.loads(raw, parse_int=_exact_int)
    except _Inexact as exc:
        raise problems.invalid_parameter(
            f"{exc} is past 2^53: JSON numbers are exact only up to there") from None
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python goes
        raise problems.invalid_parameter("the body is not JSON") from None
    if not isinstance(value, dict):
        raise problems.invalid_parameter("the body must be a JSON object")
    return value


def last_event_id(request: Request, context: Context) -> EventId | None:
    """The position to resume from: the header (what EventSource sends) wins over the
    ``last_event_id`` query parameter (for a first connection); a malformed one is None."""
    raw = context.last_event_id
    if not raw and request.scope.get("query_string"):  # most streams come without a query
        raw = request.query_params.get("last_event_id")
    return EventId.parse(raw)


def preferred_wait(prefer: str | None) -> int | None:
    """``Prefer: wait=N`` (RFC 7240), capped at MAX_WAIT_SECONDS; None when absent."""
    for preference in (prefer or "").split(","):
        name, _, value = preference.strip().partition("=")
        if name.strip().lower() == "wait":
            try:
                return min(max(int(value.strip()), 0), MAX_WAIT_SECONDS)
            except ValueError:
                return None
    return None
