"""An ASGI ``send`` driven by hand: the one place that reaches into asyncio's internals.

docs/architecture.md keeps the stream path lean: no task per write, no task per stream
but its own. The hub writes straight from ``data_received``: through the server's
``gateway.direct_write`` where it has one and the client reads along (one call: the
common case), otherwise through the stream's ``send``, where a write the server completes
at once costs one ``coroutine.send(None)`` and nothing else. A write that has to wait
(the client is slow) is resumed by a callback on the future it waits for, as
``asyncio.Task`` would resume it, still with no task. docs/architecture.md has the
measurements behind this.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Generator
from types import CoroutineType
from typing import Any

from starlette.types import Message, Send


class AsgiWriter:
    """Writes ASGI messages through ``send``, one at a time, without a task.

    ``write`` starts a write; a write that waits is carried on by a callback, and
    ``written()`` is called once it is done, ``broken()`` if the server refused it (the
    connection is gone). Subclasses override those two.
    """

    __slots__ = ("_direct", "_in_flight", "_send", "waiting_since")

    def __init__(self, send: Send, direct: Callable[[bytes], bool] | None = None) -> None:
        self._send = send
        # The server's gateway.direct_write extension, where it offers one
        # (gateway.server.DirectWrite): a body part it can write at once takes one call.
        self._direct = direct
        self._in_flight: Coroutine[Any, Any, Any] | Generator[Any, None, Any] | None = None
        # When the write in flight started waiting for the client (None: no such write).
        self.waiting_since: float | None = None

    @property
    def writing(self) -> bool:
        """Whether a write waits for the client now."""
        return self._in_flight is not None

    def write(self, message: Message) -> bool:
        """Start writing ``message``: True when the server took it at once; False when the
        write waits (``written()`` follows) or was refused (``broken()`` was called)."""
        direct = self._direct
        if direct is not None and message.get("more_body") and direct(message["body"]):
            return True
        awaitable = self._send(message)
        # An async function's coroutine is driven as it is (the check is the cheap one:
        # this runs per watcher per event); any other awaitable through its iterator.
        if type(awaitable) is CoroutineType or isinstance(awaitable, Coroutine):
            step: Coroutine[Any, Any, Any] | Generator[Any, None, Any] = awaitable
        else:
            step = awaitable.__await__()
        try:
            waiting = step.send(None)
        except StopIteration:
            return True
        except BaseException:
            step.close()
            self.broken()
            return False
        self._wait(step, waiting)
        return False

    def abandon(self) -> None:
        """Give up the write in flight (the client left): it is closed, never resumed."""
        step, self._in_flight = self._in_flight, None
        if step is not None:
            step.close()

    # -- hooks --------------------------------------------------------------------------

    def written(self) -> None:
        """A write that had to wait is done."""

    def broken(self) -> None:
        """The server refused a write: the connection is gone."""

    # -- the driver ---------------------------------------------------------------------

    def _wait(self, step: Coroutine[Any, Any, Any] | Generator[Any, None, Any],
              waiting: object) -> None:
        self._in_flight = step
        if self.waiting_since is None:
            self.waiting_since = asyncio.get_running_loop().time()
        if isinstance(waiting, asyncio.Future):
            # What asyncio.Task does with a future it is handed.
            waiting._asyncio_future_blocking = False
            waiting.add_done_callback(self._resume)
        else:
            # A bare yield: the coroutine asks to be run again soon.
            asyncio.get_running_loop().call_soon(self._resume, None)

    def _resume(self, _: object) -> None:
        step, self._in_flight = self._in_flight, None
        if step is None:
            return  # abandoned meanwhile
        try:
            waiting = step.send(None)
        except StopIteration:
            self.waiting_since = None
            self.written()
            return
        except BaseException:
            step.close()
            self.broken()
            return
        self._wait(step, waiting)
