"""The API as OpenAPI 3.1: built from the route table, served at ``/openapi.json``.

The paths and methods come from the route table itself (gateway.web.routes): a route or a
method without its operation here stops the build, and so does an operation here that no
route serves, so the document cannot drift from what is served. The schemas are the
contract's (gateway.contract.schema), the error codes problems.CODES.

Event streams are described as a ``text/event-stream`` response of each URL that serves
one, with ``x-sse-events``: each event's name, what its ``data`` holds (a schema of the
components) and when it comes; ``x-itemSchema`` says the same as OpenAPI 3.2's
``itemSchema`` does, under an ``x-`` name because 3.1 has no such field.
"""

from __future__ import annotations

import json
from typing import Any, Protocol, cast

from starlette.routing import Route

from gateway.contract import schema
from gateway.web import problems

Doc = dict[str, Any]

_TITLE = "Job status gateway"
_DESCRIPTION = (
    "One URL per file-conversion job: `GET /v1/jobs/{job_id}` answers with the job's JSON "
    "snapshot, or, when `Accept` asks for `text/event-stream`, with a live Server-Sent "
    "Events stream. Workers report changes into Redis; this API reads, follows, creates, "
    "cancels and deletes jobs.\n\n"
    "**Negotiation** (`Accept`): `application/json`, `application/*`, `*/*` or none → JSON; "
    "`text/event-stream` (or `text/*`, or `application/event-stream`) → a stream; with both "
    "acceptable the higher q wins and a tie goes to JSON; neither → 406. `HEAD` is answered "
    "wherever `GET` is (for a stream: the status and headers a `GET` would start with), and "
    "`OPTIONS` everywhere (CORS preflights).\n\n"
    "**Auth**: with no API key in Redis, a gateway on a loopback address serves `/v1` "
    "without a credential. Once a key exists every `/v1` request needs one: an API key "
    "(`Authorization: Bearer` or `X-Api-Key`) or a token from `POST /v1/tokens` "
    "(`Authorization: Bearer`, `?access_token=` or the `gateway_token` cookie; in the URL "
    "or a cookie, for `GET` and `HEAD` only).\n\n"
    "**Errors**: every error answer, on every URL, is `{\"error\": code, \"detail\": "
    "text}`; the codes are listed with the `Error` schema. A body over the limit (64 KiB "
    "by default) is 413 on any URL. Every answer of a request that was read carries "
    "`X-Request-ID` (the request's, or one made); the answers to a request that could not "
    "be read (400 `request.malformed`, 408, 431) close the connection and carry none.")

_VERSION = "1"


# -- pieces ----------------------------------------------------------------------------


def _ref(name: str) -> Doc:
    return {"$ref": f"#/components/schemas/{name}"}


def _header(description: str, schema: Doc | None = None) -> Doc:
    return {"description": description, "schema": schema or {"type": "string"}}


_HEADERS: dict[str, Doc] = {
    "X-Request-ID": _header("The request's own X-Request-ID, or one made for it."),
    "ETag": _header('`"<epoch>-<seq>"` of the job\'s last change (`-x` added once its output '
                    "expired): it changes whenever the body does."),
    "Vary": _header("`Accept`: one URL, two representations."),
    "Cache-Control": _header("`no-cache` (`no-store` on tokens and redirects)."),
    "Retry-After": _header("Seconds: the polite polling interval of a job not ended (2); "
                           "on 429 and 503, when to try again.",
                           {"type": "string", "pattern": "^[0-9]+$"}),
    "Preference-Applied": _header("`wait=N`: the long-poll was held up to N seconds."),
    "Location": _header("The job's URL."),
    "Allow": _header("The methods this URL takes."),
    "WWW-Authenticate": _header('`Bearer realm="gateway"`, with `error="invalid_token"` or '
                                '`error="insufficient_scope"` when a credential was sent.'),
}


def _headers(*names: str) -> Doc:
    return {"headers": {name: {"$ref": f"#/components/headers/{name}"}
                        for name in ("X-Request-ID", *names)}}


# The dashboard's files: an ETag of their content (not a job's change id).
_PAGE_HEADERS: Doc = {"headers": {
    **_headers()["headers"],
    "ETag": {"description": "Of the file's content.", "schema": {"type": "string"}}}}


def _error(status: int, *, headers: tuple[str, ...] = (), also: str = "") -> Doc:
    codes = [code for code, (code_status, _) in problems.CODES.items() if code_status == status]
    lines = "; ".join(f"`{code}`: {problems.CODES[code][1]}" for code in codes)
    return {
        "description": f"{lines}{also}",
        **_headers(*headers),
        "content": {"application/json": {"schema": {
            "allOf": [_ref("Error"), {"properties": {"error": {"enum": codes}}}]}}},
    }


