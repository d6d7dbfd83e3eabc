"""``gateway demo --only-workers``: the demo's simulated workers alone, on the Redis of
``REDIS_URL``, for gateways that run elsewhere (deploy/compose.yaml, the Procfile's
``worker:`` line). Ctrl-C or SIGTERM stops them.

Their jobs are the demo's (gateway.demo.simulation), in the tenant ``default`` (or
``--tenant``); a completed job's output URL points at a placeholder host, as no storage
comes with them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys

from gateway.demo.simulation import Options, Simulation, demo_worker
from gateway.settings import Settings, redacted

OUTPUTS = "https://files.example.invalid/demo"  # .invalid: a host that never resolves

log = logging.getLogger("gateway.demo")


def run(options: Options, tenant: str) -> int:
    from gateway.contract.keys import check_tenant
    from gateway.observability import logs

    settings = Settings.from_env()
    if not settings.redis_url:
        print("gateway demo --only-workers: set REDIS_URL to the Redis the gateways use",
              file=sys.stderr)
        return 2
    try:
        check_tenant(tenant)
    except ValueError as exc:
        print(f"gateway demo --only-workers: --tenant: {exc}", file=sys.stderr)
        return 2
    logs.configure(settings.log_level)
    print(f"{options.workers} simulated workers for tenant {tenant} on "
          f"REDIS_URL={redacted(settings.redis_url)}, about one new job every "
          f"{1 / options.rate:.3g} s; Ctrl-C stops them.", flush=True)
    return asyncio.run(_main(settings.redis_url, options, tenant, settings.redis_cluster))


async def _main(url: str, options: Options, tenant: str, cluster: bool) -> int:
    loop = asyncio.get_running_loop()
    worker = demo_worker(url, tenant, cluster=cluster)
    simulation = Simulation(worker, options, output_base=OUTPUTS)
    running = asyncio.create_task(simulation.run())
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, running.cancel)
    if options.duration:
        loop.call_later(options.duration, running.cancel)
    try:
        await running
        code = 0
    except asyncio.CancelledError:
        code = 0
    except Exception as exc:  # said in one line; the exit code says it too
        log.error("the simulated workers stopped: %r", exc)
        code = 1
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        with contextlib.suppress(Exception):
            await worker.aclose()
    print(f"gateway demo --only-workers: stopped ({simulation.created} jobs created).",
          flush=True)
    return code
