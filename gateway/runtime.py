"""The process around the app: garbage collector tuning and exit signals.

Both are set up by the app's lifespan (gateway.app), so that they hold under any ASGI
server: ``gateway serve``, plain ``uvicorn --factory``, ``--workers``. ``Server`` is the
uvicorn server ``gateway serve`` runs, for the one moment the lifespan cannot cover: a
signal that comes while the app is still starting.
"""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from gateway.fanout.hub import Hub

# Young-generation collections every 50,000 net allocations instead of 700. Each open
# stream leaves a handful of long-lived objects (its coroutine frames, watcher, dicts),
# which the default thresholds kept re-scanning (docs/architecture.md has the figures).
_GC_THRESHOLDS = (50_000, 50, 100)


def tune_gc() -> None:
    """Move what start-up built (modules, settings, the hub) out of the collector's way."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*_GC_THRESHOLDS)


@contextmanager
def streams_end_on_exit_signal(hub: Hub) -> Iterator[None]:
    """On SIGTERM/SIGINT, end every open stream with a ``retry:`` (docs/architecture.md),
    and let a stop that went well exit 0.

    An ASGI server waits for open responses before it runs the lifespan shutdown, so the
    streams must end when the signal arrives. The server's own handler still runs after
    ours; the hub's end frame (a jittered ``retry:``, gateway.app) spreads the clients'
    reconnects over [retry, 2 * retry] milliseconds.
    """
    loop = asyncio.get_running_loop()
    previous: dict[int, Any] = {}

    def handler(signum: int, frame: Any) -> None:
        # A signal handler may run between any two bytecodes: only schedule the work.
        loop.call_soon_threadsafe(hub.end_streams)
        chained = previous.get(signum)
        if callable(chained):
            chained(signum, frame)
            # uvicorn records the signal to re-raise it once it has stopped, so that the
            # process dies of it; a stop that went well should exit 0 (docs/operations.md), so the
            # record goes.
            captured = getattr(getattr(chained, "__self__", None), "_captured_signals", None)
            if isinstance(captured, list) and signum in captured:
                captured.remove(signum)

    try:
        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[int(sig)] = signal.signal(sig, handler)
    except ValueError:  # not the main thread (an embedding server): nothing to chain
        pass
    try:
        yield
    finally:
        for signum, chained in previous.items():
            signal.signal(signum, chained)


class Server(uvicorn.Server):
    """uvicorn's server, except that a stop by SIGTERM/SIGINT exits 0.

    uvicorn records the signal that stopped it and raises it again once it is done, so
    that the process dies of it; the app's handler (above) takes the record back, but a
    signal that comes before the lifespan installed it (while Redis is slow to answer,
    say) would still kill the process.
    """

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        with super().capture_signals():
            try:
                yield
            finally:
                self._captured_signals.clear()  # a stop that went well exits 0