def _json(description: str, schema_: Doc, *headers: str) -> Doc:
    return {"description": description, **_headers(*headers),
            "content": {"application/json": {"schema": schema_}}}


def _stream(events: tuple[str, ...]) -> Doc:
    """A ``text/event-stream`` media type: the events it carries and their data."""
    items = [{"type": "object", "required": ["event", "data"],
              "properties": {"event": {"const": name}, "id": {"type": "string"},
                             "data": {"contentMediaType": "application/json",
                                      "contentSchema": _ref(schema.EVENTS[name][0])}}}
             for name in events]
    return {
        "schema": {"type": "string",
                   "description": "Server-Sent Events (the WHATWG HTML standard's "
                                  "`text/event-stream`), UTF-8, one event per block."},
        "x-itemSchema": {"oneOf": items},  # OpenAPI 3.2 names it itemSchema
        "x-sse-events": [{"event": name, "data": _ref(schema.EVENTS[name][0]),
                          "when": schema.EVENTS[name][1]} for name in events],
    }


_STREAM_RULES = (
    "Headers `Content-Type: text/event-stream`, `Cache-Control: no-cache`, "
    "`X-Accel-Buffering: no`; the first block carries `retry:` (3000 ms unless the gateway's "
    "GATEWAY_RETRY_MS says otherwise); `data` is always one "
    "line of JSON. Ids are `<epoch>-<seq>`: resume with `Last-Event-ID` (what EventSource "
    "sends) or `?last_event_id=`. A comment `: keepalive` comes every 15 s by default. A "
    "slow client gets the newest snapshot of each job, never an older one after a newer. "
    "On shutdown every stream gets a last `retry:` (jittered) and is closed.")

_JOB_ID_PATH = {"name": "job_id", "in": "path", "required": True, "schema": _ref("JobId")}
_LAST_EVENT_ID_HEADER = {
    "name": "Last-Event-ID", "in": "header", "required": False,
    "description": "Streams: the last event id the client saw (EventSource sends it on a "
                   "reconnect). Behind → the current snapshot as `progress` (or `status` if "
                   "the status moved); up to date → nothing until the next change; at the "
                   "terminal change → 204; malformed, from another epoch or past the job's "
                   "last change → a fresh `snapshot`.",
    "schema": {"type": "string"}}
_LAST_EVENT_ID_QUERY = {
    "name": "last_event_id", "in": "query", "required": False,
    "description": "As `Last-Event-ID`, for a first connection (the header wins).",
    "schema": {"type": "string"}}

_V1_ERRORS = {"401": _error(401, headers=("WWW-Authenticate",)),
              "503": _error(503, headers=("Retry-After",))}


# -- the operations, by route and method ----------------------------------------------


