"""The HTTP server the gateway ships: uvicorn's httptools protocol, with what it lacks.

``gateway serve`` runs uvicorn with this protocol class; under plain uvicorn pass it with
``--http gateway.server:HttpProtocol``. Compared with uvicorn's own (0.30 to at least
0.54), it:

- ends a stream whose client left after pipelining a request behind it: uvicorn moves
  its current cycle to the pipelined request, and on a lost connection marks only that
  one disconnected, so the stream's ``receive()`` never returned and the stream, its
  subscription and its memory stayed for ever;
- bounds the request line and headers (``GATEWAY_MAX_HEADER_BYTES``: 431) and the time to
  receive them (``GATEWAY_HEADER_TIMEOUT_SECONDS``: 408, or a plain close when nothing
  came), where httptools accepts any size and uvicorn waits for ever (item 2);
- sends an HTTP/1.0 client its stream close-delimited, as RFC 9112 section 6.3 says,
  instead of in chunks that HTTP/1.0 does not have (item 16);
- gives each request's cycle a lean event to wait on in ``receive()``, and each
  connection's flow control one to wait on while the client reads slowly (``_Event``),
  instead of two ``asyncio.Event``: their deques of waiters alone are about 1.5 KiB held
  by every open stream, and each wait looks up the running loop (a ``getpid()`` system
  call on Python 3.11), and a list for the queue of pipelined requests where uvicorn
  makes a deque (another 0.6 KiB per connection; docs/architecture.md);
- writes a response's head together with its first body, in one ``write()`` system
  call instead of two (``_HeadWithBody``): a stream's headers and opening frame, a JSON
  answer's headers and body;
- offers each request the ASGI extension ``gateway.direct_write`` (``DirectWrite``): the
  hub writes an event to a stream that reads along with one call instead of a ``send``
  coroutine per watcher per event (the fan-out's cost beyond the write itself).

Everything else is uvicorn's, unchanged.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, cast

from uvicorn.config import Config
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle
from uvicorn.server import ServerState

from gateway.settings import Settings
from gateway.web import problems
from gateway.web.types import DIRECT_WRITE

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


def _answer(error: problems.ApiError) -> bytes:
    """A whole HTTP response for an answer given before any request reached the app."""
    response = error.response()
    status = error.status
    lines = [b"HTTP/1.1 %d %s\r\n" % (status, HTTPStatus(status).phrase.encode())]
    lines += [name + b": " + value + b"\r\n" for name, value in response.raw_headers]
    return b"".join([*lines, b"connection: close\r\n\r\n", response.body])


class _Guard:
    """What the protocol adds to a connection, in one slotted object: uvicorn's protocol
    has 28 attributes, and CPython keeps an instance's attributes compact only up to 30
    (past that each connection carried a 1.5 KiB dict: docs/architecture.md)."""

    __slots__ = ("head_bytes", "head_size", "in_head", "running", "since", "too_large")

    def __init__(self, since: float) -> None:
        self.running: RequestResponseCycle | None = None  # displaced by a pipelined request
        self.in_head = False  # between a request's first byte and the end of its head
        self.head_bytes = 0  # bytes received while in a head (the chunks, not exact)
        self.head_size = 0  # the head's URL and headers as parsed (exact)
        self.since: float | None = since  # when the head it waits for began to be owed
        self.too_large = False


class _Event:
    """What uvicorn's cycle uses of ``asyncio.Event`` (set, clear, is_set, wait), for the
    one waiter that ``receive()`` almost always is: a future made only while someone
    waits, on the loop the protocol keeps. Further waiters at once (an app may call
    ``receive()`` from two tasks) each get a future of their own."""

    __slots__ = ("_loop", "_more", "_value", "_waiter")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._value = False
        self._waiter: asyncio.Future[None] | None = None
        self._more: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._value

    def set(self) -> None:
        if self._value:
            return
        self._value = True
        waiter, more = self._waiter, self._more
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if more is not None:
            for future in more:
                if not future.done():
                    future.set_result(None)

    def clear(self) -> None:
        self._value = False

    async def wait(self) -> bool:
        if self._value:
            return True
        future: asyncio.Future[None] = self._loop.create_future()
        if self._waiter is None:
            self._waiter = future
        else:
            if self._more is None:
                self._more = []
            self._more.append(future)
        try:
            await future
            return True
        finally:
            if self._waiter is future:
                self._waiter = None
            elif self._more is not None:
                self._more.remove(future)
                if not self._more:
                    self._more = None


class _Pipeline(list[tuple[RequestResponseCycle, Any]]):
    """The queue of pipelined requests uvicorn keeps per connection (appendleft, pop and
    truth only), empty but for a pipelining client: an empty list is 56 bytes where an
    empty deque is 624."""

    __slots__ = ()

    def appendleft(self, item: tuple[RequestResponseCycle, Any]) -> None:
        self.insert(0, item)


class _HeadWithBody:
    """The transport a cycle writes to until its response's first body.

    uvicorn writes the head when the app sends ``http.response.start`` and each body
    when it sends one. The head is held here instead, and goes out with the first body
    in one write (a 204's or a 304's empty body included); if the app sends no body at
    once (it waits for something first), the head goes out alone from a callback the
    event loop runs next. Then the cycle writes to the transport itself again: nothing
    here is on the path of later events. A HEAD's head goes out at once (no body follows
    it), and so does anything written before the head (``100 Continue``).

    The cycle is held weakly: the cycle holds this as its transport, and a response that
    never starts (its client left first) must not leave a reference cycle behind.
    """

    __slots__ = ("_cycle", "_head", "_loop", "_transport")

    def __init__(self, cycle: RequestResponseCycle, transport: asyncio.Transport,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._cycle = weakref.ref(cycle)
        self._transport = transport
        self._loop = loop
        self._head: bytes | None = None

    def write(self, data: bytes) -> None:
        head = self._head
        if head is not None:
            self._release()
            self._transport.writelines((head, data))
            return
        cycle = self._cycle()
        if cycle is not None and cycle.response_started and cycle.scope["method"] != "HEAD":
            self._head = data  # the head
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def _release(self) -> None:
        self._head = None
        cycle = self._cycle()
        if cycle is not None and cast(object, cycle.transport) is self:
            cycle.transport = self._transport

    def flush(self) -> None:
        head = self._head
        if head is not None:
            self._release()
            if not self._transport.is_closing():
                self._transport.write(head)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class DirectWrite:
    """``scope["extensions"]["gateway.direct_write"]``: write one more part of a started
    response's body now, as uvicorn's ``send`` would write it (a chunk; the bytes as they
    are for a close-delimited HTTP/1.0 body), without a coroutine.

    Returns False, having written nothing, whenever ``send`` has something to do beyond
    the write: the client reads slowly (``send`` waits), the connection is gone, the
    response has not started or has ended. The caller then sends the same message
    through ``send``. An app that never uses it gets uvicorn's ``send`` alone.
    """

    __slots__ = ("_cycle",)

    def __init__(self, cycle: RequestResponseCycle) -> None:
        # A weak reference: the cycle's scope holds this, and a reference cycle would keep
        # every ended request's cycle, scope and headers until a full collection.
        self._cycle = weakref.ref(cycle)

    def serves(self, send: object) -> bool:
        """Whether ``send`` is the cycle's own: an app that wraps it (a middleware, uvicorn's
        message logger at log level trace) must not have its wrapper skipped."""
        cycle = self._cycle()
        return cycle is not None and send == cycle.send

    def __call__(self, body: bytes) -> bool:
        cycle = self._cycle()
        if (cycle is None or cycle.scope["method"] == "HEAD" or cycle.flow.write_paused
                or cycle.disconnected or not cycle.response_started
                or cycle.response_complete or not body):
            return False
        if cycle.chunked_encoding:
            cycle.transport.write(_chunk(body))
            return True
        if cycle.chunked_encoding is None:
            return False
        if len(body) > cycle.expected_content_length:
            return False  # send raises what uvicorn raises
        cycle.expected_content_length -= len(body)
        cycle.transport.write(body)
        return True


# The hub writes one message's body to every watcher in turn: the chunk of the last body
# framed is kept, so that it is framed once, not once per watcher.
_last_chunk: tuple[bytes, bytes] = (b"", b"")


def _chunk(body: bytes) -> bytes:
    global _last_chunk
    last, chunk = _last_chunk
    if body is not last or type(body) is not bytes:  # a bytearray may have changed since
        chunk = b"%x\r\n%s\r\n" % (len(body), body)  # as RequestResponseCycle.send frames it
        _last_chunk = (body, chunk)
    return chunk


class _Sweeper:
    """One timer per event loop for every connection that owes a request head (as the hub
    has one timer for every stream): a connection whose head is late is closed on the
    next sweep, at most a second after its time."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.owing: dict[HttpProtocol, None] = {}  # in the order their heads became owed
        self.timer: asyncio.TimerHandle | None = None

    def add(self, protocol: HttpProtocol) -> None:
        self.owing.pop(protocol, None)
        self.owing[protocol] = None
        if self.timer is None:
            self.timer = self.loop.call_later(_SWEEP_SECONDS, self.sweep)

    def discard(self, protocol: HttpProtocol) -> None:
        self.owing.pop(protocol, None)

    def sweep(self) -> None:
        self.timer = None
        now = self.loop.time()
        late = []
        for protocol in self.owing:
            since = protocol.guard.since
            if since is not None and now - since < protocol.limits_().header_timeout_seconds:
                break  # the rest began later
            late.append(protocol)
        for protocol in late:
            self.owing.pop(protocol, None)
            if protocol.guard.since is not None:
                protocol.head_timed_out()
        if self.owing:
            self.timer = self.loop.call_later(_SWEEP_SECONDS, self.sweep)


