"""The GRIP backend behind the pushpin contender: the app a pushpin deployment needs.

Pushpin holds the streams, but it asks an HTTP backend what to do with each new request
(GRIP): this one answers a stream request (``Accept: text/event-stream``) for
``/v1/jobs/<id>`` with ``Grip-Hold: stream`` on channel ``<id>``, the job's opening
``snapshot`` event as the body and a ``Grip-Keep-Alive`` heartbeat as long as the other
contenders' (``GRIP_HEARTBEAT_SECONDS``, 15 s by default), after which pushpin keeps the
client and this backend forgets it. Any other GET of a job answers its snapshot as JSON,
and ``/healthz`` answers ``ok``. Updates never pass here: the bench publishes them to
pushpin directly (bench/publish.py).

It is stdlib asyncio (uvloop where installed) with requests parsed by hand on keep-alive
connections, one process, so that the thousands of subscribe requests of the idle ramp
cost it little; the bench reports its CPU and memory apart from pushpin's. Nothing is
stored: the opening snapshot is the one every job starts with in the bench (phase
``b0``), which is what the other contenders send first too.

    python -m bench.grip_backend --port 8002
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from typing import cast

_MAX_HEAD = 65536  # a request head larger than this is refused, not buffered


def snapshot(job_id: str, k: int) -> bytes:
    """A job snapshot shaped and sized like the gateway's, with phase ``b<k>``: what the
    bench gives nchan and pushpin to publish, and what this backend opens a stream with
    (``k = 0``). Kept here, stdlib only, so that the backend imports nothing else."""
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return json.dumps({
        "job_id": job_id, "status": "running", "progress": {"percent": 0.0, "phase": f"b{k}"},
        "conversion": {}, "output": None, "metrics": {}, "error": None,
        "cancel_requested": False, "created_at": now, "updated_at": now, "expires_at": None,
        "version": k + 2,
    }, separators=(",", ":")).encode()


def event(job_id: str, k: int, name: str) -> bytes:
    """The SSE frame of update ``k`` (the gateway's shape: an id, a name, one data line)."""
    return b"id: %s-%d\nevent: %s\ndata: %s\n\n" % (
        job_id.encode(), k + 2, name.encode(), snapshot(job_id, k))


def _response(status: bytes, headers: list[tuple[bytes, bytes]], body: bytes) -> bytes:
    lines = [b"HTTP/1.1 " + status, *(k + b": " + v for k, v in headers),
             b"Content-Length: %d" % len(body)]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class Backend(asyncio.Protocol):
    """One keep-alive connection (pushpin's outgoing requests come through zurl)."""

    def __init__(self, keep_alive: bytes) -> None:
        self.keep_alive = keep_alive
        self.transport: asyncio.Transport | None = None
        self.buf = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but have its methods.
        self.transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > _MAX_HEAD:
                    self.transport.close()
                return
            head, rest = self.buf[:end], self.buf[end + 4:]
            lines = head.split(b"\r\n")
            fields = {}
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                fields[name.strip().lower()] = value.strip()
            length = int(fields.get(b"content-length", b"0") or b"0")
            if len(rest) < length:  # wait for the body (a GET has none)
                return
            self.buf = rest[length:]
            parts = lines[0].split(b" ")
            path = parts[1].decode(errors="replace") if len(parts) > 1 else ""
            self.transport.write(self.answer(path.split("?", 1)[0], fields))
            if fields.get(b"connection", b"").lower() == b"close" or parts[-1] == b"HTTP/1.0":
                self.transport.close()
                self.transport = None

    def answer(self, path: str, fields: dict[bytes, bytes]) -> bytes:
        if path == "/healthz":
            return _response(b"200 OK", [(b"Content-Type", b"text/plain")], b"ok\n")
        job_id = path.removeprefix("/v1/jobs/")
        if job_id == path or not job_id or "/" in job_id:
            return _response(b"404 Not Found", [(b"Content-Type", b"text/plain")], b"")
        if b"text/event-stream" in fields.get(b"accept", b""):
            return _response(b"200 OK", [
                (b"Content-Type", b"text/event-stream"), (b"Cache-Control", b"no-cache"),
                (b"Grip-Hold", b"stream"), (b"Grip-Channel", job_id.encode()),
                (b"Grip-Keep-Alive", self.keep_alive),
            ], b"retry: 3000\n" + event(job_id, 0, "snapshot"))
        return _response(b"200 OK", [(b"Content-Type", b"application/json")],
                         snapshot(job_id, 0))

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(port: int, heartbeat: float) -> None:
    # Pushpin writes this comment on a stream that sent nothing for `timeout` seconds,
    # the gateway's heartbeat frame (cstring: the \n are escapes pushpin decodes).
    keep_alive = b": keepalive\\n\\n; format=cstring; timeout=%d" % max(1, round(heartbeat))
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Backend(keep_alive), "127.0.0.1", port,
                                      backlog=4096)
    async with server:
        await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    heartbeat = float(os.environ.get("GRIP_HEARTBEAT_SECONDS", "15"))
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port, heartbeat))
    else:
        uvloop.run(serve(args.port, heartbeat))


if __name__ == "__main__":
    main()
