"""The publishing side: job updates as workers make them, in a process of its own.

The bench runs these functions in one spawned helper process (a ProcessPoolExecutor of
one), so that publishing never competes with the load generator's event loop for the
GIL, and a blocking worker call cannot delay the client.

For the gateway and the naive app an update is a worker call (the Lua script through
EVALSHA, ``gateway.worker.SyncWorker``); for nchan it is an HTTP POST of the same
snapshot JSON to its publisher location; for pushpin an HTTP POST to its handler's
``/publish/`` of an item carrying the whole SSE frame (the gateway's: id, ``event:
progress``, the snapshot as data). Every update ``k`` sets the job's phase to ``"b<k>"``,
which the client reads back to match receipts to updates. Each function returns the
publisher's own clock (``time.time_ns()``) taken just before each call.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import redis

from bench.grip_backend import event, snapshot
from gateway import SyncWorker
from gateway.contract import script as changes
from gateway.contract.keys import DEFAULT_TENANT
from gateway.errors import JobAlreadyExists

T = TypeVar("T")
_PIPELINE = 200  # updates per pipelined batch (burst and setup)
_CONTENT_LENGTH = re.compile(rb"(?i)\r\ncontent-length:[ \t]*([0-9]+)")


@dataclass(frozen=True)
class Target:
    kind: str  # "redis": a worker call into the gateway's Redis; "nchan", "pushpin": POST
    address: str  # a redis:// URL, or the port of nchan's nginx or of pushpin's publishing


_workers: dict[str, SyncWorker] = {}
_posts: dict[str, http.client.HTTPConnection] = {}


def _worker(url: str) -> SyncWorker:
    if url not in _workers:
        _workers[url] = SyncWorker.from_url(url)
    return _workers[url]


def _post(port: str) -> http.client.HTTPConnection:
    if port not in _posts:
        _posts[port] = http.client.HTTPConnection("127.0.0.1", int(port), timeout=10)
    return _posts[port]


def _post_request(port: str, job_id: str, k: int) -> bytes:
    body = snapshot(job_id, k)
    return (b"POST /pub/%s HTTP/1.1\r\nHost: 127.0.0.1:%s\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (job_id.encode(), port.encode(), len(body), body))


def forget() -> None:
    """Drop cached connections (their servers are gone)."""
    for worker in _workers.values():
        worker.close()
    for conn in _posts.values():
        conn.close()
    _workers.clear()
    _posts.clear()


# -- setup ----------------------------------------------------------------------------


def setup(target: Target, job_ids: list[str], *, running: bool,
          conversion: dict[str, str] | None = None) -> None:
    """Make the jobs exist: created (and started) in Redis, or a first message in nchan
    (pushpin: nothing to do). ``conversion``: what the jobs convert (Redis only; the
    dashboard shows it), none by default. A job that exists already is only started."""
    if target.kind == "pushpin":
        return  # a channel needs no creating; the GRIP backend opens with the b0 snapshot
    if target.kind == "nchan":
        _pipelined_posts(target.address, (_post_request(target.address, j, 0) for j in job_ids))
        return
    client = _worker(target.address).client
    sha = client.script_load(changes.SCRIPT)
    ops: list[tuple[str, dict[str, object]]] = [("create", {"conversion": conversion or {}})]
    if running:
        ops.append(("start", {"phase": "b0"}))
    for op, payload in ops:
        for start in range(0, len(job_ids), _PIPELINE):
            pipe = client.pipeline(transaction=False)
            for job_id in job_ids[start:start + _PIPELINE]:
                _evalsha(pipe, sha, op, job_id, payload)
            for reply in pipe.execute(raise_on_error=False):
                if isinstance(reply, Exception) or reply[0] != 1:
                    if op == "create" and not isinstance(reply, Exception) \
                            and reply[1] == b"already_exists":
                        continue
                    raise RuntimeError(f"setup {op} refused: {reply!r}")


def _evalsha(pipe: redis.client.Pipeline, sha: str, op: str, job_id: str,
             payload: dict[str, object]) -> None:
    # Exactly the call SyncWorker makes, pipelined: the protocol any worker may use.
    call = changes.call(op, job_id, payload, tenant=DEFAULT_TENANT,
                        lifetimes=changes.Lifetimes())
    pipe.evalsha(sha, len(call.keys), *call.keys, *call.args)


# -- single updates -------------------------------------------------------------------


def update(target: Target, job_id: str, k: int) -> int:
    """One update; returns the time just before the call (ns, CLOCK_REALTIME)."""
    if target.kind == "nchan":
        conn = _post(target.address)
        body = snapshot(job_id, k)
        t0 = time.time_ns()
        conn.request("POST", f"/pub/{job_id}", body, {"Content-Type": "application/json"})
        response = conn.getresponse()
        response.read()
        if response.status >= 300:
            raise RuntimeError(f"nchan publish answered {response.status}")
        return t0
    if target.kind == "pushpin":
        body = _pushpin_body([(job_id, k)])
        t0 = time.time_ns()
        status = _pushpin_post(target.address, body)
        if status >= 300:
            raise RuntimeError(f"pushpin publish answered {status}")
        return t0
    worker = _worker(target.address)
    t0 = time.time_ns()
    worker.progress(job_id, phase=f"b{k}")
    return t0


def paced(target: Target, job_id: str, first: int, count: int, rate: float) -> list[int]:
    """``count`` updates at ``rate`` per second (no catch-up burst after a late one)."""
    return _paced(lambda k: update(target, job_id, k), first, count, rate)


def spread(target: Target, job_ids: list[str], first: int, count: int,
           rate: float) -> list[int]:
    """``count`` updates at ``rate`` per second, round robin over ``job_ids`` (Redis only):
    update ``k`` goes to ``job_ids[k % len(job_ids)]``, with phase ``"b<k>"`` and percent
    ``k / 100`` (at most 99), so that a job's percent only grows. Returns the publisher's
    clock just before each call (ns, CLOCK_REALTIME)."""
    if target.kind != "redis":
        raise ValueError(f"spread publishes through the worker library, not to {target.kind}")
    worker = _worker(target.address)

    def one(k: int) -> int:
        t0 = time.time_ns()
        worker.progress(job_ids[k % len(job_ids)], min(99.0, k / 100), phase=f"b{k}")
        return t0

    return _paced(one, first, count, rate)


def _paced(call: Callable[[int], int], first: int, count: int, rate: float) -> list[int]:
    """``call(k)`` for ``k`` from ``first``, ``rate`` times per second; a late call is not
    made up for with a burst. Returns what each call returned."""
    stamps: list[int] = []
    interval = 1.0 / rate
    next_at = time.monotonic()
    for k in range(first, first + count):
        delay = next_at - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        stamps.append(call(k))
        next_at = max(next_at + interval, time.monotonic() - interval)
    return stamps


# -- bursts ---------------------------------------------------------------------------


def burst(target: Target, job_ids: list[str], per_job: int, first: int) -> tuple[int, int, int]:
    """``per_job`` updates of every job, round robin, as fast as the target takes them.

    Returns (start ns, end ns, updates accepted). Round robin: consecutive updates touch
    different jobs, so no server may fold one job's updates together.
    """
    if target.kind == "nchan":
        port = target.address
        requests = (_post_request(port, j, k)
                    for k in range(first, first + per_job) for j in job_ids)
        t0 = time.time_ns()
        done = _pipelined_posts(port, requests)
        return t0, time.time_ns(), done
    if target.kind == "pushpin":
        # Pushpin's publish endpoint closes the connection after each answer, so it cannot
        # be pipelined; a POST carries a window of updates as items instead.
        bodies = [(_pushpin_body(batch), len(batch)) for batch in
                  _batches(((j, k) for k in range(first, first + per_job) for j in job_ids),
                           _PIPELINE)]
        t0 = time.time_ns()
        done = sum(n for body, n in bodies if _pushpin_post(target.address, body) < 300)
        return t0, time.time_ns(), done
    client = _worker(target.address).client
    sha = client.script_load(changes.SCRIPT)
    updates = [(j, k) for k in range(first, first + per_job) for j in job_ids]
    done = 0
    t0 = time.time_ns()
    for start in range(0, len(updates), _PIPELINE):
        pipe = client.pipeline(transaction=False)
        for job_id, k in updates[start:start + _PIPELINE]:
            _evalsha(pipe, sha, "progress", job_id, {"phase": f"b{k}"})
        done += sum(1 for r in pipe.execute(raise_on_error=False)
                    if not isinstance(r, Exception) and r[0] == 1)
    return t0, time.time_ns(), done


def _pipelined_posts(port: str, requests: Iterable[bytes], window: int = _PIPELINE) -> int:
    """Send POSTs on one keep-alive connection, ``window`` at a time; count 2xx answers."""
    ok = 0
    with socket.create_connection(("127.0.0.1", int(port)), timeout=30) as sock:
        pending = b""
        for batch in _batches(requests, window):
            sock.sendall(b"".join(batch))
            statuses, pending = _read_responses(sock, len(batch), pending)
            ok += sum(1 for s in statuses if 200 <= s < 300)
    return ok


def _pushpin_body(updates: list[tuple[str, int]]) -> bytes:
    return json.dumps({"items": [
        {"channel": job_id,
         "formats": {"http-stream": {"content": event(job_id, k, "progress").decode()}}}
        for job_id, k in updates]}, separators=(",", ":")).encode()


def _pushpin_post(port: str, body: bytes) -> int:
    """One POST /publish/ (all its items are taken or none); returns the status."""
    conn = _post(port)  # reopened by http.client after pushpin's `Connection: close`
    conn.request("POST", "/publish/", body, {"Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    return response.status


def _batches(items: Iterable[T], size: int) -> Iterator[list[T]]:
    batch: list[T] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def _read_responses(sock: socket.socket, count: int, buf: bytes) -> tuple[list[int], bytes]:
    statuses: list[int] = []
    pos = 0  # an offset, not slicing: a window of responses is read in one pass
    while len(statuses) < count:
        end = buf.find(b"\r\n\r\n", pos)
        if end >= 0:
            found = _CONTENT_LENGTH.search(buf, pos, end)
            length = int(found[1]) if found else 0
            if len(buf) >= end + 4 + length:
                statuses.append(int(buf[pos + 9:pos + 12]))
                pos = end + 4 + length
                continue
        chunk = sock.recv(262144)
        if not chunk:
            raise ConnectionError("nchan closed the publisher connection")
        buf = buf[pos:] + chunk
        pos = 0
    return statuses, buf[pos:]


def create_job(url: str, job_id: str) -> None:
    """One job for the JSON scenario, moved a little so that its version is 3."""
    worker = _worker(url)
    try:
        worker.create(job_id, conversion={"source_format": "docx", "target_format": "pdf",
                                          "original_filename": "report.docx"})
    except JobAlreadyExists:
        return
    worker.start(job_id, phase="b0")
    worker.progress(job_id, 10, phase="b1")


_BUCKET_NS = 10_000_000  # the publisher counts its updates per 10 ms
_ADDRESS = re.compile(r"0x[0-9a-f]+")  # an object's address in an error message


# -- as fast as it goes, several tenants (bench/scale.py) -----------------------------------


def publish_for(url: str, cluster: bool, jobs: list[tuple[str, str]], seconds: float,
                concurrency: int, first: int) -> dict[str, Any]:
    """Progress updates round robin over ``jobs`` ((tenant, job id)) for ``seconds``, as
    fast as ``concurrency`` worker calls in flight allow; update ``k`` sets phase
    ``"b<k>"`` from ``first`` on. Returns when the first call started and the last ended
    (ns, CLOCK_REALTIME), the updates done, how many ended in each 10 ms from the start
    (``buckets``), and the errors by type."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_publish(url, cluster, jobs, seconds, concurrency, first))
    return uvloop.run(_publish(url, cluster, jobs, seconds, concurrency, first))


