"""``GET /v1/jobs/{id}`` as an event stream (docs/api.md, Event streams), against real uvicorn."""

from __future__ import annotations

import itertools
import json
import re
import time

import anyio
import httpx
import pytest
import redis
from httpx_sse import ServerSentEvent, aconnect_sse, connect_sse

from gateway.contract import keys
from gateway.worker import SyncWorker, Worker

pytestmark = pytest.mark.anyio

EVENT_ID = re.compile(r"[a-z0-9]{6,16}-\d+")

# EMPTY: httpx-sse keeps the last event id across blocks (as the SSE spec says) and then
# reports every later block without data, such as a `: keepalive` heartbeat, as an event
# with empty data. Browsers dispatch nothing for those; the tests skip them the same way.


@pytest.fixture
def worker(redis_url: str):
    with SyncWorker.from_url(redis_url) as w:
        yield w


def read_events(url: str, headers: dict[str, str] | None = None, *, limit: int = 100,
                timeout: float = 10) -> tuple[httpx.Response, list[ServerSentEvent]]:
    """Every event until the server ends the stream (or ``limit`` events)."""
    events: list[ServerSentEvent] = []
    with httpx.Client(timeout=timeout) as client, connect_sse(
        client, "GET", url, headers=headers or {}
    ) as source:
        if source.response.status_code == 200:
            for event in source.iter_sse():
                if not event.data:
                    continue  # a block with only `retry:` (httpx-sse reports those too)
                events.append(event)
                if len(events) >= limit:
                    break
        return source.response, events


