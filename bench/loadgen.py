"""The load generator: many SSE streams on raw non-blocking sockets, with kernel timestamps.

Issue 5 asks for a client that is not the bottleneck. So there is no task, no
``asyncio.StreamReader`` and no HTTP library per stream: each stream is a socket with a
reader callback on the event loop, parsed by hand (status line, chunked framing, SSE
blocks). Where the client's own delay would distort a measurement (fan-out, latency),
the receive time is the kernel's (``SO_TIMESTAMPNS``: when the segment reached the
socket, ``CLOCK_REALTIME``), not the time Python got round to reading it; the publisher
stamps its side with ``time.time_ns()``, the same clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import re
import socket
import struct
import time
from collections.abc import Callable

SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)  # Linux value; Python lacks the name
_ANCILLARY = socket.CMSG_SPACE(16)  # one struct timespec
_RECV_BYTES = 65536
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)  # Linux 4.2+
_SOURCES = 8  # loopback source addresses 127.0.0.1-8; the server is always 127.0.0.1

# Every update the bench publishes sets the job's phase to "b<k>"; that k names the update
# in the client, whichever server framed it.
MARKER = re.compile(rb'"phase":"b(\d+)"')
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:[ \t]*([0-9]+)")


def kernel_ns(ancillary: list[tuple[int, int, bytes]]) -> int:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(data) >= 16:
            sec, nsec = struct.unpack("qq", data[:16])
            return int(sec) * 1_000_000_000 + int(nsec)
    return time.time_ns()


def receive(sock: socket.socket) -> tuple[bytes, list[tuple[int, int, bytes]]] | OSError | None:
    """One read of a non-blocking socket, with its ancillary data (the kernel's receive
    timestamp: kernel_ns): None when nothing is there yet, the error if the socket failed."""
    try:
        data, ancillary, _, _ = sock.recvmsg(_RECV_BYTES, _ANCILLARY)
    except (BlockingIOError, InterruptedError):
        return None
    except OSError as exc:
        return exc
    return data, ancillary


class Stream:
    """One SSE connection: socket, parser state and what it received."""

    __slots__ = ("chunked", "crlf", "events", "first_ns", "head", "need", "path", "port", "raw",
                 "skip", "sock", "text", "waiter")

    def __init__(self, port: int, path: bytes) -> None:
        self.port = port
        self.path = path
        self.sock: socket.socket | None = None
        self.head = b""  # response head until the blank line; None-like b"" once parsed
        self.chunked: bool | None = None  # None: head not parsed yet
        self.crlf: bool | None = None  # sse-starlette ends lines with CRLF
        self.raw = b""  # an incomplete chunk-size line
        self.need = 0  # bytes left in the current chunk
        self.skip = 0  # CRLF after a chunk still to skip
        self.text = b""  # an incomplete SSE block
        self.events = 0  # SSE blocks with data (the opening snapshot included)
        self.first_ns = 0  # kernel time of the opening event: the stream is "accepted"
        self.waiter: asyncio.Semaphore | None = None  # released once accepted or failed


class Swarm:
    """A set of streams against one server (or several ports of one contender).

    ``open()`` adds streams with a bounded number of connection attempts in flight and
    records when each one's opening event arrived; afterwards the streams sit on the
    event loop and count events. With ``markers`` on, the arrival of each update ``k`` is
    recorded per swarm: how many streams got it and the latest kernel time.
    """

    def __init__(self, ports: list[int], *, markers: bool = False) -> None:
        self.loop = asyncio.get_running_loop()
        self.ports = ports
        self.markers = markers
        self.streams: list[Stream] = []
        self.accepted_ns: list[int] = []
        self.failures: dict[str, int] = {}
        self.events = 0
        self.last_ns = 0  # kernel time of the latest event of any stream
        self.bytes = 0
        self.closed = 0
        self._sources = 0
        self.marker_count: dict[int, int] = {}
        self.marker_last_ns: dict[int, int] = {}
        self.marker_first_ns: dict[int, int] = {}

    @property
    def accepted(self) -> int:
        return len(self.accepted_ns)

    @property
    def failed(self) -> int:
        return sum(self.failures.values())

    # -- opening ------------------------------------------------------------------------

    async def open(
        self,
        count: int,
        path_of: Callable[[int], str],
        *,
        concurrency: int = 100,
        within: float = 60.0,
        max_failures: int = 20,
    ) -> int:
        """Open ``count`` more streams; returns how many were accepted within ``within`` s."""
        gate = asyncio.Semaphore(concurrency)
        deadline = self.loop.time() + within
        start = len(self.streams)
        before = self.accepted
        for i in range(start, start + count):
            if self.failed >= max_failures:
                break
            left = deadline - self.loop.time()
            if left <= 0:
                break
            if gate.locked():  # wait_for costs a task: only when there is a wait
                try:
                    await asyncio.wait_for(gate.acquire(), left)
                except TimeoutError:
                    break
            else:
                await gate.acquire()
            stream = Stream(self.ports[i % len(self.ports)], path_of(i).encode())
            stream.waiter = gate
            self.streams.append(stream)
            self._connect(stream)
        # Wait for the attempts still in flight: each holds one slot of the gate.
        for _ in range(concurrency):
            left = deadline - self.loop.time()
            try:
                await asyncio.wait_for(gate.acquire(), max(left, 0.5))
            except TimeoutError:
                break
        for stream in self.streams[start:]:
            if stream.waiter is not None:  # never answered in time
                self._fail(stream, "timeout")
        return self.accepted - before

    def _connect(self, stream: Stream) -> None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:  # EMFILE: the client's own fd limit
            self._fail(stream, errno.errorcode.get(exc.errno or 0, "socket"))
            return
        stream.sock = sock
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        # Spread the client ends over several loopback source addresses, port chosen at
        # connect time: past ~14,000 connections to one address Linux's ephemeral port
        # search (even ports first) makes each connect cost the client a full scan.
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((f"127.0.0.{1 + self._sources % _SOURCES}", 0))
        self._sources += 1
        err = sock.connect_ex(("127.0.0.1", stream.port))
        if err == 0:
            self._connected(stream)
        elif err == errno.EINPROGRESS:
            self.loop.add_writer(sock.fileno(), self._connected, stream)
        else:
            self._fail(stream, errno.errorcode.get(err, "connect"))

    def _connected(self, stream: Stream) -> None:
        sock = stream.sock
        assert sock is not None
        self.loop.remove_writer(sock.fileno())
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            self._fail(stream, errno.errorcode.get(err, "connect"))
            return
        request = (
            b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nAccept: text/event-stream\r\n"
            b"Cache-Control: no-cache\r\n\r\n" % (stream.path, stream.port)
        )
        try:
            sock.send(request)  # a few dozen bytes into an empty socket buffer: never short
        except OSError as exc:
            self._fail(stream, errno.errorcode.get(exc.errno or 0, "send"))
            return
        self.loop.add_reader(sock.fileno(), self._readable, stream)

    def _release(self, stream: Stream) -> None:
        if stream.waiter is not None:
            stream.waiter.release()
            stream.waiter = None

    def _fail(self, stream: Stream, reason: str) -> None:
        self.failures[reason] = self.failures.get(reason, 0) + 1
        self._drop(stream)

    def _drop(self, stream: Stream) -> None:
        self._release(stream)
        sock, stream.sock = stream.sock, None
        if sock is not None:
            self.loop.remove_reader(sock.fileno())
            self.loop.remove_writer(sock.fileno())
            sock.close()

    # -- receiving ----------------------------------------------------------------------

    def _readable(self, stream: Stream) -> None:
        sock = stream.sock
        if sock is None:
            return
        got = receive(sock)
        if got is None:
            return
        if isinstance(got, OSError):
            self._fail(stream, errno.errorcode.get(got.errno or 0, "recv"))
            return
        data, ancillary = got
        if not data:
            if stream.first_ns:
                self.closed += 1
                self._drop(stream)
            else:
                self._fail(stream, "eof")
            return
        self.bytes += len(data)
        at = kernel_ns(ancillary)
        if stream.chunked is None:
            data = self._head(stream, data)
            if not data:
                return
        if stream.chunked:
            data = _dechunk(stream, data)
            if not data:
                return
        self._blocks(stream, data, at)

    def _head(self, stream: Stream, data: bytes) -> bytes:
        head = stream.head + data
        end = head.find(b"\r\n\r\n")
        if end < 0:
            stream.head = head
            return b""
        status = head[9:12]
        if status != b"200":
            self._fail(stream, f"http {status.decode(errors='replace')}")
            return b""
        fields = head[:end].lower()
        stream.chunked = b"transfer-encoding: chunked" in fields
        stream.head = b""
        return head[end + 4:]

    def _blocks(self, stream: Stream, data: bytes, at: int) -> None:
        if stream.crlf is None:
            stream.crlf = b"\r\n" in data
        if stream.crlf:
            data = data.replace(b"\r\n", b"\n")
        text = stream.text + data if stream.text else data
        if b"\n\n" not in text:
            stream.text = text
            return
        blocks = text.split(b"\n\n")
        stream.text = blocks.pop()
        for block in blocks:
            if b"data:" not in block:
                continue  # retry fields, keepalive comments
            stream.events += 1
            self.events += 1
            self.last_ns = at
            if not stream.first_ns:
                stream.first_ns = at
                self.accepted_ns.append(at)
                self._release(stream)
            elif self.markers:
                match = MARKER.search(block)
                if match:
                    k = int(match[1])
                    self.marker_count[k] = self.marker_count.get(k, 0) + 1
                    if at > self.marker_last_ns.get(k, 0):
                        self.marker_last_ns[k] = at
                    if k not in self.marker_first_ns or at < self.marker_first_ns[k]:
                        self.marker_first_ns[k] = at

    # -- waiting and closing ------------------------------------------------------------

    async def until(self, done: Callable[[], bool], within: float, poll: float = 0.005) -> bool:
        """Poll ``done`` until it holds or ``within`` seconds pass (every wait is bounded)."""
        deadline = self.loop.time() + within
        while not done():
            if self.loop.time() >= deadline:
                return False
            await asyncio.sleep(poll)
        return True

    def live(self) -> int:
        return sum(1 for s in self.streams if s.sock is not None and s.first_ns)

    def close(self) -> None:
        for stream in self.streams:
            self._drop(stream)
        self.streams.clear()


def _dechunk(stream: Stream, data: bytes) -> bytes:
    """Strip HTTP/1.1 chunked framing; keeps partial size lines across reads."""
    buf = stream.raw + data if stream.raw else data
    stream.raw = b""
    out: list[bytes] = []
    pos, end = 0, len(buf)
    while pos < end:
        if stream.need:
            take = min(stream.need, end - pos)
            out.append(buf[pos:pos + take])
            pos += take
            stream.need -= take
            if not stream.need:
                stream.skip = 2
            continue
        if stream.skip:
            take = min(stream.skip, end - pos)
            pos += take
            stream.skip -= take
            continue
        line_end = buf.find(b"\r\n", pos)
        if line_end < 0:
            stream.raw = buf[pos:]
            break
        size = int(buf[pos:line_end].split(b";", 1)[0] or b"0", 16)
        pos = line_end + 2
        if size == 0:
            break  # the last chunk: the server ended the response
        stream.need = size
    return b"".join(out)


async def http_load(
    port: int, path: str, headers: dict[str, str], *, connections: int, seconds: float
) -> tuple[float, dict[int, int]]:
    """A keep-alive GET loop, wrk's job when wrk is not installed: (requests/s, statuses)."""
    loop = asyncio.get_running_loop()
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
               + "".join(f"{k}: {v}\r\n" for k, v in headers.items()) + "\r\n").encode()
    statuses: dict[int, int] = {}
    stop_at = loop.time() + seconds

    async def one() -> int:
        done = 0
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while loop.time() < stop_at:
                writer.write(request)
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
                status = int(head[9:12])
                statuses[status] = statuses.get(status, 0) + 1
                length = 0
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                if length:
                    await asyncio.wait_for(reader.readexactly(length), 5)
                done += 1
        finally:
            writer.close()
        return done

    started = loop.time()
    counts = await asyncio.gather(*(one() for _ in range(connections)))
    return sum(counts) / (loop.time() - started), statuses