async def _publish(url: str, cluster: bool, jobs: list[tuple[str, str]], seconds: float,
                   concurrency: int, first: int) -> dict[str, Any]:
    from gateway.worker import Worker

    tenants = sorted({t for t, _ in jobs})
    one = Worker.from_url(url, cluster=cluster, tenant=tenants[0])
    # One client for all: a worker per tenant over the same connections.
    workers = {t: Worker(one.client, tenant=t) for t in tenants}
    workers[tenants[0]] = one
    buckets: list[int] = []
    errors: dict[str, int] = {}
    state = {"k": first, "done": 0}
    t0 = time.time_ns()
    stop_ns = t0 + int(seconds * 1e9)

    async def loop() -> None:
        while time.time_ns() < stop_ns:
            k = state["k"]
            state["k"] = k + 1
            tenant, job_id = jobs[k % len(jobs)]
            try:
                await workers[tenant].progress(job_id, phase=f"b{k}")
            except Exception as exc:  # counted and reported; a failing backend stops it
                name = f"{type(exc).__name__}: {_ADDRESS.sub('0x...', str(exc))[:100]}"
                errors[name] = errors.get(name, 0) + 1
                if sum(errors.values()) > 1000:
                    raise
                await asyncio.sleep(0.01)
                continue
            slot = (time.time_ns() - t0) // _BUCKET_NS
            while len(buckets) <= slot:
                buckets.append(0)
            buckets[slot] += 1
            state["done"] += 1

    try:
        await asyncio.wait_for(asyncio.gather(*(loop() for _ in range(concurrency))),
                               seconds + 60)
    finally:
        await one.aclose()
    return {"t0": t0, "t1": time.time_ns(), "done": state["done"], "next": state["k"],
            "buckets": buckets, "errors": errors}


def published_between(result: dict[str, Any], w0: int, w1: int) -> float:
    """Updates the publisher finished between ``w0`` and ``w1`` (ns), by its 10 ms counts
    (the buckets cut by the window counted in part)."""
    total = 0.0
    for i, n in enumerate(result["buckets"]):
        b0 = result["t0"] + i * _BUCKET_NS
        overlap = min(b0 + _BUCKET_NS, w1) - max(b0, w0)
        if overlap > 0:
            total += n * overlap / _BUCKET_NS
    return total
