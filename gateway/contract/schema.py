"""The contract as JSON Schema (2020-12): the job snapshot and each event's data.

These are what ``/openapi.json`` publishes (gateway.web.openapi) and what the tests check
every answer against; the limits are update.lua's, which refuses anything past them.
"""

from __future__ import annotations

from typing import Any

Schema = dict[str, Any]

_TIME = {"type": "string", "format": "date-time",
         "description": "RFC 3339 UTC (`Z`), from the Redis server's clock."}
_COUNT = {"type": "integer", "minimum": 0, "maximum": 2**53}


def _nullable(schema: Schema) -> Schema:
    return {"anyOf": [schema, {"type": "null"}]}


JOB_ID: Schema = {
    "type": "string", "pattern": "^[A-Za-z0-9_-]{1,128}$",
    "description": "1-128 characters of A-Z, a-z, 0-9, `_` and `-`.",
    "examples": ["job-42"],
}

STATUSES = ["queued", "running", "completed", "failed", "canceled"]

STATUS: Schema = {
    "type": "string", "enum": STATUSES,
    "description": "queued → running → completed | failed | canceled, or queued → failed | "
                   "canceled. The last three are terminal: nothing changes after them.",
}

CONVERSION: Schema = {
    "type": "object",
    "description": "What is converted, as the job's creator said (every field optional; "
                   "null is the same as absent, and a snapshot leaves such a field out).",
    "properties": {
        "source_format": _nullable({"type": "string", "maxLength": 64, "examples": ["docx"]}),
        "target_format": _nullable({"type": "string", "maxLength": 64, "examples": ["pdf"]}),
        "original_filename": _nullable({"type": "string", "maxLength": 1024,
                                        "examples": ["report.docx"]}),
        "source_size_bytes": _nullable(_COUNT),
    },
    "additionalProperties": False,
}

PROGRESS: Schema = {
    "type": "object",
    "required": ["percent", "phase"],
    "properties": {
        "percent": {"type": "number", "minimum": 0, "maximum": 100,
                    "description": "Never lower than before while the job runs."},
        "phase": _nullable({"type": "string", "maxLength": 200}),
        "eta_at": _nullable({**_TIME, "description": "When 100 % comes at the rate so far "
                             "(docs/api.md, Time left); null before two reports of a rising "
                             "percent, and once the job ended."}),
        "rate": _nullable({"type": "number", "exclusiveMinimum": 0,
                           "description": "Percent per second, weighted to the recent "
                           "reports; null when eta_at is."}),
    },
    "additionalProperties": False,
}

OUTPUT: Schema = {
    "type": "object",
    "description": "Set on `completed`; null again once the output expired.",
    "properties": {
        "file_name": _nullable({"type": "string", "maxLength": 1024}),
        "content_type": _nullable({"type": "string", "maxLength": 255}),
        "file_size_bytes": _nullable(_COUNT),
        "file_count": _nullable(_COUNT),
        "file_url": _nullable({"type": "string", "maxLength": 4096,
                               "description": "Given by the worker, typically presigned."}),
        "expires_at": _nullable(_TIME),
    },
    "additionalProperties": False,
}

ERROR_INFO: Schema = {
    "type": "object",
    "description": "Set on `failed`: the worker's code and message.",
    "required": ["code", "message"],
    "properties": {"code": {"type": "string", "maxLength": 128},
                   "message": {"type": "string", "maxLength": 4096}},
    "additionalProperties": False,
}

SNAPSHOT: Schema = {
    "type": "object",
    "description": "A job, always whole: the body of `GET /v1/jobs/{job_id}`, the `data` of "
                   "every snapshot, progress and status event, and every worker call's "
                   "reply.",
    "required": ["job_id", "status", "progress", "conversion", "output", "metrics", "error",
                 "cancel_requested", "created_at", "updated_at", "expires_at", "version"],
    "properties": {
        "job_id": JOB_ID,
        "status": STATUS,
        "progress": PROGRESS,
        "conversion": CONVERSION,
        "output": _nullable(OUTPUT),
        "metrics": {"type": "object", "maxProperties": 32,
                    "additionalProperties": {"type": "number"},
                    "description": "Numbers the worker reports (at most 32)."},
        "error": _nullable(ERROR_INFO),
        "cancel_requested": {"type": "boolean",
                             "description": "A user asked a running job to stop; its worker "
                                            "decides when."},
        "created_at": _TIME,
        "updated_at": _TIME,
        "expires_at": _nullable({**_TIME, "description": "When the whole record goes: 24 h "
                                 "after a terminal state by default, a week after the last "
                                 "change of a job that has not ended."}),
        "version": {"type": "integer", "minimum": 1,
                    "description": "1 at creation, one more on every accepted change."},
    },
    "additionalProperties": False,
}

DELETED: Schema = {
    "type": "object",
    "required": ["job_id", "version"],
    "properties": {"job_id": JOB_ID,
                   "version": _nullable({"type": "integer", "minimum": 1,
                                         "description": "The deletion's version; null when "
                                                        "found later, on a resume."})},
    "additionalProperties": False,
}

UNKNOWN: Schema = {
    "type": "object",
    "required": ["job_ids"],
    "properties": {"job_ids": {"type": "array", "items": JOB_ID}},
    "additionalProperties": False,
}

RESET: Schema = {
    "type": "object",
    "required": ["reason", "jobs", "limit"],
    "properties": {"reason": {"const": "too_many_jobs"},
                   "jobs": {"type": "integer", "minimum": 0},
                   "limit": {"type": "integer", "minimum": 1}},
    "additionalProperties": False,
}

# Each event of a stream: its name, the schema of its data, and when it comes. The names
# are those frames.py writes and update.lua publishes.
EVENTS: dict[str, tuple[str, str]] = {
    "snapshot": ("Snapshot", "First on a new connection (and on a multi-job stream, one per "
                 "job it opens with, or a job a resume finds changed); `id` is the job's "
                 "last change."),
    "progress": ("Snapshot", "The percent or phase changed (and a resume that was behind, "
                 "when the status did not move)."),
    "status": ("Snapshot", "The status changed, or a cancel was requested. A single-job "
               "stream ends after its terminal status."),
    "deleted": ("Deleted", "Multi-job streams: a job was deleted."),
    "unknown": ("Unknown", "Multi-job streams: named jobs that do not exist (yet), once; "
                "they stay watched. No `id`."),
    "reset": ("Reset", "A tenant-wide stream with too many jobs to open with: reload the "
              "JSON list; the stream is live from this event's `id`."),
}