_OPERATIONS: dict[tuple[str, str], Doc] = {
    ("/v1/jobs/{job_id}", "GET"): {
        "operationId": "getJob",
        "tags": ["jobs"],
        "summary": "A job: its JSON snapshot, a long-poll, or its event stream",
        "description": (
            "By `Accept`: the JSON snapshot, or the job's event stream. JSON: with "
            "`If-None-Match` set to the ETag, 304 while it is unchanged; with "
            "`If-None-Match` and `Prefer: wait=N` (N up to 60), a long-poll held until the "
            "job changes or N seconds pass (a job that ended answers at once).\n\n"
            "Stream: `snapshot` first, then `progress` and `status` as the job changes; "
            "the stream ends after the terminal `status`. " + _STREAM_RULES),
        "parameters": [
            _JOB_ID_PATH,
            {"name": "If-None-Match", "in": "header", "required": False,
             "description": "JSON: an ETag from an earlier answer; 304 while it matches.",
             "schema": {"type": "string"}},
            {"name": "Prefer", "in": "header", "required": False,
             "description": "JSON, with If-None-Match: `wait=N` (seconds, capped at 60) "
                            "makes a long-poll; other preferences are ignored (RFC 7240).",
             "schema": {"type": "string", "examples": ["wait=30"]}},
            _LAST_EVENT_ID_HEADER,
            _LAST_EVENT_ID_QUERY,
        ],
        "responses": {
            "200": {"description": "The snapshot, or the event stream.",
                    **_headers("ETag", "Vary", "Cache-Control", "Retry-After",
                               "Preference-Applied"),
                    "content": {"application/json": {"schema": _ref("Snapshot")},
                                "text/event-stream": _stream(
                                    ("snapshot", "progress", "status"))}},
            "204": {"description": "Stream: the client has already seen the job's terminal "
                                   "change (EventSource stops for good).",
                    **_headers()},
            "304": {"description": "JSON: unchanged since the ETag in If-None-Match.",
                    **_headers("ETag", "Vary", "Cache-Control", "Retry-After",
                               "Preference-Applied")},
            "400": _error(400),
            **_V1_ERRORS,
            "404": _error(404, also=" (including a job a token does not cover)"),
            "406": _error(406),
            "429": _error(429, headers=("Retry-After",)),
        },
    },
    ("/v1/jobs/{job_id}", "DELETE"): {
        "operationId": "deleteJob",
        "tags": ["jobs"],
        "summary": "Delete a job that ended",
        "description": "The record goes at once; multi-job streams get a `deleted` event. "
                       "A queued or running job is not deleted: cancel it first.",
        "parameters": [_JOB_ID_PATH],
        "responses": {"204": {"description": "Deleted.", **_headers()},
                      "400": _error(400), **_V1_ERRORS, "403": _error(403),
                      "404": _error(404), "409": _error(409)},
    },
    ("/v1/jobs", "GET"): {
        "operationId": "listJobs",
        "tags": ["jobs"],
        "summary": "The tenant's jobs as a JSON page, or many jobs on one event stream",
        "description": (
            "JSON: a page of jobs, newest change first; follow `next_cursor` for the next "
            "page (null on the last). With `job_id`, those jobs (any that exist).\n\n"
            "Stream: with `job_id` (1-100), those jobs; without, every job of the tenant. It "
            "opens with the snapshots of the named jobs (or of the tenant's jobs not yet "
            "ended) in seq order, then carries their events, and stays open after jobs "
            "end. A resume with `Last-Event-ID` sends exactly the jobs changed since as "
            "`snapshot` events, a job deleted meanwhile as `deleted`. " + _STREAM_RULES),
        "parameters": [
            {"name": "job_id", "in": "query", "required": False, "style": "form",
             "explode": True, "description": "Jobs to read or follow (repeat it).",
             "schema": {"type": "array", "items": _ref("JobId"), "maxItems": 100}},
            {"name": "status", "in": "query", "required": False, "style": "form",
             "explode": True, "description": "JSON: only jobs in these statuses (repeat it).",
             "schema": {"type": "array", "items": _ref("Status")}},
            {"name": "limit", "in": "query", "required": False,
             "description": "JSON: jobs per page.",
             "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}},
            {"name": "cursor", "in": "query", "required": False,
             "description": "JSON: the `next_cursor` of the page before, as it was "
                            "given (opaque).",
             "schema": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}},
            _LAST_EVENT_ID_HEADER,
            _LAST_EVENT_ID_QUERY,
        ],
        "responses": {
            "200": {"description": "A page of jobs, or the event stream.",
                    **_headers("Vary", "Cache-Control"),
                    "content": {"application/json": {"schema": _ref("JobList")},
                                "text/event-stream": _stream(tuple(schema.EVENTS))}},
            "400": _error(400), **_V1_ERRORS,
            "403": _error(403, also=" (a token limited to some jobs must name them)"),
            "406": _error(406), "429": _error(429, headers=("Retry-After",)),
        },
    },
    ("/v1/jobs", "POST"): {
        "operationId": "createJob",
        "tags": ["jobs"],
        "summary": "Register a queued job",
        "description": "For backend services that create jobs before a worker takes them "
                       "(workers may also create them themselves). Without `job_id`, a new "
                       "ULID is made.",
        "requestBody": {"required": False, "content": {"application/json": {
            "schema": _ref("NewJob")}}},
        "responses": {
            "201": {**_json("The new job's snapshot.", _ref("Snapshot"), "Location", "ETag"),
                    "links": {
                        "GetJob": {"operationId": "getJob",
                                   "parameters": {"job_id": "$response.body#/job_id"}},
                        "CancelJob": {"operationId": "cancelJob",
                                      "parameters": {"job_id": "$response.body#/job_id"}},
                        "DeleteJob": {"operationId": "deleteJob",
                                      "parameters": {"job_id": "$response.body#/job_id"}}}},
            "400": _error(400), **_V1_ERRORS, "403": _error(403), "409": _error(409),
            "413": _error(413),
        },
    },
    ("/v1/jobs/{job_id}/cancel", "POST"): {
        "operationId": "cancelJob",
        "tags": ["jobs"],
        "summary": "Cancel a job",
        "description": "A queued job becomes `canceled` at once; a running one gets "
                       "`cancel_requested: true`, and its worker decides when to stop.",
        "parameters": [_JOB_ID_PATH],
        "responses": {
            "202": {**_json("The job's snapshot after the request.", _ref("Snapshot"),
                            "Location"),
                    "links": {"GetJob": {"operationId": "getJob",
                                         "parameters": {"job_id": "$response.body#/job_id"}},
                              "DeleteJob": {"operationId": "deleteJob",
                                            "parameters": {
                                                "job_id": "$response.body#/job_id"}}}},
            "400": _error(400), **_V1_ERRORS, "403": _error(403), "404": _error(404),
            "409": _error(409), "413": _error(413),
        },
    },
    ("/v1/jobs/{job_id}/download", "GET"): {
        "operationId": "downloadJobOutput",
        "tags": ["jobs"],
        "summary": "Go to a completed job's output",
        "description": "307 to `output.file_url` (an absolute https URL; http too where the "
                       "gateway allows it) while the output lives.",
        "parameters": [_JOB_ID_PATH],
        "responses": {
            "307": {"description": "To the output.", **_headers("Location", "Cache-Control")},
            "400": _error(400), **_V1_ERRORS, "404": _error(404), "409": _error(409),
            "410": _error(410),
        },
    },
    ("/v1/tokens", "POST"): {
        "operationId": "createToken",
        "tags": ["auth"],
        "summary": "Mint a short-lived token for a browser page",
        "description": "With an API key of scope write. The token reads (or, with scope "
                       "write, also changes) the key's tenant's jobs, or only `job_ids`, "
                       "for `ttl_seconds`. EventSource cannot send headers: a page passes "
                       "it as `?access_token=`.",
        "requestBody": {"required": False, "content": {"application/json": {
            "schema": _ref("NewToken")}}},
        "responses": {
            "201": _json("The token.", _ref("Token"), "Cache-Control"),
            "400": _error(400), **_V1_ERRORS, "403": _error(403), "413": _error(413),
        },
    },
    ("/healthz", "GET"): {
        "operationId": "healthz", "tags": ["service"], "security": [],
        "summary": "Liveness: 200 while the process runs",
        "responses": {"200": _json("Alive.", _ref("Health"))},
    },
    ("/readyz", "GET"): {
        "operationId": "readyz", "tags": ["service"], "security": [],
        "summary": "Readiness: Redis answers and the pub/sub connection is up",
        "responses": {"200": _json("Ready.", _ref("Health")),
                      "503": _error(503, headers=("Retry-After",))},
    },
    ("/metrics", "GET"): {
        "operationId": "metrics", "tags": ["service"], "security": [],
        "summary": "Prometheus metrics (keep it on an internal port or behind the proxy)",
        "responses": {"200": {"description": "The Prometheus text format.", **_headers(),
                              "content": {"text/plain": {"schema": {"type": "string"}}}}},
    },
    ("/openapi.json", "GET"): {
        "operationId": "openapi", "tags": ["service"], "security": [],
        "summary": "This document",
        "responses": {"200": _json("OpenAPI 3.1.", {"type": "object"})},
    },
    ("/", "GET"): {
        "operationId": "dashboard", "tags": ["service"], "security": [],
        "summary": "The dashboard: the tenant's jobs, live, in a browser (its credential "
                   "goes in the link's fragment, `/#token=...`)",
        "responses": {"200": {"description": "HTML.", **_PAGE_HEADERS,
                              "content": {"text/html": {"schema": {"type": "string"}}}},
                      "304": {"description": "Unchanged since the `ETag` given in "
                                             "`If-None-Match`.", **_PAGE_HEADERS}},
    },
    ("/docs", "GET"): {
        "operationId": "docs", "tags": ["service"], "security": [],
        "summary": "This document as a page to read (Swagger UI, served from the package)",
        "responses": {"200": {"description": "HTML.", **_headers(),
                              "content": {"text/html": {"schema": {"type": "string"}}}}},
    },
}

