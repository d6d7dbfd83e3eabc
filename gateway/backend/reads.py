"""The request reads: one Redis connection that every request shares, commands pipelined.

Every stream opens with a snapshot read, and every JSON GET is one; through redis-py each
cost about as much CPU as the rest of the request together (docs/architecture.md). Here a
read is one packed command queued on a shared connection and one future resolved by the
hiredis parser, and what concurrent requests queue in one turn of the event loop goes to
Redis in one write.

A read waits at most ``timeout`` seconds for its reply (and as long again when it has
to connect first); a connection that let a read time out is closed and the next read
opens a new one, so a Redis that stopped answering costs each request one bounded wait
(503), never a hang (docs/operations.md). Whatever goes wrong surfaces as BackendUnavailable.
"""

from __future__ import annotations

import asyncio
import logging
import os

from gateway.backend.connection import RedisConnection, Refused, Reply
from gateway.errors import BackendUnavailable

log = logging.getLogger("gateway.backend")

# Replies of a cluster node that send a command elsewhere (gateway.backend.cluster).
_REDIRECTS = ("MOVED", "ASK", "TRYAGAIN", "CLUSTERDOWN")


class Redirected(BackendUnavailable):
    """A cluster node answered that the key is served elsewhere now (or not yet)."""


class Unreachable(BackendUnavailable):
    """The connection failed (refused, reset), as opposed to a slow or refusing Redis."""


class Reads:
    def __init__(self, url: str, *, timeout: float) -> None:
        self._url = url
        self._timeout = timeout
        self._conn: RedisConnection | None = None
        self._connecting: asyncio.Task[RedisConnection] | None = None
        self._reported: str | None = None  # the last refusal logged

    async def request(self, *args: str | bytes) -> Reply:
        """Run one command; BackendUnavailable when Redis does not answer in time."""
        return await self._run(args, None)

    async def request_many(self, commands: list[tuple[str | bytes, ...]]) -> list[Reply]:
        """Run several commands in one write; BackendUnavailable as for one, or when
        Redis refused any of them."""
        if not commands:
            return []
        replies: list[Reply] = await self._run(commands[0], commands)
        for reply in replies:
            if isinstance(reply, Refused):
                raise self._refused(reply)
        return replies

    async def _run(self, args: tuple[str | bytes, ...],
                   many: list[tuple[str | bytes, ...]] | None) -> Reply:
        """``args`` alone, or the commands ``many`` (of which ``args`` is the first).

        A command that fails on a connection opened before it (one that went stale while
        idle, or broke under another request) is sent once more on a new connection:
        these are reads, safe to repeat.
        """
        for tries in (1, 2):
            conn = self._conn
            fresh = conn is None or not conn.usable
            try:
                if fresh:
                    async with asyncio.timeout(self._timeout):
                        conn = await self._connected()
                assert conn is not None
                if many is None:
                    return await conn.request(*args, expire_after=self._timeout)
                return await conn.request_many(many, expire_after=self._timeout)
            except TimeoutError:
                self._drop(conn)  # presumed dead (a silent network): the next read reconnects
                raise BackendUnavailable(f"Redis did not answer {args[0]!r} in time") from None
            except Refused as exc:
                raise self._refused(exc) from exc
            except (ConnectionError, OSError) as exc:
                self._drop(conn)
                if fresh or tries == 2:
                    raise Unreachable(str(exc)) from exc
        raise AssertionError("unreachable")

    def _refused(self, refusal: Refused) -> BackendUnavailable:
        """A read Redis refused is no outage: a request that needs it answers 503 all the
        same, and the log says why, once per distinct reply while it repeats."""
        text = str(refusal)
        if text.partition(": ")[2].startswith(_REDIRECTS):
            return Redirected(text)  # the caller asks the cluster's client instead
        if text != self._reported:
            self._reported = text
            hint = (" The Redis user needs every command of docs/operations.md's \"Redis "
                    "permissions\" line." if "NOPERM" in text else "")
            log.error("Redis refused a read: %s.%s Requests that need it answer 503.",
                      text, hint)
        return BackendUnavailable(text)

    def _drop(self, conn: RedisConnection | None) -> None:
        if conn is not None:
            conn.close()
            if self._conn is conn:
                self._conn = None

    async def _connected(self) -> RedisConnection:
        # Concurrent requests that find no connection share one attempt: a task, shielded,
        # so that one caller's timeout does not abort the attempt the others wait for.
        connecting = self._connecting
        if connecting is None or connecting.done():
            connecting = self._connecting = asyncio.ensure_future(self._connect())
            connecting.add_done_callback(_seen)
        return await asyncio.shield(connecting)

    async def _connect(self) -> RedisConnection:
        # Bounded apart from any caller: an attempt stuck on a dead host must end, or
        # every later request would keep waiting on it after Redis came back.
        async with asyncio.timeout(self._timeout):
            conn = await RedisConnection.open(
                self._url, _unexpected, name=f"gateway-reads-{os.getpid()}"
            )
        self._conn = conn
        return conn

    async def __aenter__(self) -> Reads:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
            await asyncio.gather(connecting, return_exceptions=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _seen(task: asyncio.Task[RedisConnection]) -> None:
    # Its callers got the error (or timed out); this keeps asyncio from reporting it again.
    if not task.cancelled():
        task.exception()


def _unexpected(reply: Reply) -> None:
    # Every command on this connection has a waiter; a reply without one is a bug.
    log.warning("a reply nobody asked for on the reads connection: %.200r", reply)
