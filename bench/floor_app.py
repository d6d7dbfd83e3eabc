"""The floor contender: the least a Python server on this stack can do per stream.

A bare ASGI app on the gateway's own server stack (uvicorn with uvloop and httptools, the
same ``gc.freeze()`` and collector thresholds), with none of the gateway's work: a stream
is one task that writes its headers and one pre-encoded ``snapshot`` frame and then waits
for the client to leave; one shared timer writes the heartbeats; a trivial hub (one
redis-py pub/sub connection, no confirmation wait, no snapshot read, no conflation)
forwards each message of a watched job as a ``progress`` event (only where the scenario
needs one, ``FLOOR_HUB=1``: fan-out; elsewhere a stream subscribes to nothing); a JSON GET
answers a constant body. What the gateway costs beyond this, per stream and per request, is what
the gateway itself adds.

    REDIS_URL=redis://127.0.0.1:6379/0 python -m bench.floor_app --port 8001
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio
import uvicorn

# As the gateway tunes it (gateway/runtime.py).
GC_THRESHOLDS = (50_000, 50, 100)
CHANNEL = "gw:{{default}}:job:{}"
STREAM_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache"),
                  (b"x-accel-buffering", b"no")]
SNAPSHOT = (b'{"job_id":"floor","status":"running","progress":{"percent":0.0,"phase":"b0"},'
            b'"conversion":{},"output":null,"metrics":{},"error":null,'
            b'"cancel_requested":false,"created_at":"2026-01-01T00:00:00Z",'
            b'"updated_at":"2026-01-01T00:00:00Z","expires_at":null,"version":2}')
OPENING = b"retry: 3000\nid: floor-2\nevent: snapshot\ndata: " + SNAPSHOT + b"\n\n"
HEARTBEAT = {"type": "http.response.body", "body": b": keepalive\n\n", "more_body": True}
JSON_HEADERS = [(b"content-type", b"application/json"), (b"etag", b'"floor-2"'),
                (b"content-length", str(len(SNAPSHOT)).encode())]

Send = Any


class Hub:
    """Channel → the sends of its streams; one pub/sub connection for all. The channels
    new in one turn of the event loop are subscribed with one command, not awaited."""

    def __init__(self, url: str) -> None:
        self.client = redis.asyncio.Redis.from_url(url)
        self.pubsub = self.client.pubsub()
        self.watchers: dict[str, set[Send]] = {}
        self.streams: set[Send] = set()
        self.new: list[str] = []
        self.gone: list[str] = []
        self.commands: set[asyncio.Future[Any]] = set()  # kept until done

    def watch(self, channel: str, send: Send) -> None:
        watchers = self.watchers.get(channel)
        if watchers is None:
            watchers = self.watchers[channel] = set()
            self._later(self.new, channel)
        watchers.add(send)
        self.streams.add(send)

    def leave(self, channel: str, send: Send) -> None:
        self.streams.discard(send)
        watchers = self.watchers.get(channel)
        if watchers is not None:
            watchers.discard(send)
            if not watchers:
                del self.watchers[channel]
                self._later(self.gone, channel)

    def _later(self, batch: list[str], channel: str) -> None:
        if not self.new and not self.gone:
            asyncio.get_running_loop().call_soon(self._flush)
        batch.append(channel)

    def _flush(self) -> None:
        new, gone, self.new, self.gone = self.new, self.gone, [], []
        for command, channels in ((self.pubsub.subscribe, new),
                                  (self.pubsub.unsubscribe, gone)):
            if channels:
                future = asyncio.ensure_future(command(*channels))
                self.commands.add(future)
                future.add_done_callback(self.commands.discard)

    async def forward(self) -> None:
        while True:
            if not self.pubsub.subscribed:
                await asyncio.sleep(0.01)
                continue
            message = await self.pubsub.get_message(timeout=1.0)
            if message is None or message["type"] != "message":
                continue
            data = message["data"].partition(b"\n")[2]
            body = {"type": "http.response.body", "more_body": True,
                    "body": b"event: progress\ndata: " + data + b"\n\n"}
            channel = message["channel"].decode()
            for send in list(self.watchers.get(channel, ())):
                try:
                    await send(body)
                except Exception:
                    self.streams.discard(send)

    async def beat(self, seconds: float) -> None:
        while True:
            await asyncio.sleep(seconds)
            for send in list(self.streams):
                try:
                    await send(HEARTBEAT)
                except Exception:
                    self.streams.discard(send)


def create_app(redis_url: str, heartbeat_seconds: float, with_hub: bool) -> Any:
    hub = Hub(redis_url)

    @asynccontextmanager
    async def running() -> AsyncIterator[None]:
        tasks = [asyncio.ensure_future(hub.beat(heartbeat_seconds))]
        if with_hub:
            tasks.append(asyncio.ensure_future(hub.forward()))
        gc.collect()
        gc.freeze()
        gc.set_threshold(*GC_THRESHOLDS)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await hub.pubsub.aclose()  # type: ignore[no-untyped-call]
            await hub.client.aclose()

    async def app(scope: dict[str, Any], receive: Any, send: Send) -> None:
        if scope["type"] == "lifespan":
            manager = running()
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await manager.__aenter__()
                    await send({"type": "lifespan.startup.complete"})
                else:
                    await manager.__aexit__(None, None, None)
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path: str = scope["path"]
        if path == "/healthz":
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": b"ok"})
            return
        job_id = path.removeprefix("/v1/jobs/")
        accept = next((v for k, v in scope["headers"] if k == b"accept"), b"")
        if b"text/event-stream" not in accept:
            etag = next((v for k, v in scope["headers"] if k == b"if-none-match"), b"")
            if etag == b'"floor-2"':
                await send({"type": "http.response.start", "status": 304,
                            "headers": JSON_HEADERS[1:2]})
                await send({"type": "http.response.body", "body": b""})
                return
            await send({"type": "http.response.start", "status": 200, "headers": JSON_HEADERS})
            await send({"type": "http.response.body", "body": SNAPSHOT})
            return
        channel = CHANNEL.format(job_id)
        await send({"type": "http.response.start", "status": 200, "headers": STREAM_HEADERS})
        await send({"type": "http.response.body", "body": OPENING, "more_body": True})
        if with_hub:
            hub.watch(channel, send)
        else:
            hub.streams.add(send)  # heartbeats only
        try:
            while (await receive())["type"] != "http.disconnect":
                pass
        finally:
            if with_hub:
                hub.leave(channel, send)
            else:
                hub.streams.discard(send)

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(os.environ["REDIS_URL"],
                     float(os.environ.get("FLOOR_HEARTBEAT_SECONDS", "15")),
                     os.environ.get("FLOOR_HUB") == "1")
    uvicorn.run(app, host="127.0.0.1", port=args.port, loop="uvloop", http="httptools",
                log_level="warning", access_log=False, timeout_keep_alive=75)


if __name__ == "__main__":
    main()
