"""The bytes of an event stream, and the ASGI messages that carry them (docs/api.md, Event streams).

Everything a stream writes is built here: its headers, the ``retry:`` field, event
frames, the ``unknown`` report, heartbeats. The encoding is sse-starlette's
ServerSentEvent, which splits any line break in data into ``data:`` lines, so that no
payload can forge an ``event:`` or ``id:`` line. A message's frame is built once and the
same bytes (and the same ASGI body dict) go to every watcher (gateway.contract.events).
"""

from __future__ import annotations

import json
import random
from functools import lru_cache
from typing import TYPE_CHECKING

from sse_starlette import ServerSentEvent
from starlette.types import Message

if TYPE_CHECKING:
    from gateway.contract.events import EventId

_SEP = "\n"  # ServerSentEvent's default is \r\n; every client reads both, \n is shorter

HEARTBEAT = ServerSentEvent(comment="keepalive", sep=_SEP).encode()
# One dict for every heartbeat of every stream: servers read a body message and keep
# nothing of it (uvicorn, hypercorn).
HEARTBEAT_BODY: Message = {"type": "http.response.body", "body": HEARTBEAT,
                                  "more_body": True}

# The headers of a stream's response, and of the answers that end one at once (204).
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),  # nginx and friends: do not buffer the stream
    (b"vary", b"Accept"),
]
NO_CONTENT_HEADERS = [(b"cache-control", b"no-cache"), (b"vary", b"Accept")]


@lru_cache(maxsize=64)
def retry(milliseconds: int) -> bytes:
    return ServerSentEvent(retry=milliseconds, sep=_SEP).encode()


def retry_jittered(milliseconds: int) -> bytes:
    """The last ``retry:`` of a stream the server ends (shutdown, age, a credential that
    expired or was revoked): between 1x and 2x ``milliseconds``, so that the clients of
    streams that end together do not all come back at once."""
    return ServerSentEvent(retry=random.randint(milliseconds, 2 * milliseconds),
                           sep=_SEP).encode()


def event(event_id: bytes, name: bytes, data: bytes) -> bytes:
    """One event. Built once per message: on the fan-out path that is once per delivered
    event when each job has one watcher, and ServerSentEvent.encode costs 40 to 200 times
    a concatenation there (docs/architecture.md). So data without a line break (every
    snapshot the update script writes) is framed by concatenation, byte for byte what
    ServerSentEvent writes (tests/contract/test_frames.py compares them); anything else
    goes through ServerSentEvent."""
    if b"\n" not in data and b"\r" not in data:
        return b"id: " + event_id + b"\nevent: " + name + b"\ndata: " + data + b"\n\n"
    return ServerSentEvent(data.decode(), event=name.decode(), id=event_id.decode(),
                           sep=_SEP).encode()


def unknown(job_ids: list[str]) -> bytes:
    """Named jobs that do not exist, reported once. No id: it is no position to resume from."""
    data = json.dumps({"job_ids": job_ids}, separators=(",", ":"))
    return ServerSentEvent(data, event="unknown", sep=_SEP).encode()


def reset(position: EventId, *, jobs: int, limit: int) -> bytes:
    """A stream that would have opened with more than ``limit`` jobs: reload the list (the
    JSON page), then carry on from ``position``, where the stream is live from."""
    data = json.dumps({"reason": "too_many_jobs", "jobs": jobs, "limit": limit},
                      separators=(",", ":"))
    return ServerSentEvent(data, event="reset", id=str(position), sep=_SEP).encode()


def body(chunk: bytes, *, more: bool) -> Message:
    """An ASGI ``http.response.body`` message."""
    return {"type": "http.response.body", "body": chunk, "more_body": more}
