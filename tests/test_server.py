"""The HTTP server the gateway ships (gateway.server), spoken to over raw sockets.

Hostile and unusual HTTP: a request pipelined behind a stream, heads that are too large
or too slow, idle connections, HTTP/1.0 clients, requests the parser cannot read
(docs/operations.md, Limits).
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import time

import httpx
import pytest

from gateway.server import DirectWrite, _Event, _HeadWithBody
from gateway.worker import SyncWorker


def metric(url: str, name: str, labels: str = "") -> float:
    text = httpx.get(f"{url}/metrics", timeout=5).text
    match = re.search(rf"^{re.escape(name + labels)} ([0-9.e+]+)$", text, re.M)
    assert match is not None, name
    return float(match[1])


def until(check, timeout: float = 15.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.05)


def connect(gateway) -> socket.socket:  # type: ignore[no-untyped-def]
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=10)
    return sock


def read_until(sock: socket.socket, marker: bytes) -> bytes:
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def read_all(sock: socket.socket) -> bytes:
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


STREAM = b"GET %s HTTP/1.1\r\nHost: t\r\nAccept: text/event-stream\r\n\r\n"
HEALTH = b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"


@pytest.mark.parametrize("path,kind", [
    (b"/v1/jobs/pipe", "job"),
    (b"/v1/jobs?" + b"&".join(b"job_id=made-up-%d" % n for n in range(100)), "jobs"),
])
def test_a_stream_with_a_request_pipelined_behind_it_ends_when_its_client_leaves(
    gateway, redis_url: str, path: bytes, kind: str
) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("pipe")
    channels = metric(gateway.url, "gateway_pubsub_channels")
    for _ in range(5):
        sock = connect(gateway)
        sock.sendall(STREAM % path + HEALTH)  # in one write, as a pipelining client does
        assert b"retry:" in read_until(sock, b"retry:")
        sock.close()
    # Each stream ends (its heartbeat meets the closed socket), and its subscriptions go.
    until(lambda: metric(gateway.url, "gateway_open_streams", f'{{kind="{kind}"}}') == 0)
    until(lambda: metric(gateway.url, "gateway_pubsub_channels") == channels)


def test_a_head_over_the_limit_is_431(start_gateway) -> None:
    gateway = start_gateway(GATEWAY_MAX_HEADER_BYTES="4096")
    for head in (
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Big: " + b"a" * 5000 + b"\r\n\r\n",  # one write
        b"GET /healthz?" + b"q" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",  # a long URL
    ):
        sock = connect(gateway)
        sock.sendall(head)
        answer = read_all(sock)
        assert answer.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n"), answer[:80]
        assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "request.headers_too_large"
        sock.close()
    # Headers that never end: refused as soon as the limit is passed, not read whole.
    sock = connect(gateway)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n")
    sent = 0
    with pytest.raises(OSError):  # the gateway closed the connection
        for _ in range(10_000):
            sock.sendall(b"X-More: " + b"b" * 1000 + b"\r\n")
            sent += 1
            time.sleep(0.001)
    assert sent < 1000
    sock.close()
    # A head under the limit is fine.
    assert httpx.get(f"{gateway.url}/healthz", headers={"X-Ok": "a" * 3000}).status_code == 200


@pytest.mark.parametrize("request_bytes", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: t\r\nContent-Length: x\r\n\r\n",
    b"GET /v1/jobs HTTP/1.1\r\nBad Header Name: y\r\n\r\n",
])
def test_a_request_the_parser_cannot_read_gets_the_error_body_and_is_closed(
    gateway, request_bytes: bytes
) -> None:
    sock = connect(gateway)
    sock.sendall(request_bytes)
    answer = read_all(sock)
    sock.close()
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 400 ")
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"error": "request.malformed",
                                "detail": "the request could not be read as HTTP/1.1"}


def test_a_connection_that_sends_no_head_in_time_is_closed(start_gateway) -> None:
    gateway = start_gateway(GATEWAY_HEADER_TIMEOUT_SECONDS="0.5")
    idle = connect(gateway)  # sends nothing at all
    slow = connect(gateway)  # a slowloris: one byte at a time
    slow.sendall(b"GET /healthz HTTP/1.1\r\n")
    for byte in b"Host: t\r\nX-Slow: 123456789012345678901234567890\r\n\r\n":
        try:
            slow.sendall(bytes([byte]))
        except OSError:
            break
        time.sleep(0.1)
    answer = read_all(slow)
    assert answer.startswith(b"HTTP/1.1 408 Request Timeout\r\n"), answer[:80]
    assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"] == "request.timeout"
    idle.settimeout(10)
    assert idle.recv(100) == b""  # closed, without a word: nothing had come
    idle.close()
    slow.close()
    # The time counts per head: a request that takes its time overall is fine.
    with httpx.Client(base_url=gateway.url) as client:
        for _ in range(3):
            assert client.get("/healthz").status_code == 200
            time.sleep(0.3)


def test_an_idle_keep_alive_connection_is_closed_after_the_keep_alive_time(start_gateway) -> None:
    gateway = start_gateway(GATEWAY_KEEPALIVE_SECONDS="1", GATEWAY_HEADER_TIMEOUT_SECONDS="30")
    sock = connect(gateway)
    sock.sendall(HEALTH)
    assert b"200 OK" in read_until(sock, b'"ok"}')
    # Closed after the second the setting asks for (uvicorn's own default would be 5 s).
    sock.settimeout(4)
    started = time.monotonic()
    assert sock.recv(100) == b""
    assert time.monotonic() - started >= 0.9  # not before its time
    sock.close()


def test_an_http_1_0_client_gets_its_stream_unchunked_and_closed_at_the_end(
    gateway, redis_url: str
) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("old")
        worker.fail("old", "x.y", "done")
    sock = connect(gateway)
    sock.sendall(b"GET /v1/jobs/old HTTP/1.0\r\nAccept: text/event-stream\r\n\r\n")
    answer = read_all(sock)  # the gateway closes the connection at the end
    sock.close()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 OK")
    assert b"transfer-encoding" not in head.lower()
    assert b"connection: close" in head.lower()
    assert body.startswith(b"retry: 3000\nid: ") and body.endswith(b"\n\n")
    assert b"event: snapshot\ndata: {" in body and b'"status":"failed"' in body
    # A JSON answer keeps its length.
    sock = connect(gateway)
    sock.sendall(b"GET /v1/jobs/old HTTP/1.0\r\n\r\n")
    answer = read_all(sock)
    sock.close()
    head, body = answer.split(b"\r\n\r\n", 1)
    assert f"content-length: {len(body)}".encode() in head.lower()
    assert json.loads(body)["job_id"] == "old"


def test_requests_pipelined_on_one_connection_are_answered_in_order(
    gateway, redis_url: str
) -> None:
    with SyncWorker.from_url(redis_url) as worker:
        for job_id in ("p1", "p2", "p3"):
            worker.create(job_id)
    sock = connect(gateway)
    sock.sendall(b"".join(f"GET /v1/jobs/{job_id} HTTP/1.1\r\nHost: x\r\n\r\n".encode()
                          for job_id in ("p1", "p2", "p3")))
    answers = b""
    deadline = time.monotonic() + 10
    while answers.count(b'"job_id":') < 3 and time.monotonic() < deadline:
        answers += sock.recv(65536)
    sock.close()
    assert re.findall(rb'"job_id":"(p\d)"', answers) == [b"p1", b"p2", b"p3"]


# -- the lean event that a cycle's receive() and a connection's flow control wait on -----


@pytest.mark.anyio
async def test_the_lean_event_wakes_every_waiter_and_survives_a_cancelled_one() -> None:
    event = _Event(asyncio.get_running_loop())
    assert not event.is_set()
    first = asyncio.ensure_future(event.wait())
    second = asyncio.ensure_future(event.wait())
    gone = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0)
    gone.cancel()
    await asyncio.sleep(0)
    assert not first.done() and not second.done() and gone.cancelled()
    event.set()
    assert await asyncio.wait_for(first, 1) is True
    assert await asyncio.wait_for(second, 1) is True
    assert await asyncio.wait_for(event.wait(), 1) is True  # set: no wait at all
    event.clear()
    assert not event.is_set()
    third = asyncio.ensure_future(event.wait())
    await asyncio.sleep(0.01)
    assert not third.done()  # cleared: waits again
    event.set()
    assert await asyncio.wait_for(third, 1) is True


# -- a response's head goes out with its first body --------------------------------------


class _Recorder:
    """A transport that records each write() system call uvicorn's cycle would make."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def writelines(self, parts: tuple[bytes, ...]) -> None:
        self.writes.append(b"".join(parts))

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True


