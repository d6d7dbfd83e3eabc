"""``gateway serve``: the checks before serving, the embedded server, and uvicorn.

Each check that can fail stops the start with one line on stderr and exit code 2, before
anything is started that would have to be stopped again: a port in use, an embedded
server on a public address, a Redis that refuses the configuration, a public address
with no API key. A Redis that cannot be reached is not a reason to stop: the gateway
serves 503 and reconnects (docs/operations.md).
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import socket
import sys
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from gateway.settings import Settings, redacted


@dataclass(frozen=True)
class Launch:
    """What the command line adds to the settings."""

    host: str | None = None
    port: int | None = None
    insecure: bool = False
    embedded: bool = False
    workers: int = 1


def _say(line: str) -> None:
    print(f"gateway: {line}", file=sys.stderr, flush=True)


def port_refusal(host: str, port: int) -> str | None:
    """Why ``host:port`` cannot be served (in use, or not an address of this machine)."""
    if port == 0:
        return None
    if not 0 < port < 65536:
        return f"port {port} is no TCP port: choose one from 1 to 65535"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # As uvicorn binds: SO_REUSEADDR, so a port in TIME_WAIT is not "in use".
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return (f"port {port} on {host} is in use (another gateway?): stop it, or "
                        "choose another port with --port or GATEWAY_PORT")
            return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def _embedded_refusal(host: str) -> str:
    return (f"refusing to start: REDIS_URL is unset and {host} is not a loopback address. "
            "An embedded Valkey would be private to this process, out of reach of workers "
            "on other hosts and of other gateway processes: set REDIS_URL to the Redis they "
            "share, or pass --embedded to run a private one anyway")


def serve(launch: Launch) -> int:
    """Run the gateway until SIGTERM/SIGINT; the exit code."""
    import uvicorn
    from uvicorn.config import STARTUP_FAILURE
    from uvicorn.supervisors import Multiprocess

    from gateway.app import create_app
    from gateway.auth.keyring import exposure_refusal, is_loopback
    from gateway.backend import preflight
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
    refusal = port_refusal(settings.host, settings.port)
    if refusal is None and settings.redis_url is None and not (
            launch.embedded or is_loopback(settings.host)):
        refusal = _embedded_refusal(settings.host)
    if refusal is not None:
        _say(refusal)
        return 2
    with ExitStack() as stack:
        if settings.redis_url is None:
            # Stopped when this block ends, after uvicorn has closed every stream and
            # Redis connection (its own process group: Ctrl-C reaches the gateway alone).
            server = stack.enter_context(EmbeddedRedis())
            settings = dataclasses.replace(settings, redis_url=server.url)
            _say("REDIS_URL is unset, so an embedded server runs for this process.")
            _say(f"workers reach it with REDIS_URL={server.url}")
        redis_url = settings.redis_url
        assert redis_url is not None
        refusal = asyncio.run(preflight.check(redis_url, settings.redis_timeout_seconds,
                                              cluster=settings.redis_cluster))
        if refusal is not None:
            _say(f"refusing to start: REDIS_URL={redacted(redis_url)!r}: {refusal}")
            return 2
        refusal = exposure_refusal(settings.host, settings.insecure)
        if refusal is not None and not _any_key(redis_url, settings.redis_cluster):
            _say(f"refusing to start: {refusal}")
            return 2
        if settings.port:
            host = f"[{settings.host}]" if ":" in settings.host else settings.host
            logging.getLogger("gateway.launch").info(
                "the dashboard: http://%s:%d/ (once a key exists, open it with a link of "
                "gateway dashboard-url)", host, settings.port)
        options = {"host": settings.host, "port": settings.port,
                   "log_level": settings.log_level,
                   "log_config": None,  # logs.configure did it: JSON lines, our access log
                   "access_log": False,
                   "timeout_graceful_shutdown": int(settings.shutdown_grace_seconds),
                   "timeout_keep_alive": settings.keepalive_seconds}
        if launch.workers > 1:
            # Each worker process builds the app from the environment: give it what the
            # command line decided. SIGTERM reaches every one, and each ends its streams.
            os.environ.update({"REDIS_URL": redis_url, "GATEWAY_HOST": settings.host,
                               "GATEWAY_REDIS_CLUSTER": str(settings.redis_cluster).lower(),
                               "GATEWAY_PORT": str(settings.port),
                               "GATEWAY_INSECURE": str(settings.insecure).lower()})
            config = uvicorn.Config("gateway.launch:worker_app", factory=True,
                                    workers=launch.workers, http="gateway.server:HttpProtocol",
                                    **options)  # type: ignore[arg-type]
            supervisor = Multiprocess(config, sockets=[config.bind_socket()])
            supervisor.run()
            # A worker whose start failed stops them all (the log says why): exit 3, as
            # a single process does.
            failed = any(worker.process.exitcode == STARTUP_FAILURE
                         for worker in supervisor.processes)
            return 3 if failed else 0
        config = uvicorn.Config(create_app(settings), http=protocol(settings),
                                **options)  # type: ignore[arg-type]
        # A stop by SIGTERM/SIGINT exits 0 (gateway.runtime); a start that failed (the app
        # refused its settings, say: the log says why) exits 3, as uvicorn's own command.
        uvicorn_server = Server(config)
        uvicorn_server.run()
    return 0 if uvicorn_server.started else 3


def worker_app() -> Any:
    """The app of one ``--workers`` process: a fresh interpreter, whose logs are set up
    here as ``serve`` set up its own (JSON lines, the access log)."""
    from gateway.app import create_app
    from gateway.observability import logs

    settings = Settings.from_env()
    logs.configure(settings.log_level)
    return create_app(settings)


def _any_key(url: str, cluster: bool) -> bool:
    """Whether an API key exists (True when Redis cannot say: the app checks again once it
    has read the keys, gateway.app)."""
    import redis

    from gateway.backend import nodes
    from gateway.contract import keys

    try:
        with nodes.sync_client(url, cluster=cluster, socket_timeout=5,
                               socket_connect_timeout=5) as r:
            return bool(r.exists(keys.api_keys_key()))
    except (redis.exceptions.RedisError, ValueError):
        return True
