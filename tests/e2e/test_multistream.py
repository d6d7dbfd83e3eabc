"""Many jobs on one connection: ``GET /v1/jobs`` as an event stream."""

from __future__ import annotations

import json
import time

import anyio
import httpx
import pytest
import redis
from httpx_sse import ServerSentEvent, aconnect_sse

from gateway.contract import keys
from gateway.worker import SyncWorker, Worker

pytestmark = pytest.mark.anyio


@pytest.fixture
def worker(redis_url: str):
    with SyncWorker.from_url(redis_url) as w:
        yield w


class Reader:
    """Collects a stream's events in the background until told to stop."""

    def __init__(self) -> None:
        self.events: list[ServerSentEvent] = []
        self.arrived = anyio.Event()

    async def read(self, client: httpx.AsyncClient, url: str,
                   headers: dict[str, str] | None = None) -> None:
        async with aconnect_sse(client, "GET", url, headers=headers or {}) as source:
            assert source.response.status_code == 200
            async for event in source.aiter_sse():
                if event.data:
                    self.events.append(event)
                    self.arrived.set()
                    self.arrived = anyio.Event()

    async def until(self, count: int, timeout: float = 10) -> None:
        with anyio.fail_after(timeout):
            while len(self.events) < count:
                await self.arrived.wait()

    def snapshots(self) -> list[dict]:
        return [json.loads(e.data) for e in self.events if e.event != "unknown"]


async def test_named_jobs_open_with_snapshots_then_go_live_and_stay_open(
    gateway, worker: SyncWorker
) -> None:
    for job_id in ("n1", "n2", "n3"):
        worker.create(job_id)
    worker.start("n2")
    reader = Reader()
    url = f"{gateway.url}/v1/jobs?job_id=n1&job_id=n2&job_id=missing&job_id=n1"
    async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
        tg.start_soon(reader.read, client, url)
        await reader.until(3)
        opening = reader.events[:3]
        assert opening[0].event == "unknown"
        assert json.loads(opening[0].data) == {"job_ids": ["missing"]}
        assert [(e.event, json.loads(e.data)["job_id"]) for e in opening[1:]] == [
            ("snapshot", "n1"), ("snapshot", "n2")]  # each once, in seq order
        # Each change once the one before arrived (changes that come together may be
        # sent as the newest alone).
        for count, change in enumerate((
            lambda: worker.start("n1"),
            lambda: worker.progress("n2", 40),
            lambda: (worker.cancel("n3"), worker.cancel("n1")),  # n3 is not watched
            lambda: worker.create("missing"),  # named, so watched although it did not exist
            lambda: worker.progress("n2", 60),  # the stream stays open after n1 ended
        ), start=4):
            change()
            await reader.until(count)
        tg.cancel_scope.cancel()
    live = [(e.event, json.loads(e.data)["job_id"]) for e in reader.events[3:]]
    assert live == [("status", "n1"), ("progress", "n2"), ("status", "n1"),
                    ("status", "missing"), ("progress", "n2")]
    seqs = [int(e.id.rsplit("-", 1)[1]) for e in reader.events[1:]]
    assert seqs == sorted(seqs)


async def test_the_tenant_stream_opens_with_the_jobs_not_ended(
    gateway, worker: SyncWorker
) -> None:
    worker.create("t1")
    worker.create("t2")
    worker.cancel("t2")
    worker.create("t3")
    worker.start("t3")
    reader = Reader()
    async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
        tg.start_soon(reader.read, client, f"{gateway.url}/v1/jobs")
        await reader.until(2)
        worker.create("t4")
        await reader.until(3)
        tg.cancel_scope.cancel()
    assert [(e.event, s["job_id"]) for e, s in zip(reader.events, reader.snapshots(),
                                                   strict=True)] == [
        ("snapshot", "t1"), ("snapshot", "t3"), ("status", "t4")]