_ERROR: Doc = {
    "type": "object",
    "required": ["error", "detail"],
    "properties": {
        "error": {"type": "string", "enum": list(problems.CODES),
                  "description": "; ".join(f"`{code}` ({status}): {meaning}"
                                           for code, (status, meaning)
                                           in problems.CODES.items())},
        "detail": {"type": "string", "description": "For a person; never a credential."},
    },
    "additionalProperties": False,
}

_COMPONENTS: Doc = {
    "schemas": {
        "JobId": schema.JOB_ID,
        "Status": schema.STATUS,
        "Snapshot": schema.SNAPSHOT,
        "Conversion": schema.CONVERSION,
        "Deleted": schema.DELETED,
        "Unknown": schema.UNKNOWN,
        "Reset": schema.RESET,
        "Error": _ERROR,
        "JobList": {"type": "object", "required": ["jobs", "next_cursor"],
                    "properties": {"jobs": {"type": "array", "items": _ref("Snapshot")},
                                   "next_cursor": {
                                       "anyOf": [{"type": "string", "pattern": "^[0-9]+$"},
                                                 {"type": "null"}],
                                       "description": "Opaque: pass it back as `cursor` "
                                                      "for the next page; null on the "
                                                      "last."}},
                    "additionalProperties": False},
        "NewJob": {"type": "object",
                   "properties": {
                       "job_id": {"anyOf": [_ref("JobId"), {"type": "null"}],
                                  "description": "Omitted or null: a new ULID is made."},
                       "conversion": {"anyOf": [_ref("Conversion"), {"type": "null"}]}},
                   "additionalProperties": False},
        "NewToken": {"type": "object",
                     "properties": {
                         "scope": {"type": "string", "enum": ["read", "write"],
                                   "default": "read"},
                         "job_ids": {"anyOf": [
                             {"type": "array", "items": _ref("JobId"), "minItems": 1,
                              "maxItems": 100}, {"type": "null"}],
                             "description": "Only these jobs; omitted or null: every job of "
                                            "the tenant."},
                         "ttl_seconds": {"type": "integer", "minimum": 1, "maximum": 86400,
                                         "default": 300}},
                     "additionalProperties": False},
        "Token": {"type": "object", "required": ["token", "expires_at"],
                  "properties": {"token": {"type": "string"},
                                 "expires_at": {"type": "string", "format": "date-time"}},
                  "additionalProperties": False},
        "Health": {"type": "object", "required": ["status"],
                   "properties": {"status": {"type": "string", "enum": ["ok", "ready"]}}},
    },
    "headers": _HEADERS,
    "securitySchemes": {
        "apiKey": {"type": "http", "scheme": "bearer",
                   "description": "An API key (`gateway keys create`) or a token."},
        "apiKeyHeader": {"type": "apiKey", "in": "header", "name": "X-Api-Key",
                         "description": "An API key, the vendor-style way."},
        "accessToken": {"type": "apiKey", "in": "query", "name": "access_token",
                        "description": "A token (never a key), for GET and HEAD: what "
                                       "EventSource can send."},
        "tokenCookie": {"type": "apiKey", "in": "cookie", "name": "gateway_token",
                        "description": "A token (never a key), for GET and HEAD."},
    },
}