class Probe:
    """GETs of one path (a server's ``/healthz``) one at a time on one keep-alive connection,
    while something else loads the server: the latency of each request, from just before
    its ``send()`` to the kernel receive time of the segment that completed its response.

    The client's own delays (its event loop busy with thousands of streams) so change how
    often the probe asks, never what a request measured. A request goes ``every`` seconds
    after the previous one was sent, or at once if the previous answer took longer: a
    steady, small load of its own on the server (200 requests/s at most with 5 ms).
    """

    def __init__(self, port: int, path: str = "/healthz", *, every: float = 0.005) -> None:
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.every = every
        self.request = b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (path.encode(), port)
        self.latencies_ms: list[float] = []
        self.unanswered = 0  # a request still waiting when the probe stopped (its age counts)
        self._sock: socket.socket | None = None
        self._buf = b""
        self._answer: asyncio.Future[tuple[int, int]] | None = None
        self._sent_ns = 0
        self._stopping = False
        self._task: asyncio.Task[None] | None = None

    async def connect(self, within: float = 10.0) -> None:
        """Connect, and send one request that does not count (first-use costs)."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._sock = sock
        await asyncio.wait_for(self.loop.sock_connect(sock, ("127.0.0.1", self.port)), within)
        self.loop.add_reader(sock.fileno(), self._readable)
        await asyncio.wait_for(self._get(), within)

    def start(self) -> None:
        self._task = self.loop.create_task(self._run())

    async def stop(self, within: float = 5.0) -> list[float]:
        """Stop after the request in flight is answered (waiting at most ``within`` s; one
        still unanswered then counts with its age, a lower bound); the latencies in ms."""
        self._stopping = True
        task = self._task
        if task is not None and not task.done():
            done, _ = await asyncio.wait({task}, timeout=within)
            if not done:
                self.unanswered += 1
                self.latencies_ms.append((time.time_ns() - self._sent_ns) / 1e6)
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if task is not None and task.done() and not task.cancelled():
            task.result()  # a failed probe fails the measurement
        return self.latencies_ms

    def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
        sock, self._sock = self._sock, None
        if sock is not None:
            self.loop.remove_reader(sock.fileno())
            sock.close()

    async def _run(self) -> None:
        while not self._stopping:
            next_at = self.loop.time() + self.every
            status, sent, received = await self._get()
            if status != 200:
                raise RuntimeError(f"probe: GET answered {status}")
            self.latencies_ms.append((received - sent) / 1e6)
            delay = next_at - self.loop.time()
            if delay > 0 and not self._stopping:
                await asyncio.sleep(delay)

    async def _get(self) -> tuple[int, int, int]:
        """One request: (status, ns just before send, kernel ns of the answer's end)."""
        sock = self._sock
        if sock is None:
            raise ConnectionError("probe: not connected")
        self._answer = self.loop.create_future()
        self._sent_ns = time.time_ns()
        sock.send(self.request)  # a few dozen bytes into an empty socket buffer: never short
        status, received = await self._answer
        return status, self._sent_ns, received

    def _readable(self) -> None:
        sock = self._sock
        if sock is None:
            return
        got = receive(sock)
        if got is None:
            return
        if isinstance(got, OSError):
            self._settle(got)
            return
        data, ancillary = got
        if not data:
            self.loop.remove_reader(sock.fileno())
            self._settle(ConnectionError("probe: the server closed the connection"))
            return
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return
        found = _CONTENT_LENGTH.search(self._buf, 0, end + 2)
        if found is None:
            self._settle(RuntimeError("probe: an answer without Content-Length"))
            return
        whole = end + 4 + int(found[1])
        if len(self._buf) < whole:
            return
        status = int(self._buf[9:12])
        self._buf = self._buf[whole:]
        self._settle((status, kernel_ns(ancillary)))

    def _settle(self, outcome: tuple[int, int] | BaseException) -> None:
        answer, self._answer = self._answer, None
        if answer is None or answer.done():
            return
        if isinstance(outcome, BaseException):
            answer.set_exception(outcome)
        else:
            answer.set_result(outcome)