_SWEEP_SECONDS = 1.0
_SWEEPERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Sweeper] = (
    weakref.WeakKeyDictionary())


def _sweeper(loop: asyncio.AbstractEventLoop) -> _Sweeper:
    sweeper = _SWEEPERS.get(loop)
    if sweeper is None:
        sweeper = _SWEEPERS[loop] = _Sweeper(loop)
    return sweeper


class HttpProtocol(HttpToolsProtocol):
    # Set by gateway serve (protocol()); read from the environment under plain uvicorn.
    limits: ClassVar[Limits | None] = None

    def __init__(self, config: Config, server_state: ServerState,
                 app_state: dict[str, Any], _loop: asyncio.AbstractEventLoop | None = None
                 ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.guard = _Guard(self.loop.time())
        self.pipeline = _Pipeline()  # type: ignore[assignment]

    @classmethod
    def limits_(cls) -> Limits:
        limits = cls.limits or HttpProtocol.limits
        if limits is None:
            limits = HttpProtocol.limits = Limits.of(Settings.from_env())
        return limits

    # -- connection ---------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        flow = self.flow
        writable = getattr(flow, "_is_writable_event", None)  # uvicorn's own, where it is
        if isinstance(writable, asyncio.Event):
            lean = _Event(self.loop)
            if writable.is_set():
                lean.set()
            flow._is_writable_event = lean  # type: ignore[assignment]
        _sweeper(self.loop).add(self)  # a new connection owes a request head, in time

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        _sweeper(self.loop).discard(self)
        guard = self.guard
        running, guard.running = guard.running, None
        if running is not None and not running.response_complete:
            running.disconnected = True
            running.message_event.set()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        guard = self.guard
        if guard.in_head and not self.transport.is_closing():
            guard.head_bytes += len(data)
            if guard.head_bytes > self.limits_().max_header_bytes:
                self._refuse_head()

    # -- parser callbacks ---------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        guard = self.guard
        guard.in_head, guard.head_bytes, guard.head_size = True, 0, 0
        if guard.since is None:  # a request on a kept-alive connection: its head is owed
            guard.since = self.loop.time()
            _sweeper(self.loop).add(self)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        guard = self.guard
        guard.in_head, guard.since = False, None
        _sweeper(self.loop).discard(self)
        running = self.cycle
        super().on_headers_complete()
        cycle = self.cycle
        if running is not None and cycle is not running and not running.response_complete:
            guard.running = running
        if cycle is not None and cycle is not running:
            # Its task is made (by loop.create_task, as uvicorn does: not an eager task
            # factory) or queued behind a stream, and has not run yet: nothing waits on the
            # event it came with, nothing was written.
            cycle.message_event = _Event(self.loop)  # type: ignore[assignment]
            cycle.transport = _HeadWithBody(cycle, self.transport, self.loop)  # type: ignore[assignment]
            extensions: dict[str, object] = self.scope.setdefault(  # type: ignore[assignment]
                "extensions", {})
            extensions[DIRECT_WRITE] = DirectWrite(cycle)
            if self.scope["http_version"] == "1.0":
                cycle.send = _close_delimited(cycle)  # type: ignore[method-assign, assignment]

    def on_response_complete(self) -> None:
        guard = self.guard
        if guard.running is not None and guard.running.response_complete:
            guard.running = None
        super().on_response_complete()

    def send_400_response(self, msg: str) -> None:
        # The parser stopped: on a head too large (raised from on_url or on_header), or on
        # anything it could not read.
        if self.guard.too_large:
            self._refuse_head()
            return
        # The contract's error body, as every other answer (uvicorn's is plain text).
        if not self._answering() and not self.transport.is_closing():
            self.transport.write(_answer(problems.malformed()))
        self.transport.close()

    # -- limits -------------------------------------------------------------------------

    def _count(self, size: int) -> None:
        guard = self.guard
        guard.head_size += size
        if guard.head_size > self.limits_().max_header_bytes:
            guard.too_large = True
            raise _HeadTooLarge

    def _refuse_head(self) -> None:
        guard = self.guard
        guard.too_large, guard.in_head, guard.since = True, False, None
        _sweeper(self.loop).discard(self)
        if self.transport.is_closing():
            return
        if not self._answering():
            limit = self.limits_().max_header_bytes
            self.transport.write(_answer(problems.headers_too_large(limit)))
        self.transport.close()

    def _answering(self) -> bool:
        """Whether a response (a stream, say) is still being written on this connection:
        then nothing else may be written into it, and a refusal only closes it."""
        return self.cycle is not None and not self.cycle.response_complete

    def head_timed_out(self) -> None:
        guard = self.guard
        guard.since = None
        if self.transport.is_closing():
            return
        if guard.in_head and not self._answering():  # a head started and did not finish
            timeout = self.limits_().header_timeout_seconds
            self.transport.write(_answer(problems.head_timeout(timeout)))
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
