"""``gateway serve``: the embedded server, the checks before serving, and uvicorn."""

from __future__ import annotations

import dataclasses
import sys
from contextlib import ExitStack
from dataclasses import dataclass

from gateway.settings import Settings


@dataclass(frozen=True)
class Launch:
    """What the command line adds to the settings."""

    host: str | None = None
    port: int | None = None
    insecure: bool = False


def serve(launch: Launch) -> int:
    """Run the gateway until SIGTERM/SIGINT; the exit code."""
    import uvicorn

    from gateway.app import create_app
    from gateway.auth.keyring import exposure_refusal
    from gateway.embedded import EmbeddedRedis
    from gateway.observability import logs
    from gateway.runtime import Server
    from gateway.server import protocol

    settings = Settings.from_env()
    logs.configure(settings.log_level)
    settings = dataclasses.replace(
        settings,
        host=launch.host or settings.host,
        port=settings.port if launch.port is None else launch.port,
        insecure=settings.insecure or launch.insecure,
    )
    with ExitStack() as stack:
        if settings.redis_url is None:
            server = stack.enter_context(EmbeddedRedis())
            settings = dataclasses.replace(settings, redis_url=server.url)
            print(
                f"gateway: REDIS_URL is unset, so an embedded server runs for this process.\n"
                f"gateway: workers reach it with REDIS_URL={server.url}",
                file=sys.stderr,
                flush=True,
            )
        refusal = exposure_refusal(settings.host, settings.insecure)
        if refusal is not None and not _any_key(settings.redis_url):
            print(f"gateway: refusing to start: {refusal}", file=sys.stderr)
            return 2
        config = uvicorn.Config(
            create_app(settings),
            host=settings.host,
            port=settings.port,
            log_level=settings.log_level,
            log_config=None,  # logs.configure did it: JSON lines, our access log
            access_log=False,
            timeout_graceful_shutdown=int(settings.shutdown_grace_seconds),
            http=protocol(settings),
            timeout_keep_alive=settings.keepalive_seconds,
        )
        # A stop by SIGTERM/SIGINT exits 0 (gateway.runtime); a start that failed (the app
        # refused its settings, say: the log says why) exits 3, as uvicorn's own command.
        uvicorn_server = Server(config)
        uvicorn_server.run()
    return 0 if uvicorn_server.started else 3


def _any_key(url: str | None) -> bool:
    """Whether an API key exists (True when Redis cannot say: the app checks again once it
    has read the keys, gateway.app)."""
    import redis

    from gateway.contract import keys

    try:
        with redis.Redis.from_url(url or "", socket_timeout=5, socket_connect_timeout=5) as r:
            return bool(r.exists(keys.api_keys_key()))
    except (redis.exceptions.RedisError, ValueError):
        return True
