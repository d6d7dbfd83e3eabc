"""The ASGI application, wired: settings → backend → hub → route table → front.

Run it with ``gateway serve`` (which also starts an embedded Redis when REDIS_URL is
unset), or under any ASGI server: ``uvicorn --factory gateway.app:create_app``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from gateway import runtime
from gateway.backend.standalone import StandaloneBackend
from gateway.fanout.hub import Hub
from gateway.observability import access
from gateway.observability.metrics import Metrics
from gateway.settings import Settings, SettingsError
from gateway.web.front import Front
from gateway.web.routes import routes
from gateway.web.services import Services


def create_app(settings: Settings | None = None) -> Front:
    if settings is None:
        settings = Settings.from_env()
    if settings.redis_url is None:
        raise SettingsError(
            "REDIS_URL is not set: point it at Redis/Valkey 7+, or run `gateway serve`, "
            "which starts an embedded server when REDIS_URL is unset"
        )
    redis_url = settings.redis_url
    services = Services(settings, Metrics(lambda: {
        "gateway_open_streams": {k: float(v) for k, v in services.hub.open_streams.items()},
        "gateway_pubsub_channels": {"": float(services.hub.channel_count)},
        "gateway_watchers": {"": float(services.hub.watcher_count)},
        "gateway_asyncio_tasks": {"": float(len(asyncio.all_tasks()))},
    }))

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        async with (
            StandaloneBackend.connected(
                redis_url,
                timeout=settings.redis_timeout_seconds,
                max_connections=settings.redis_connections,
                subscribe_timeout=settings.subscribe_timeout_seconds,
                probe_seconds=settings.probe_seconds,
            ) as backend,
            Hub.running(
                backend,
                heartbeat_seconds=settings.heartbeat_seconds,
                subscribe_timeout_seconds=settings.subscribe_timeout_seconds,
                send_timeout_seconds=settings.send_timeout_seconds,
                on_fanout=services.metrics.fanout_seconds.observe,
            ) as hub,
        ):
            services.backend, services.hub = backend, hub
            runtime.tune_gc()
            with runtime.streams_end_on_exit_signal(hub, settings.retry_ms):
                yield

    return Front(routes(services), lifespan=lifespan, access_log=access.write)
