"""Types the endpoints share."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Send

if TYPE_CHECKING:
    from gateway.web.context import Context

# What a handler returns: a whole response, or a stream to await (the coroutine runs
# once the handler returned, so that the Request it was built from is not held for the
# stream's whole life).
Reply = Response | Coroutine[Any, Any, None]
Handler = Callable[[Request, "Context", Send], Awaitable[Reply]]

# The ASGI extension through which the gateway's own server (gateway.server.DirectWrite)
# lets a stream write a body part without a send coroutine.
DIRECT_WRITE = "gateway.direct_write"


class DirectWriter(Protocol):
    def __call__(self, body: bytes) -> bool:
        """Write a body part now: True; False when it must go through ``send``."""

    def serves(self, send: object) -> bool:
        """Whether ``send`` is the server's own (no wrapper that would be skipped)."""
