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
from gateway.auth.keyring import Keyring, exposure_refusal
from gateway.backend import connected, preflight
from gateway.contract import frames
from gateway.fanout.hub import Hub
from gateway.observability import access
from gateway.observability.metrics import Metrics
from gateway.settings import Settings, SettingsError, redacted
from gateway.web.front import Front
from gateway.web.guard import Guard
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
        # A Redis that refuses the configuration stops the start (SettingsError) instead
        # of being retried for ever behind a /healthz that says ok.
        refusal = await preflight.check(redis_url, settings.redis_timeout_seconds,
                                        cluster=settings.redis_cluster)
        if refusal is not None:
            raise SettingsError(f"REDIS_URL={redacted(redis_url)!r}: {refusal}")
        async with (
            connected(
                redis_url,
                cluster=settings.redis_cluster,
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
                end_frame=lambda: frames.retry_jittered(settings.retry_ms),
            ) as hub,
            Keyring.running(
                backend,
                host=settings.host,
                insecure=settings.insecure,
                token_secret=settings.token_secret.encode() if settings.token_secret else None,
                on_revoked=hub.end_streams,
            ) as keyring,
        ):
            services.backend, services.hub, services.keyring = backend, hub, keyring
            _check_exposure(keyring, settings)
            runtime.tune_gc()
            with runtime.streams_end_on_exit_signal(hub):
                yield

    return Front(routes(services), guard=Guard(services), lifespan=lifespan,
                 access_log=access.write)


def _check_exposure(keyring: Keyring, settings: Settings) -> None:
    """Refuse to serve a public address without auth (the keyring says how it serves,
    loudly, once it has read the keys: gateway.auth.keyring)."""
    if not keyring.loaded or keyring.has_keys:
        return
    refusal = exposure_refusal(settings.host, settings.insecure)
    if refusal is not None:
        raise SettingsError(f"GATEWAY_HOST={settings.host}: {refusal}")
