"""The bytes of an event stream, and the ASGI messages that carry them (DESIGN.md s. 3).

Everything a stream writes is built here: its headers, the ``retry:`` field, event
frames, the ``unknown`` report, heartbeats. A message's frame is built once and the same
bytes (and the same ASGI body dict) go to every watcher (gateway.contract.events).
"""

from __future__ import annotations

import json
from typing import Any

HEARTBEAT = b": keepalive\n\n"
# One dict for every heartbeat of every stream: servers read a body message and keep
# nothing of it (uvicorn, hypercorn).
HEARTBEAT_BODY: dict[str, Any] = {"type": "http.response.body", "body": HEARTBEAT,
                                  "more_body": True}

# The headers of a stream's response, and of the answers that end one at once (204).
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx and friends: do not buffer the stream
    (b"vary", b"Accept"),
]
NO_CONTENT_HEADERS = [(b"cache-control", b"no-cache"), (b"vary", b"Accept")]


def retry(milliseconds: int) -> bytes:
    return b"retry: %d\n\n" % milliseconds


def event(event_id: bytes, name: bytes, data: bytes) -> bytes:
    # `data` is one JSON line (the update script never writes a newline into it).
    return b"id: " + event_id + b"\nevent: " + name + b"\ndata: " + data + b"\n\n"


def unknown(job_ids: list[str]) -> bytes:
    """Named jobs that do not exist, reported once. No id: it is no position to resume from."""
    data = json.dumps({"job_ids": job_ids}, separators=(",", ":")).encode()
    return b"event: unknown\ndata: " + data + b"\n\n"


def body(chunk: bytes, *, more: bool) -> dict[str, Any]:
    """An ASGI ``http.response.body`` message."""
    return {"type": "http.response.body", "body": chunk, "more_body": more}
