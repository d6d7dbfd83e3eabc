"""``gateway demo``: an embedded Valkey, the gateway, and simulated workers, in one
command, until Ctrl-C or SIGTERM (or ``--duration``).

It listens on loopback only and runs without auth, like a first ``gateway serve``; its
Valkey is its own (REDIS_URL is not used), so the demo never writes into a Redis of
yours. On a stop the gateway ends its streams, the workers stop, and the Valkey stops,
within a few seconds: nothing is left running.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
import sys

from gateway.demo.simulation import Options, Simulation, demo_worker
from gateway.embedded import EmbeddedRedis
from gateway.settings import Settings

HOST = "127.0.0.1"


def _say(line: str) -> None:
    print(line, flush=True)


def run(options: Options, port: int | None) -> int:
    from gateway.launch import port_refusal
    from gateway.observability import logs

    settings = Settings.from_env()
    port = settings.port if port is None else port
    # The demo prints the address to open: a port the system picks would print as 0.
    refusal = port_refusal(HOST, port) if port else "--port 0 is no address to open: " \
        "choose a port from 1 to 65535"
    if refusal is not None:
        print(f"gateway demo: {refusal}", file=sys.stderr)
        return 2
    # Warnings and errors only: the terminal is for the lines below. The warning that no
    # API key exists is the point here: the demo serves loopback alone, and says so.
    logs.configure("warning" if settings.log_level in ("debug", "info") else settings.log_level)
    logging.getLogger("gateway.auth").setLevel(logging.ERROR)
    if os.environ.get("REDIS_URL"):
        _say("gateway demo: REDIS_URL is set and not used: the demo runs a Valkey of its own.")
    # Until the server takes them over (and after it gives them back), Ctrl-C and SIGTERM
    # unwind from wherever the start is, so that the Valkey is stopped whatever the moment.
    previous = {sig: signal.signal(sig, _stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with EmbeddedRedis() as server:
            settings = dataclasses.replace(
                settings, redis_url=server.url, host=HOST, port=port, insecure=False,
                allow_http_downloads=True,  # the pretend outputs are served over plain http
                shutdown_grace_seconds=2.0)
            return asyncio.run(_main(settings, options, server))
    except _Stopped:
        _say("gateway demo: stopped.")
        return 0
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


class _Stopped(BaseException):
    """A stop signal while the demo starts or winds down (not an error of its own)."""


def _stop(signum: int, frame: object) -> None:
    raise _Stopped


async def _until_gone(server: EmbeddedRedis) -> None:
    while server.running:  # noqa: ASYNC110 (a child process is polled; no event tells)
        await asyncio.sleep(0.5)


async def _main(settings: Settings, options: Options, valkey: EmbeddedRedis) -> int:
    import uvicorn

    from gateway.app import create_app
    from gateway.demo.outputs import PREFIX, Outputs
    from gateway.runtime import Server
    from gateway.server import protocol

    assert settings.redis_url is not None
    config = uvicorn.Config(
        Outputs(create_app(settings)), http=protocol(settings),
        host=settings.host, port=settings.port, log_config=None, access_log=False,
        log_level="warning", timeout_graceful_shutdown=2,
        timeout_keep_alive=settings.keepalive_seconds)
    server = Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():  # noqa: ASYNC110 (uvicorn has a flag, no event)
        await asyncio.sleep(0.05)
    if not server.started:
        await serving
        return 3  # the log said why
    base = f"http://{settings.host}:{settings.port}"
    worker = demo_worker(settings.redis_url)
    simulation = Simulation(worker, options, output_base=base + PREFIX.rstrip("/"))
    _say(f"Dashboard: {base}/")
    _say(f"{options.workers} simulated workers, about one new job every "
         f"{1 / options.rate:.3g} s" + (f", for {options.duration:g} s" if options.duration
                                        else "; Ctrl-C stops everything") + ".")
    _say("It serves 127.0.0.1 only, without auth (no API key exists in its Valkey).")
    _say(f"Workers of your own reach its Valkey with REDIS_URL={settings.redis_url}")
    simulating = asyncio.create_task(simulation.run())
    gone = asyncio.create_task(_until_gone(valkey))
    waits: set[asyncio.Task[object]] = {serving, simulating, gone}
    if options.duration:
        waits.add(asyncio.create_task(asyncio.sleep(options.duration)))
    done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    error = simulating.exception() if simulating in done and not simulating.cancelled() else None
    if error is not None:
        _say(f"gateway demo: the simulated workers stopped: {error!r}")
    if gone in done:
        _say("gateway demo: its Valkey stopped; stopping the rest.")
    failed = error is not None or gone in done
    # Stop the workers first (their Valkey goes next), then the gateway, which ends its
    # streams with a retry: so that open pages reconnect to whatever serves next.
    simulating.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await simulating
    for task in waits - {serving, simulating}:  # the clock, the Valkey watch
        task.cancel()
    if not serving.done():
        # As a Ctrl-C does: the gateway ends its open streams with a retry: first.
        os.kill(os.getpid(), signal.SIGTERM)
    await serving
    await worker.aclose()
    _say(f"gateway demo: stopped ({simulation.created} jobs created).")
    return 1 if failed else 0