async def test_interleaved_updates_of_many_jobs(gateway, redis_url: str) -> None:
    jobs = [f"i{n}" for n in range(20)]
    reader = Reader()
    query = "&".join(f"job_id={j}" for j in jobs)
    async with Worker.from_url(redis_url) as w:
        for job_id in jobs:
            await w.create(job_id)
            await w.start(job_id)
        async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
            tg.start_soon(reader.read, client, f"{gateway.url}/v1/jobs?{query}")
            await reader.until(len(jobs))
            for percent in range(1, 11):
                for job_id in jobs:
                    await w.progress(job_id, percent * 10)
            with anyio.fail_after(10):  # until every job's last change arrived
                while {s["job_id"]: s["version"] for s in reader.snapshots()} != dict.fromkeys(
                        jobs, 12):
                    await reader.arrived.wait()
            tg.cancel_scope.cancel()
    by_job: dict[str, list[int]] = {}
    for snapshot in reader.snapshots():
        by_job.setdefault(snapshot["job_id"], []).append(snapshot["version"])
    # Each job's versions only go up, from its opening snapshot to its last change (those
    # that came in one read of a burst may be sent as the newest alone).
    for job_id in jobs:
        assert by_job[job_id][0] == 2 and by_job[job_id][-1] == 12, by_job[job_id]
        assert by_job[job_id] == sorted(set(by_job[job_id])), by_job[job_id]


async def test_resume_sends_exactly_the_jobs_changed_since(
    gateway, worker: SyncWorker, r: redis.Redis
) -> None:
    jobs = [f"r{n}" for n in range(30)]
    for job_id in jobs:
        worker.create(job_id)
    query = "&".join(f"job_id={j}" for j in jobs)
    url = f"{gateway.url}/v1/jobs?{query}"
    first = Reader()
    async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
        tg.start_soon(first.read, client, url)
        await first.until(30)
        worker.start("r3")
        await first.until(31)
        tg.cancel_scope.cancel()  # a forced disconnect
    last_id = first.events[-1].id
    # Changes while the client is away; some jobs change several times.
    for job_id in ("r5", "r7", "r5", "r29"):
        worker.start(job_id) if r.hget(keys.job_key("default", job_id), "status") == b"queued" \
            else worker.progress(job_id, 50)
    worker.cancel("r7")
    worker.create("unwatched")
    second = Reader()
    async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
        tg.start_soon(second.read, client, url, {"Last-Event-ID": last_id})
        await second.until(3)
        await anyio.sleep(0.5)  # nothing more may come
        tg.cancel_scope.cancel()
    assert [e.event for e in second.events] == ["snapshot"] * 3
    received = {s["job_id"]: s for s in second.snapshots()}
    assert set(received) == {"r5", "r7", "r29"}
    for job_id, snapshot in received.items():  # each is the latest, as Redis has it
        assert snapshot == json.loads(r.hget(keys.job_key("default", job_id), "snapshot"))


async def test_resume_of_a_tenant_stream_reports_deleted_jobs(
    gateway, worker: SyncWorker
) -> None:
    worker.create("d1")
    reader = Reader()
    async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
        tg.start_soon(reader.read, client, f"{gateway.url}/v1/jobs")
        await reader.until(1)
        tg.cancel_scope.cancel()
    worker.cancel("d1")
    worker.delete("d1")
    again = Reader()
    async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
        tg.start_soon(again.read, client, f"{gateway.url}/v1/jobs",
                      {"Last-Event-ID": reader.events[-1].id})
        await again.until(1)
        tg.cancel_scope.cancel()
    assert again.events[0].event == "deleted"
    assert json.loads(again.events[0].data) == {"job_id": "d1", "version": None}


def test_a_hundred_ids_are_fine_and_more_are_400(gateway, worker: SyncWorker) -> None:
    hundred = "&".join(f"job_id=j{n}" for n in range(100))
    with httpx.Client(timeout=10) as client:
        with client.stream("GET", f"{gateway.url}/v1/jobs?{hundred}",
                           headers={"Accept": "text/event-stream"}) as response:
            assert response.status_code == 200
            first = next(response.iter_lines())
            assert first.startswith("retry:")
        response = client.get(f"{gateway.url}/v1/jobs?{hundred}&job_id=j100",
                              headers={"Accept": "text/event-stream"})
        assert response.status_code == 400
        assert response.json()["error"] == "request.invalid_parameter"
        response = client.get(f"{gateway.url}/v1/jobs?job_id=bad!id",
                              headers={"Accept": "text/event-stream"})
        assert response.status_code == 400
        assert response.json()["error"] == "request.invalid_job_id"