# Any one of them; or none while the gateway runs without keys (loopback, no key made).
_SECURITY: list[dict[str, list[str]]] = [
    {"apiKey": []}, {"apiKeyHeader": []}, {"accessToken": []}, {"tokenCookie": []}, {}]


class _Resource(Protocol):
    """What the document reads of a route's endpoint (gateway.web.routes.Resource)."""

    described: bool

    @property
    def methods(self) -> tuple[str, ...]: ...


def document(table: list[Route]) -> Doc:
    """The OpenAPI 3.1 document of ``table``; ValueError if they disagree."""
    paths: dict[str, Doc] = {}
    served: set[tuple[str, str]] = set()
    for route in table:
        resource = cast(_Resource, route.endpoint)
        if not resource.described:
            continue
        for method in resource.methods:
            if method in ("HEAD", "OPTIONS"):
                continue  # HEAD wherever GET is, OPTIONS everywhere: the description says
            key = (route.path, method)
            if key not in _OPERATIONS:
                raise ValueError(f"{method} {route.path} is served and not described")
            served.add(key)
            # A body over the limit is refused before any route's own checks (the guard).
            operation = {**_OPERATIONS[key], "responses": {
                "413": _error(413), **_OPERATIONS[key]["responses"]}}
            paths.setdefault(route.path, {})[method.lower()] = operation
    unserved = set(_OPERATIONS) - served
    if unserved:
        raise ValueError(f"described and not served: {sorted(unserved)}")
    return {
        "openapi": "3.1.0",
        "info": {"title": _TITLE, "version": _VERSION, "description": _DESCRIPTION},
        "jsonSchemaDialect": "https://spec.openapis.org/oas/3.1/dialect/base",
        "tags": [{"name": "jobs", "description": "Read, follow, create, cancel, delete."},
                 {"name": "auth", "description": "Tokens for browser pages."},
                 {"name": "service", "description": "Health, readiness, metrics, this "
                                                     "document (no credential needed)."}],
        "security": _SECURITY,
        "paths": paths,
        "components": _COMPONENTS,
    }


def encoded(table: list[Route]) -> bytes:
    return json.dumps(document(table), separators=(",", ":")).encode()
