"""The hub's one pub/sub connection: an asyncio protocol with the hiredis parser.

Replies are parsed in ``data_received`` and handed to a callback on the spot, so that a
message goes from the socket to every watcher's ``send`` without a task switch or an
await per message (DESIGN.md section 5). Commands are written straight to the transport;
Redis answers them in order on the same connection.
"""

from __future__ import annotations

import asyncio
import os
import ssl
from collections import deque
from collections.abc import Callable
from typing import Any, cast
from urllib.parse import parse_qs, unquote, urlsplit

import hiredis

Reply = Any


def pack(*args: str | bytes) -> bytes:
    """RESP encoding of one command."""
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        raw = arg.encode() if isinstance(arg, str) else arg
        out.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(out)


class PubSubConnection(asyncio.Protocol):
    def __init__(self, on_reply: Callable[[Reply], None]) -> None:
        self._on_reply = on_reply
        self._reader = hiredis.Reader()
        self._transport: asyncio.Transport | None = None
        self._handshake: deque[asyncio.Future[Reply]] = deque()
        self.closed: asyncio.Future[Exception | None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(
        cls, url: str, on_reply: Callable[[Reply], None], *, name: str | None = None
    ) -> PubSubConnection:
        """Connect, authenticate and name the connection. Bound it with a timeout."""
        loop = asyncio.get_running_loop()
        parts = urlsplit(url)
        query = parse_qs(parts.query)
        protocol = cls(on_reply)
        if parts.scheme == "unix":
            await loop.create_unix_connection(lambda: protocol, parts.path)
        else:
            context = ssl.create_default_context() if parts.scheme == "rediss" else None
            await loop.create_connection(
                lambda: protocol, parts.hostname or "127.0.0.1", parts.port or 6379, ssl=context
            )
        password = parts.password or next(iter(query.get("password", [])), None)
        username = parts.username or next(iter(query.get("username", [])), None)
        try:
            if password:
                auth = (unquote(username), unquote(password)) if username else (unquote(password),)
                await protocol.request("AUTH", *auth)
            # A name makes each process's hub connection easy to find in CLIENT LIST.
            await protocol.request("CLIENT", "SETNAME", name or f"gateway-hub-{os.getpid()}")
            # PING answers -LOADING while a restarted server reads its data back, and a
            # SUBSCRIBE sent then would be refused: only a PONG means ready.
            await protocol.request("PING")
        except BaseException:
            protocol.close()
            raise
        return protocol

    async def request(self, *args: str) -> Reply:
        """A command with an ordinary reply; only before the first SUBSCRIBE."""
        waiter: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._handshake.append(waiter)
        self.send(*args)
        reply = await waiter
        if isinstance(reply, hiredis.ReplyError):
            raise ConnectionError(f"{args[0]} refused by Redis: {reply}")
        return reply

    def send(self, *args: str | bytes) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.write(pack(*args))

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # -- asyncio.Protocol --------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports do not subclass asyncio.Transport, but behave as one.
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        try:
            while (reply := reader.gets()) is not False:
                if self._handshake:
                    self._handshake.popleft().set_result(reply)
                else:
                    self._on_reply(reply)
        except hiredis.ProtocolError as exc:
            self._fail(ConnectionError(f"protocol error on the pub/sub connection: {exc}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._fail(exc or ConnectionError("the pub/sub connection was closed"))

    def _fail(self, exc: Exception) -> None:
        if self._transport is not None:
            self._transport.close()
        for waiter in self._handshake:
            if not waiter.done():
                waiter.set_exception(exc)
        self._handshake.clear()
        if not self.closed.done():
            self.closed.set_result(exc)