class _Cycle:
    def __init__(self, method: str = "GET") -> None:
        self.response_started = False
        self.transport: object = None
        self.scope = {"method": method}


@pytest.mark.anyio
async def test_the_head_and_the_first_body_go_out_in_one_write_and_later_bodies_directly(
) -> None:
    real, cycle = _Recorder(), _Cycle()
    cycle.transport = corked = _HeadWithBody(
        cycle, real, asyncio.get_running_loop())  # type: ignore[arg-type]
    corked.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # before the response: straight out
    cycle.response_started = True
    corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert real.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
    corked.write(b"first")
    assert real.writes[1:] == [b"HTTP/1.1 200 OK\r\n\r\nfirst"]
    assert cycle.transport is real  # later events are written to the transport itself
    await asyncio.sleep(0)  # the end-of-turn flush finds nothing left
    assert len(real.writes) == 2


@pytest.mark.anyio
async def test_a_head_with_no_body_after_it_goes_out_at_the_end_of_the_turn() -> None:
    real, cycle = _Recorder(), _Cycle()
    cycle.transport = corked = _HeadWithBody(
        cycle, real, asyncio.get_running_loop())  # type: ignore[arg-type]
    cycle.response_started = True
    corked.write(b"HTTP/1.1 204 No Content\r\n\r\n")
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 204 No Content\r\n\r\n"] and cycle.transport is real
    # Closed before the turn ended: the head goes out first.
    real, cycle = _Recorder(), _Cycle()
    cycle.transport = corked = _HeadWithBody(
        cycle, real, asyncio.get_running_loop())  # type: ignore[arg-type]
    cycle.response_started = True
    corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
    corked.close()
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\n"] and real.closed