def test_the_json_page(gateway, worker: SyncWorker) -> None:
    for n in range(5):
        worker.create(f"p{n}")
    worker.cancel("p1")
    worker.start("p3")
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        page = client.get("/v1/jobs", params={"limit": 2}).json()
        assert [j["job_id"] for j in page["jobs"]] == ["p3", "p1"]  # newest change first
        rest = client.get("/v1/jobs", params={"cursor": page["next_cursor"]}).json()
        assert [j["job_id"] for j in rest["jobs"]] == ["p4", "p2", "p0"]
        assert rest["next_cursor"] is None
        queued = client.get("/v1/jobs", params={"status": "queued"}).json()
        assert [j["job_id"] for j in queued["jobs"]] == ["p4", "p2", "p0"]
        named = client.get("/v1/jobs", params=[("job_id", "p0"), ("job_id", "p3")]).json()
        assert [j["job_id"] for j in named["jobs"]] == ["p3", "p0"]
        for bad in ({"limit": "0"}, {"limit": "x"}, {"status": "done"}, {"cursor": "-1"}):
            response = client.get("/v1/jobs", params=bad)
            assert response.status_code == 400, bad
            assert response.json()["error"] == "request.invalid_parameter"


def test_the_json_page_skips_and_forgets_jobs_whose_records_expired(
    gateway, redis_url: str, r: redis.Redis
) -> None:
    """Issue 10, item 11: 500 expired jobs changed after a live one hid it from the list."""
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("live")
    with SyncWorker.from_url(redis_url, retention_seconds=1) as short:
        pipe_jobs = [f"gone{n}" for n in range(500)]
        for job_id in pipe_jobs:
            short.create(job_id)
            short.cancel(job_id)
    deadline = time.monotonic() + 10
    while r.exists(keys.job_key("default", "gone499")):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    page = httpx.get(f"{gateway.url}/v1/jobs?limit=10").json()
    assert [job["job_id"] for job in page["jobs"]] == ["live"]
    assert page["next_cursor"] is None
    assert r.zrange(keys.index_key("default"), 0, -1) == [b"live"]


async def test_a_stream_that_would_open_with_too_many_jobs_sends_a_reset(
    start_gateway, redis_url: str, r: redis.Redis
) -> None:
    """Issue 10, item 18: `Last-Event-ID: <epoch>-0` made one request send the whole
    tenant. Past GATEWAY_STREAM_OPEN_MAX_JOBS jobs, a stream opens with one `reset` event
    (reload the list), at the current position, and goes on live from there."""
    gateway = start_gateway(GATEWAY_STREAM_OPEN_MAX_JOBS="10")

    async def first_two(headers: dict[str, str], then: str) -> list[ServerSentEvent]:
        reader = Reader()
        async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
            tg.start_soon(reader.read, client, f"{gateway.url}/v1/jobs", headers)
            await reader.until(1)
            worker.start(then)
            await reader.until(2)
            tg.cancel_scope.cancel()
        return reader.events

    with SyncWorker.from_url(redis_url) as worker:
        for n in range(30):
            worker.create(f"many{n}")  # seq 1..30
        epoch = r.get(keys.epoch_key("default")).decode()
        # A resume from the start: 30 jobs changed since.
        reset, live = await first_two({"Last-Event-ID": f"{epoch}-0"}, then="many3")
        assert (reset.event, reset.id) == ("reset", f"{epoch}-30")
        assert json.loads(reset.data) == {"reason": "too_many_jobs", "jobs": 30, "limit": 10}
        assert (live.event, live.id, json.loads(live.data)["job_id"]) == (
            "status", f"{epoch}-31", "many3")
        # A fresh open: 30 jobs not ended.
        reset, live = await first_two({}, then="many4")
        assert (reset.event, reset.id) == ("reset", f"{epoch}-31")
        assert json.loads(reset.data) == {"reason": "too_many_jobs", "jobs": 30, "limit": 10}
        assert (live.event, live.id) == ("status", f"{epoch}-32")
        # A resume with fewer changes than the limit is the usual one.
        reader = Reader()
        async with httpx.AsyncClient(timeout=10) as client, anyio.create_task_group() as tg:
            tg.start_soon(reader.read, client, f"{gateway.url}/v1/jobs",
                          {"Last-Event-ID": f"{epoch}-30"})
            await reader.until(2)
            tg.cancel_scope.cancel()
        assert [(e.event, e.id) for e in reader.events] == [
            ("snapshot", f"{epoch}-31"), ("snapshot", f"{epoch}-32")]