async def test_stream_opens_with_retry_and_snapshot_and_ends_after_terminal(
    gateway, redis_url: str
) -> None:
    async with Worker.from_url(redis_url) as w:
        await w.create("s1")
        events: list[ServerSentEvent] = []
        raw = b""
        async with httpx.AsyncClient(timeout=10) as client, client.stream(
            "GET", f"{gateway.url}/v1/jobs/s1", headers={"Accept": "text/event-stream"}
        ) as response:
            assert response.status_code == 200
            assert response.headers["content-type"] == "text/event-stream"
            assert response.headers["cache-control"] == "no-cache"
            assert response.headers["x-accel-buffering"] == "no"
            assert response.headers["vary"] == "Accept"

            async def arrived(count: int) -> None:
                while raw.count(b"\ndata: ") < count:
                    await anyio.sleep(0.01)

            async def work() -> None:
                # Each change once the one before arrived: changes that come together may
                # reach a client as the newest alone (a burst), which is not this test.
                await arrived(1)
                await w.start("s1", phase="Loading")
                await arrived(2)
                await w.progress("s1", 30, phase="Rendering")
                await arrived(3)
                await w.progress("s1", 60)
                await arrived(4)
                await w.complete("s1", file_url="https://files.example/s1.pdf")

            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(work)
                    async for chunk in response.aiter_bytes():
                        raw += chunk
    assert raw.startswith(b"retry: 3000\nid: ")
    for block in raw.decode().split("\n\n"):
        lines = [line for line in block.splitlines() if not line.startswith(":")]
        fields = dict(line.split(": ", 1) for line in lines)
        if "data" in fields:
            events.append(ServerSentEvent(fields["event"], fields["data"], fields["id"]))
    assert [e.event for e in events] == ["snapshot", "status", "progress", "progress", "status"]
    versions = [json.loads(e.data)["version"] for e in events]
    assert versions == [1, 2, 3, 4, 5]
    assert all(EVENT_ID.fullmatch(e.id) for e in events)
    seqs = [int(e.id.rsplit("-", 1)[1]) for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert json.loads(events[-1].data)["status"] == "completed"


def test_terminal_job_gives_its_snapshot_then_ends(gateway, worker: SyncWorker) -> None:
    worker.create("s2")
    worker.fail("s2", "input.corrupt", "cannot read")
    response, events = read_events(f"{gateway.url}/v1/jobs/s2")
    assert [e.event for e in events] == ["snapshot"]
    assert json.loads(events[0].data)["error"]["code"] == "input.corrupt"
    # EventSource reconnects with the id it saw last: 204 stops it.
    response, events = read_events(f"{gateway.url}/v1/jobs/s2",
                                   {"Last-Event-ID": events[0].id})
    assert response.status_code == 204 and events == []


def _epoch(r: redis.Redis) -> str:
    return r.get(keys.epoch_key("default")).decode()


async def _first_events(url: str, headers: dict[str, str], count: int, *,
                        then: object = None, timeout: float = 5) -> list[ServerSentEvent]:
    """The first ``count`` events; with ``then``, assert that none comes before it runs."""
    events: list[ServerSentEvent] = []
    with anyio.fail_after(timeout):
        async with httpx.AsyncClient(timeout=timeout) as client, aconnect_sse(
            client, "GET", url, headers=headers
        ) as source:
            assert source.response.status_code == 200

            async def read() -> None:
                async for event in source.aiter_sse():
                    if event.data:  # not a block with only `retry:`
                        events.append(event)
                        if len(events) == count:
                            return

            async with anyio.create_task_group() as tg:
                tg.start_soon(read)
                if then is not None:
                    await anyio.sleep(0.5)  # time for the server to (wrongly) send something
                    assert events == []
                    await then()  # type: ignore[operator]
    return events


async def test_resume_behind_gets_progress_with_the_current_snapshot(
    gateway, worker: SyncWorker, r: redis.Redis
) -> None:
    worker.create("r1")
    worker.start("r1")
    worker.progress("r1", 10)  # seq 3
    worker.progress("r1", 20)  # seq 4
    events = await _first_events(f"{gateway.url}/v1/jobs/r1",
                                 {"Last-Event-ID": f"{_epoch(r)}-3"}, 1)
    assert events[0].event == "progress"
    assert json.loads(events[0].data)["progress"]["percent"] == 20.0
    assert events[0].id == f"{_epoch(r)}-4"


async def test_resume_behind_a_status_change_gets_status(
    gateway, worker: SyncWorker, r: redis.Redis
) -> None:
    worker.create("r2")  # seq 1: queued
    worker.start("r2")  # seq 2: running
    worker.progress("r2", 50)  # seq 3
    events = await _first_events(f"{gateway.url}/v1/jobs/r2",
                                 {"Last-Event-ID": f"{_epoch(r)}-1"}, 1)
    assert events[0].event == "status"
    assert json.loads(events[0].data)["version"] == 3


async def test_resume_up_to_date_gets_nothing_until_the_next_change(
    gateway, worker: SyncWorker, r: redis.Redis
) -> None:
    worker.create("r3")
    worker.start("r3")

    async def change() -> None:
        worker.progress("r3", 5)

    events = await _first_events(f"{gateway.url}/v1/jobs/r3",
                                 {"Last-Event-ID": f"{_epoch(r)}-2"}, 1, then=change)
    assert [e.event for e in events] == ["progress"]
    assert json.loads(events[0].data)["version"] == 3


@pytest.mark.parametrize("last_id", ["garbage", "abc-1", "UPPER123-2", "", "zzzzzz-1",
                                     "aaaaaaaaaaaaaaaaaaaa-1"])
async def test_malformed_or_foreign_id_gets_a_fresh_snapshot(
    gateway, worker: SyncWorker, r: redis.Redis, last_id: str
) -> None:
    created = worker.create("r4")
    events = await _first_events(f"{gateway.url}/v1/jobs/r4", {"Last-Event-ID": last_id}, 1)
    # The job's snapshot at its own position, as if no id had been sent (never echoed).
    assert [(e.event, e.id) for e in events] == [("snapshot", f"{_epoch(r)}-1")]
    assert json.loads(events[0].data) == created


async def test_other_epoch_gets_a_fresh_snapshot_even_past_the_end(
    gateway, worker: SyncWorker
) -> None:
    worker.create("r5")
    worker.cancel("r5")
    response, events = read_events(f"{gateway.url}/v1/jobs/r5",
                                   {"Last-Event-ID": "otherepoch-999999"})
    assert response.status_code == 200 and [e.event for e in events] == ["snapshot"]


async def test_an_id_from_past_this_jobs_history_gets_a_fresh_snapshot(
    gateway, worker: SyncWorker, r: redis.Redis
) -> None:
    """Issue 10, item 14: a future id, or another job's later one, cannot be a position in
    this job's history: the client gets the snapshot (and so sees the end), not a 204
    that stops EventSource before it ever saw the job end."""
    worker.create("r7")
    worker.cancel("r7")  # the end, at seq 2
    worker.create("other")  # seq 3: another job's id
    for last_id in (f"{_epoch(r)}-999999999", f"{_epoch(r)}-3"):
        response, events = read_events(f"{gateway.url}/v1/jobs/r7", {"Last-Event-ID": last_id})
        assert response.status_code == 200, last_id
        assert [e.event for e in events] == ["snapshot"]
        assert json.loads(events[0].data)["status"] == "canceled"
    # At the end itself: 204, as before.
    response, _ = read_events(f"{gateway.url}/v1/jobs/r7", {"Last-Event-ID": f"{_epoch(r)}-2"})
    assert response.status_code == 204


async def test_a_future_id_on_a_tenant_stream_opens_it_afresh(
    gateway, worker: SyncWorker, r: redis.Redis
) -> None:
    worker.create("t1")
    worker.create("t2")
    response, events = read_events(f"{gateway.url}/v1/jobs",
                                   {"Last-Event-ID": f"{_epoch(r)}-999999999"}, limit=2)
    assert response.status_code == 200
    assert sorted(json.loads(e.data)["job_id"] for e in events) == ["t1", "t2"]


async def test_last_event_id_query_parameter_and_header_precedence(
    gateway, worker: SyncWorker, r: redis.Redis
) -> None:
    worker.create("r6")
    worker.cancel("r6")
    past = f"{_epoch(r)}-2"
    response, _ = read_events(f"{gateway.url}/v1/jobs/r6?last_event_id={past}")
    assert response.status_code == 204
    response, events = read_events(f"{gateway.url}/v1/jobs/r6?last_event_id={past}",
                                   {"Last-Event-ID": "junk"})
    assert response.status_code == 200 and events[0].event == "snapshot"


def test_stream_of_unknown_job_is_404_json(gateway) -> None:
    response = httpx.get(f"{gateway.url}/v1/jobs/ghost", headers={"Accept": "text/event-stream"})
    assert response.status_code == 404
    assert response.json()["error"] == "jobs.not_found"


async def test_heartbeats_keep_an_idle_stream_alive(gateway, worker: SyncWorker) -> None:
    worker.create("hb")  # the gateway fixture sends a heartbeat every 0.5 s
    lines: list[str] = []
    with anyio.fail_after(10):
        async with httpx.AsyncClient(timeout=10) as client, client.stream(
            "GET", f"{gateway.url}/v1/jobs/hb", headers={"Accept": "text/event-stream"}
        ) as response:
            started = time.monotonic()
            async for line in response.aiter_lines():
                lines.append(line)
                if lines.count(": keepalive") == 3:
                    break
            elapsed = time.monotonic() - started
    assert lines.count(": keepalive") == 3
    assert elapsed >= 0.5  # a timer, not a burst


async def test_a_watcher_joining_mid_burst_sees_increasing_versions_to_the_end(
    gateway, redis_url: str
) -> None:
    updates = 1000
    async with Worker.from_url(redis_url) as w:
        await w.create("burst")
        await w.start("burst")
        halfway = anyio.Event()
        seen: list[int] = []

        async def burst() -> None:
            for i in range(1, updates + 1):
                await w.progress("burst", i / 10)
                if i == updates // 3:
                    halfway.set()
            await w.complete("burst", file_url="https://files.example/burst")

        async def watch() -> None:
            await halfway.wait()
            async with httpx.AsyncClient(timeout=20) as client, aconnect_sse(
                client, "GET", f"{gateway.url}/v1/jobs/burst"
            ) as source:
                async for event in source.aiter_sse():
                    if event.data:  # see EMPTY above
                        seen.append(json.loads(event.data)["version"])

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                tg.start_soon(burst)
    final_version = updates + 3  # create, start, the updates, complete
    assert seen, "the watcher saw nothing"
    assert all(a < b for a, b in itertools.pairwise(seen)), "versions must strictly increase"
    assert seen[-1] == final_version
    assert seen[0] < final_version  # it did join mid-burst


def _hub_connections(r: redis.Redis, pid: int) -> list[dict]:
    return [c for c in r.client_list() if c.get("name") == f"gateway-hub-{pid}"]


async def test_a_hundred_watchers_share_one_pubsub_connection(
    gateway, redis_url: str, r: redis.Redis
) -> None:
    watchers = 100
    async with Worker.from_url(redis_url) as w:
        await w.create("fan")
        await w.start("fan")
        results: list[list[tuple[str, str, str]]] = []
        results_started: list[bool] = []
        connected = 0
        all_connected = anyio.Event()

        first_events: list[tuple[str, str, str]] = []

        async def watch(client: httpx.AsyncClient) -> None:
            nonlocal connected
            events: list[tuple[str, str, str]] = first_events if not results_started else []
            results_started.append(True)
            async with aconnect_sse(client, "GET", f"{gateway.url}/v1/jobs/fan") as source:
                async for event in source.aiter_sse():
                    if not event.data:  # see EMPTY above
                        continue
                    events.append((event.id, event.event, event.data))
                    if event.event == "snapshot":
                        connected += 1
                        if connected == watchers:
                            all_connected.set()
            results.append(events)

        limits = httpx.Limits(max_connections=watchers + 10)
        with anyio.fail_after(30):
            async with httpx.AsyncClient(timeout=20, limits=limits) as client:
                async with anyio.create_task_group() as tg:
                    for _ in range(watchers):
                        tg.start_soon(watch, client)
                    await all_connected.wait()
                    hub = _hub_connections(r, gateway.process.pid)
                    assert len(hub) == 1, hub
                    assert "P" in hub[0]["flags"]  # a pub/sub connection
                    assert r.pubsub_numsub(keys.job_channel("default", "fan")) == [
                        (keys.job_channel("default", "fan").encode(), 1)]
                    for n, percent in enumerate((25, 50, 75), start=2):
                        await w.progress("fan", percent)
                        while len(first_events) < n:  # apart: not a burst to fold together
                            await anyio.sleep(0.01)
                    await w.complete("fan", file_url="https://files.example/fan")
    assert len(results) == watchers
    live = [events[1:] for events in results]  # after each one's opening snapshot
    assert all(events == live[0] for events in live)
    assert [e[1] for e in live[0]] == ["progress", "progress", "progress", "status"]


async def test_the_last_watcher_leaving_unsubscribes(
    gateway, worker: SyncWorker, r: redis.Redis
) -> None:
    worker.create("leave")
    channel = keys.job_channel("default", "leave")

    def subscribers() -> int:
        return r.pubsub_numsub(channel)[0][1]

    async def until(count: int) -> None:
        with anyio.fail_after(5):
            while subscribers() != count:
                await anyio.sleep(0.02)

    async with httpx.AsyncClient(timeout=10) as client:
        # The iterators are kept: a dropped one closes its response.
        async with aconnect_sse(client, "GET", f"{gateway.url}/v1/jobs/leave") as first:
            events_first = first.aiter_sse()
            await events_first.__anext__()
            async with aconnect_sse(client, "GET", f"{gateway.url}/v1/jobs/leave") as second:
                events_second = second.aiter_sse()
                await events_second.__anext__()
                await until(1)
                await events_second.aclose()
            await anyio.sleep(0.3)
            assert subscribers() == 1  # one watcher is still there
            await events_first.aclose()
        await until(0)
    assert r.pubsub_channels(keys.job_channel("default", "*")) == []


def test_head_of_a_stream_gives_its_headers_and_ends(gateway, worker: SyncWorker) -> None:
    worker.create("hd")
    stream = {"Accept": "text/event-stream"}
    with httpx.Client(timeout=5) as client:
        for url in (f"{gateway.url}/v1/jobs/hd", f"{gateway.url}/v1/jobs?job_id=hd"):
            response = client.head(url, headers=stream)
            assert response.status_code == 200, url
            assert response.headers["content-type"] == "text/event-stream"
            assert len(response.headers.get_list("x-request-id")) == 1
        missing = client.head(f"{gateway.url}/v1/jobs/nothere", headers=stream)
        assert missing.status_code == 404
        # As GET would: past the terminal change, 204.
        worker.cancel("hd")
        last = client.get(f"{gateway.url}/v1/jobs/hd").json()["version"]
        assert last == 2
        events = read_events(f"{gateway.url}/v1/jobs/hd")[1]
        ended = client.head(f"{gateway.url}/v1/jobs/hd",
                            headers={**stream, "Last-Event-ID": events[-1].id})
        assert ended.status_code == 204


def test_a_stream_request_that_fails_still_names_its_request_id(gateway) -> None:
    response = httpx.get(f"{gateway.url}/v1/jobs/nothere",
                         headers={"Accept": "text/event-stream", "X-Request-ID": "rq-404"})
    assert response.status_code == 404
    assert response.json()["error"] == "jobs.not_found"
    assert response.headers.get_list("x-request-id") == ["rq-404"]