@pytest.mark.anyio
async def test_a_head_request_s_head_is_not_held_and_the_cycle_is_held_weakly() -> None:
    import gc
    import weakref

    real, cycle = _Recorder(), _Cycle(method="HEAD")
    cycle.transport = corked = _HeadWithBody(
        cycle, real, asyncio.get_running_loop())  # type: ignore[arg-type]
    cycle.response_started = True
    corked.write(b"HTTP/1.1 200 OK\r\n\r\n")  # no body follows a HEAD's head
    assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\n"]
    # A response that never starts (its client left): no reference cycle keeps it.
    gc.disable()
    try:
        cycle = _Cycle()
        cycle.transport = _HeadWithBody(
            cycle, _Recorder(), asyncio.get_running_loop())  # type: ignore[arg-type]
        gone = weakref.ref(cycle)
        del cycle
        assert gone() is None
    finally:
        gc.enable()


def test_a_head_request_gets_its_head_and_the_connection_stays_usable(gateway) -> None:
    sock = connect(gateway)
    sock.sendall(b"HEAD /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                 b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    answers = b""
    deadline = time.monotonic() + 10
    while answers.count(b"HTTP/1.1 200") < 2 and time.monotonic() < deadline:
        answers += sock.recv(65536)
    sock.close()
    assert answers.count(b"HTTP/1.1 200") == 2


# -- the gateway.direct_write extension ---------------------------------------------------


class _Flow:
    write_paused = False


class _StreamCycle:
    """The RequestResponseCycle attributes DirectWrite reads."""

    def __init__(self, *, chunked: bool | None = True, method: str = "GET") -> None:
        self.flow = _Flow()
        self.disconnected = False
        self.response_started = True
        self.response_complete = False
        self.chunked_encoding = chunked
        self.expected_content_length = 0
        self.scope = {"method": method}
        self.transport = _Recorder()

    async def send(self, message: object) -> None:
        raise AssertionError("not used here")


def test_direct_write_writes_a_chunk_at_once_and_leaves_everything_else_to_send() -> None:
    cycle = _StreamCycle()
    direct = DirectWrite(cycle)  # type: ignore[arg-type]
    assert direct(b"event: x\n\n") is True
    assert cycle.transport.writes == [b"a\r\nevent: x\n\n\r\n"]  # as uvicorn frames it
    for state in ("paused", "disconnected", "not started", "complete"):
        cycle = _StreamCycle()
        if state == "paused":
            cycle.flow.write_paused = True  # the client reads slowly: send waits for it
        elif state == "disconnected":
            cycle.disconnected = True
        elif state == "not started":
            cycle.response_started = False
        else:
            cycle.response_complete = True
        assert DirectWrite(cycle)(b"data") is False, state  # type: ignore[arg-type]
        assert cycle.transport.writes == [], state
    # A close-delimited HTTP/1.0 body is written as it is; a HEAD gets no body.
    cycle = _StreamCycle(chunked=False)
    cycle.expected_content_length = 1 << 62
    assert DirectWrite(cycle)(b"data") is True  # type: ignore[arg-type]
    assert cycle.transport.writes == [b"data"]
    for chunked in (None, True, False):  # a HEAD gets no body, however it was framed
        cycle = _StreamCycle(chunked=chunked, method="HEAD")
        cycle.expected_content_length = 1 << 62
        assert DirectWrite(cycle)(b"data") is False  # type: ignore[arg-type]
        assert cycle.transport.writes == []
    # Only for the cycle's own send: a wrapper around it must not be skipped.
    cycle = _StreamCycle()
    direct = DirectWrite(cycle)  # type: ignore[arg-type]
    own = cycle.send
    assert direct.serves(own)

    async def wrapper(message: object) -> None:
        await own(message)

    assert not direct.serves(wrapper)
    # It holds the cycle weakly: the cycle's scope holds it.
    cycle = _StreamCycle()
    direct = DirectWrite(cycle)  # type: ignore[arg-type]
    del cycle
    assert direct(b"data") is False


def test_a_stream_s_events_written_directly_are_well_formed_chunks(gateway,
                                                                redis_url: str) -> None:
    """The hub writes a stream's events through the server's gateway.direct_write: the
    client reads them as it would through send, as chunks of whole events, in order."""
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("dw")
        worker.start("dw")
        sock = connect(gateway)
        sock.sendall(b"GET /v1/jobs/dw HTTP/1.1\r\nHost: x\r\n"
                     b"Accept: text/event-stream\r\n\r\n")
        data = read_until(sock, b"event: snapshot")
        for percent in (10, 20, 30):
            worker.progress("dw", percent=percent)
            time.sleep(0.05)
        data += read_until(sock, b'"percent":30')
        while not data.endswith(b"\n\n\r\n"):  # the rest of that chunk
            more = sock.recv(65536)  # the socket's timeout bounds the wait
            assert more, "the connection closed in the middle of a chunk"
            data += more
        sock.close()
    events = []
    rest = data.split(b"\r\n\r\n", 1)[1]  # the body after the head
    while rest:
        size, _, rest = rest.partition(b"\r\n")
        chunk, rest = rest[:int(size, 16)], rest[int(size, 16):]
        assert rest.startswith(b"\r\n"), data
        rest = rest[2:]
        assert chunk.endswith(b"\n\n"), chunk  # one chunk: whole events
        events += re.findall(rb'"percent":(\d+)', chunk)
    assert events[-3:] == [b"10", b"20", b"30"]
