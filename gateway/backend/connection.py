"""A Redis connection as an asyncio protocol with the hiredis parser.

Replies are parsed in ``data_received`` and handed on the spot: to the command waiting
for them (Redis answers in order on one connection), or, when none waits, to a callback.
The pub/sub connection (gateway.backend.subscriber) uses the callback, so that a message
goes from the socket to every watcher's ``send`` without a task switch or an await per
message (docs/architecture.md); the request reads (gateway.backend.reads) pipeline many
commands on one connection. Commands are batched into one write per turn of the event
loop. Why this and not redis-py on these two paths: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any, cast
from urllib.parse import urlsplit

import hiredis
from redis.asyncio.connection import RedisSSLContext, parse_url

from gateway.timers import fail_at

Reply = Any


def pack(*args: str | bytes) -> bytes:
    """RESP encoding of one command."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


def _tls_context(options: Mapping[str, object]) -> ssl.SSLContext:
    """redis-py's TLS context for the URL's ``ssl_*`` options (names without the prefix)."""
    tls: dict[str, Any] = {name.removeprefix("ssl_"): value for name, value in options.items()
                           if name.startswith("ssl_")}
    context: ssl.SSLContext = RedisSSLContext(**tls).get()
    return context


class Refused(ConnectionError):
    """Redis answered a command with an error: the connection itself is fine."""


def _name(command: str | bytes) -> str:
    return command.decode(errors="replace") if isinstance(command, bytes) else command


class RedisConnection(asyncio.Protocol):
    def __init__(self, on_reply: Callable[[Reply], None],
                 on_read: Callable[[], None] | None = None) -> None:
        self._on_reply = on_reply
        self._on_read = on_read  # after the replies of one read were handed on
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._waiting: deque[asyncio.Future[Reply]] = deque()
        self._outbox: list[bytes] = []
        # Kept: these run per request (gateway.timers says why).
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[Exception | None] = self._loop.create_future()

    @classmethod
    async def open(
        cls, url: str, on_reply: Callable[[Reply], None], *, name: str | None = None,
        on_read: Callable[[], None] | None = None,
    ) -> RedisConnection:
        """Connect, authenticate, name the connection and select its database. The URL is
        read by redis-py's own parser, and its TLS options (``ssl_cert_reqs``,
        ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``, ``ssl_check_hostname``, ...)
        make the TLS context as redis-py makes it, so that these connections and redis-py's
        agree on everything the URL says. Bound it with a timeout."""
        loop = asyncio.get_running_loop()
        options = parse_url(url)
        protocol = cls(on_reply, on_read)
        if "path" in options:
            await loop.create_unix_connection(lambda: protocol, options["path"])
        else:
            await loop.create_connection(
                lambda: protocol,
                options.get("host") or "127.0.0.1",
                options.get("port") or 6379,
                ssl=_tls_context(options) if urlsplit(url).scheme == "rediss" else None,
            )
        try:
            password, username = options.get("password"), options.get("username")
            if password or username:
                # As redis-py does (HELLO 3 AUTH user password): the user named, "default"
                # when the URL names none, and an empty password when it gives none (a
                # nopass user), so that a URL works here exactly when it works for workers.
                await protocol.request("AUTH", username or "default", password or "")
            # A name makes each process's connections easy to find in CLIENT LIST; a user
            # that may not name its connections (a least-privilege ACL) goes without.
            try:
                await protocol.request("CLIENT", "SETNAME",
                                       name or f"gateway-hub-{os.getpid()}")
            except Refused:
                pass
            database = int(options.get("db") or 0)
            if database:
                await protocol.request("SELECT", str(database))
            # PING answers -LOADING while a restarted server reads its data back, and a
            # SUBSCRIBE sent then would be refused: only a PONG means ready.
            await protocol.request("PING")
        except BaseException:
            protocol.close()
            raise
        return protocol

    @property
    def usable(self) -> bool:
        """Open and not closing: a closed connection may not have said so yet."""
        return self._transport is not None and not self._transport.is_closing()

    async def request(self, *args: str | bytes, expire_after: float | None = None) -> Reply:
        """A command with an ordinary reply (on a pub/sub connection: before SUBSCRIBE).

        With ``expire_after`` (seconds), TimeoutError once it passed without a reply.
        Refused when Redis answers with an error.
        """
        if not self.usable:
            raise ConnectionError("the Redis connection is closed")
        waiter: asyncio.Future[Reply] = self._loop.create_future()
        self._waiting.append(waiter)
        self.send(*args)
        if expire_after is None:
            reply = await waiter
        else:
            timer = fail_at(self._loop, waiter, self._loop.time() + expire_after, TimeoutError)
            try:
                reply = await waiter
            finally:
                timer.cancel()
        if isinstance(reply, hiredis.ReplyError):
            raise Refused(f"{_name(args[0])} refused by Redis: {reply}")
        return reply

    async def request_many(
        self, commands: list[tuple[str | bytes, ...]], *, expire_after: float
    ) -> list[Reply]:
        """Several commands in one write; their replies in order, an error reply as a
        Refused instance in its place. TimeoutError when not all came within
        ``expire_after`` seconds."""
        if not self.usable:
            raise ConnectionError("the Redis connection is closed")
        loop = self._loop
        waiters: list[asyncio.Future[Reply]] = []
        for args in commands:
            waiter: asyncio.Future[Reply] = loop.create_future()
            self._waiting.append(waiter)
            waiters.append(waiter)
            self.send(*args)
        if not waiters:
            return []
        last = waiters[-1]  # Redis answers in order: the last reply comes last
        timer = fail_at(loop, last, loop.time() + expire_after, TimeoutError)
        try:
            await last
        except BaseException:
            for waiter in waiters:  # nobody will read them: no "exception never retrieved"
                if not waiter.cancel() and not waiter.cancelled():
                    waiter.exception()
            raise
        finally:
            timer.cancel()
        replies = [waiter.result() for waiter in waiters]
        return [Refused(f"{_name(args[0])} refused by Redis: {reply}")
                if isinstance(reply, hiredis.ReplyError) else reply
                for args, reply in zip(commands, replies, strict=True)]

    def send(self, *args: str | bytes) -> None:
        """Queue a command; what one turn of the event loop queues goes in one write."""
        if self._transport is None or self._transport.is_closing():
            return
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(pack(*args))

    def _flush(self) -> None:
        out, self._outbox = self._outbox, []
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(b"".join(out))

    def close(self) -> None:
        # abort(), not close(): close() waits for the write buffer to drain, which on a
        # connection that stopped reading is never, and connection_lost (what the hub and
        # the pipeline wait for) would not come.
        if self._transport is not None:
            self._transport.abort()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                if self._waiting:
                    waiter = self._waiting.popleft()
                    if not waiter.done():  # a caller that timed out is gone
                        waiter.set_result(reply)
                else:
                    self._on_reply(reply)
        except hiredis.ProtocolError as exc:
            self._fail(ConnectionError(f"protocol error on a Redis connection: {exc}"))
        if self._on_read is not None:
            self._on_read()

    def pause_for_a_turn(self) -> None:
        """Read nothing more until the event loop has run everything else that is ready
        (a fan-out that took long must not starve the other requests)."""
        transport = self._transport
        if transport is not None and not transport.is_closing():
            transport.pause_reading()
            self._loop.call_soon(self._read_again)

    def _read_again(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(exc or ConnectionError("the Redis connection was closed"))

    def _fail(self, exc: Exception) -> None:
        if self._transport is not None:
            self._transport.abort()
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_exception(exc)
        self._waiting.clear()
        if not self.closed.done():
            self.closed.set_result(exc)
