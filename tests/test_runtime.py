"""The process around the app (gateway.runtime): a stop by signal exits 0."""

from __future__ import annotations

import signal
import subprocess
import sys

APP = '''
import asyncio, uvicorn
from gateway.runtime import Server

async def app(scope, receive, send):
    assert scope["type"] == "lifespan"
    await receive()
    print("starting", flush=True)
    await asyncio.sleep(2)  # a start-up that takes a while, as a Redis that is slow to answer
    await send({"type": "lifespan.startup.complete"})
    await receive()
    await send({"type": "lifespan.shutdown.complete"})

Server(uvicorn.Config(app, port=0, log_level="warning")).run()
'''


def test_a_sigterm_during_start_up_stops_the_server_with_exit_0() -> None:
    """uvicorn re-raises the signal that stopped it, and during start-up the app's own
    handler (which says the stop went well) is not installed yet: the process died of it
    (exit -15) under `gateway serve`."""
    process = subprocess.Popen([sys.executable, "-c", APP], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "starting"
    process.send_signal(signal.SIGTERM)
    assert process.wait(30) == 0
