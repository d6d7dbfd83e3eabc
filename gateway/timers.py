"""Deadlines on the hot paths: a timer on a future instead of a cancel scope.

Every request read and every stream's subscription wait is bounded (docs/operations.md, Settings).
``anyio.fail_after`` and ``asyncio.timeout`` find the current task to cancel it, and on
Python 3.11 each lookup of the running loop behind that is a ``getpid()`` system call
(asyncio checks that the loop was not inherited across a fork). On the paths that run
per request or per stream opening, the wait is instead a future failed by a loop timer,
and the objects that run there keep the loop they were made on (``self._loop``) rather
than asking for it again: docs/architecture.md lists this with the other measured
departures from the libraries. Everywhere else, anyio's scopes are used as usual.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def fail_at(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], when: float,
    error: Callable[[], BaseException],
) -> asyncio.TimerHandle:
    """Fail ``future`` with ``error()`` at loop time ``when`` unless it is done by then.

    Cancel the returned handle once the future is done.
    """
    return loop.call_at(when, _fail_pending, future, error)


def _fail_pending(future: asyncio.Future[Any], error: Callable[[], BaseException]) -> None:
    if not future.done():
        future.set_exception(error())
