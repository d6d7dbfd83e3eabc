"""The HTTP server the gateway ships: uvicorn's httptools protocol, with what it lacks.

``gateway serve`` runs uvicorn with this protocol class; under plain uvicorn pass it with
``--http gateway.server:HttpProtocol``. Compared with uvicorn's own (0.30 to at least
0.54), it:

- ends a stream whose client left after pipelining a request behind it: uvicorn moves
  its current cycle to the pipelined request, and on a lost connection marks only that
  one disconnected, so the stream's ``receive()`` never returned and the stream, its
  subscription and its memory stayed for ever (issue 10, item 1);
- bounds the request line and headers (``GATEWAY_MAX_HEADER_BYTES``: 431) and the time to
  receive them (``GATEWAY_HEADER_TIMEOUT_SECONDS``: 408, or a plain close when nothing
  came), where httptools accepts any size and uvicorn waits for ever (item 2);
- sends an HTTP/1.0 client its stream close-delimited, as RFC 9112 section 6.3 says,
  instead of in chunks that HTTP/1.0 does not have (item 16).

Everything else is uvicorn's, unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.settings import Settings
from gateway.web import problems

# A close-delimited body has no length: uvicorn counts down from this instead.
_UNBOUNDED = 1 << 62


@dataclass(frozen=True)
class Limits:
    max_header_bytes: int
    header_timeout_seconds: float

    @classmethod
    def of(cls, settings: Settings) -> Limits:
        return cls(settings.max_header_bytes, settings.header_timeout_seconds)


class _HeadTooLarge(Exception):
    pass


def _answer(status: int, error: problems.ApiError) -> bytes:
    """A whole HTTP response for an answer given before any request reached the app."""
    response = error.response()
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
    lines += [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
    return b"".join([*lines, b"connection: close\r\n\r\n", response.body])


class HttpProtocol(HttpToolsProtocol):
    # Set by gateway serve (protocol()); read from the environment under plain uvicorn.
    limits: ClassVar[Limits | None] = None

    def __init__(self, config: Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None
                 ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        if HttpProtocol.limits is None and type(self).limits is None:
            HttpProtocol.limits = Limits.of(Settings.from_env())
        limits = type(self).limits or HttpProtocol.limits
        assert limits is not None
        self._max_head = limits.max_header_bytes
        self._head_timeout = limits.header_timeout_seconds
        # The cycle a pipelined request displaced while its response was still going.
        self._running: RequestResponseCycle | None = None
        self._in_head = False  # between a request's first byte and the end of its head
        self._head_bytes = 0  # bytes received while in a head (the chunks, not exact)
        self._head_size = 0  # the head's URL and headers as parsed (exact)
        self._head_timer: asyncio.TimerHandle | None = None
        self._too_large = False

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a new connection owes a request head, in time

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._disarm_head_timer()
        running, self._running = self._running, None
        if running is not None and not running.response_complete:
            running.disconnected = True
            running.message_event.set()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            self._head_bytes += len(data)
            if self._head_bytes > self._max_head:
                self._refuse_head()

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes, self._head_size = True, 0, 0
        if self._head_timer is None:
            self._arm_head_timer()

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._disarm_head_timer()
        running = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if running is not None and cycle is not running and not running.response_complete:
            self._running = running
        if cycle is not None and cycle is not running and self.scope["http_version"] == "1.0":
            cycle.send = _close_delimited(cycle)  # type: ignore[method-assign, assignment]

    def on_response_complete(self) -> None:
        if self._running is not None and self._running.response_complete:
            self._running = None
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        # The parser stopped: on a head too large (raised from on_url or on_header), or on
        # anything it could not read.
        if self._too_large:
            self._refuse_head()
            return
        super().send_400_response(msg)

    # -- limits -------------------------------------------------------------------------

    def _count(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self._max_head:
            self._too_large = True
            raise _HeadTooLarge

    def _refuse_head(self) -> None:
        self._too_large = True
        self._in_head = False
        self._disarm_head_timer()
        if self.transport.is_closing():
            return
        if not self._answering():
            self.transport.write(_answer(431, problems.ApiError(
                431, "request.headers_too_large",
                f"the request line and headers are limited to {self._max_head} bytes")))
        self.transport.close()

    def _answering(self) -> bool:
        """Whether a response (a stream, say) is still being written on this connection:
        then nothing else may be written into it, and a refusal only closes it."""
        return self.cycle is not None and not self.cycle.response_complete

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._in_head and not self._answering():  # a head started and did not finish
            self.transport.write(_answer(408, problems.ApiError(
                408, "request.timeout",
                f"the request head did not arrive within {self._head_timeout:g} s")))
        self.transport.close()


def _close_delimited(cycle: RequestResponseCycle) -> Callable[[Any], Awaitable[None]]:
    """The ``send`` of an HTTP/1.0 request's cycle: a response without a length is sent
    as it is and ends with the connection, instead of in chunks."""
    send = cycle.send
    unbounded = False

    async def send_close_delimited(message: Any) -> None:
        nonlocal unbounded
        if message["type"] == "http.response.start":
            names = {name.lower() for name, _ in message.get("headers", ())}
            if b"content-length" not in names and message["status"] not in (204, 304):
                unbounded = True
                cycle.chunked_encoding = False
                cycle.expected_content_length = _UNBOUNDED
        elif unbounded and not message.get("more_body", False):
            cycle.expected_content_length = len(message.get("body", b""))
        await send(message)

    return send_close_delimited


def protocol(settings: Settings) -> type[HttpProtocol]:
    """The protocol class with the limits of ``settings`` (for uvicorn.Config(http=...))."""
    return type("HttpProtocol", (HttpProtocol,), {"limits": Limits.of(settings)})
