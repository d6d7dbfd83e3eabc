"""The naive contender: what most Starlette + SSE tutorials show.

One ``redis.asyncio`` pub/sub (so one Redis connection) per client, sse-starlette's
``EventSourceResponse`` with its default 15 s ping, and ``GET /v1/jobs/{id}`` as JSON
read from Redis. It speaks the gateway's Redis protocol (README, Workers in other
languages) so that the same workers drive it: the snapshot is the job hash's
``snapshot`` field, a channel message is a header line then the snapshot.

    REDIS_URL=redis://127.0.0.1:6379/0 python -m bench.naive_app --port 8001
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio
import uvicorn
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

# A naive app still has to find the gateway's keys; this is their layout (gateway.contract.keys).
KEY = "gw:{{default}}:job:{}"


def create_app(redis_url: str, ping_seconds: float = 15.0) -> Starlette:
    # redis-py 8 caps a pool at 100 connections by default; a connection per client is
    # the point of this contender, so the cap goes.
    client = redis.asyncio.Redis.from_url(redis_url, max_connections=1_000_000)

    async def events(key: str) -> AsyncIterator[dict[str, Any]]:
        pubsub = client.pubsub()  # the tutorial pattern: a pub/sub connection per client
        await pubsub.subscribe(key)
        try:
            snapshot = await client.hget(key, "snapshot")
            if isinstance(snapshot, bytes):
                yield {"event": "snapshot", "data": snapshot.decode()}
            async for message in pubsub.listen():
                if message["type"] != "message":
                    continue
                header, _, data = message["data"].partition(b"\n")
                event_id, event = header.decode().split(" ")[:2]
                yield {"id": event_id, "event": event, "data": data.decode()}
        finally:
            await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def job(request: Request) -> Response:
        key = KEY.format(request.path_params["job_id"])
        if "text/event-stream" in request.headers.get("accept", ""):
            return EventSourceResponse(events(key), ping=ping_seconds)
        snapshot, version = await client.hmget(key, ["snapshot", "version"])
        if not isinstance(snapshot, bytes) or not isinstance(version, bytes):
            return JSONResponse({"error": "jobs.not_found", "detail": "no such job"}, 404)
        etag = f'"{version.decode()}"'
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers={"ETag": etag})
        return Response(snapshot, media_type="application/json", headers={"ETag": etag})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    return Starlette(
        routes=[Route("/v1/jobs/{job_id}", job), Route("/healthz", healthz)], lifespan=lifespan
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    app = create_app(os.environ["REDIS_URL"], float(os.environ.get("NAIVE_PING_SECONDS", "15")))
    # uvicorn's defaults, as a tutorial runs it (uvloop and httptools when installed).
    uvicorn.run(app, host="127.0.0.1", port=args.port)


if __name__ == "__main__":
    main()
