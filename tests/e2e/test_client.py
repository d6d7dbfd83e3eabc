"""The Python client, against real gateways: reconnects, waits, errors (docs/client.md)."""

from __future__ import annotations

import threading
import time
from contextlib import aclosing

import anyio
import pytest

from gateway.client import (
    AsyncClient,
    Client,
    Job,
    JobDidNotComplete,
    NotFound,
    Unreachable,
    WaitTimeout,
)
from gateway.embedded import free_port
from gateway.worker import SyncWorker

pytestmark = pytest.mark.anyio


@pytest.fixture
def worker(redis_url: str):
    with SyncWorker.from_url(redis_url) as w:
        yield w


async def test_follow_survives_a_gateway_restart_and_ends_terminal(
    start_gateway, worker: SyncWorker, redis_url: str
) -> None:
    first = start_gateway()
    worker.create("rs")
    worker.start("rs")
    seen: list[Job] = []
    async with AsyncClient(first.url, max_backoff=0.5) as client:

        async def follow() -> None:
            async for job in client.follow("rs"):
                seen.append(job)

        with anyio.fail_after(30):
            async with anyio.create_task_group() as tg:
                tg.start_soon(follow)
                while not seen:
                    await anyio.sleep(0.02)
                assert first.terminate() == 0  # the stream ends with a retry: the client waits
                worker.progress("rs", 50)
                worker.complete("rs", file_url="https://files.example/rs", file_name="rs.pdf")
                await anyio.to_thread.run_sync(
                    lambda: start_gateway(port=first.port))  # back on the same address
    versions = [job.version for job in seen]
    assert versions == sorted(set(versions))
    assert seen[-1].status == "completed" and seen[-1].output.file_name == "rs.pdf"
    assert seen[-1].version == 4  # create, start, progress, complete


async def test_wait_returns_the_final_snapshot(gateway, worker: SyncWorker) -> None:
    worker.create("w1")

    def work() -> None:
        time.sleep(0.3)
        worker.start("w1")
        worker.complete("w1", file_url="https://files.example/out")

    threading.Thread(target=work).start()
    async with AsyncClient(gateway.url) as client:
        job = await client.wait("w1", timeout=10, raise_on_failure=True)
    assert job.status == "completed" and job.version == 3


async def test_wait_times_out_and_can_raise_on_failure(gateway, worker: SyncWorker) -> None:
    worker.create("w2")
    async with AsyncClient(gateway.url) as client:
        with pytest.raises(WaitTimeout):
            await client.wait("w2", timeout=0.5)
        worker.fail("w2", "input.corrupt", "unreadable")
        assert (await client.wait("w2", timeout=5)).status == "failed"
        with pytest.raises(JobDidNotComplete, match=r"input\.corrupt"):
            await client.wait("w2", timeout=5, raise_on_failure=True)


async def test_unknown_jobs_raise_not_found(gateway) -> None:
    async with AsyncClient(gateway.url) as client:
        with pytest.raises(NotFound):
            await client.get("ghost")
        with anyio.fail_after(5), pytest.raises(NotFound):
            async for _ in client.follow("ghost"):
                pass


async def test_follow_many_reports_missing_and_live_events(gateway, worker: SyncWorker) -> None:
    worker.create("m1")
    events = []
    async with AsyncClient(gateway.url) as client:
        # aclosing: an async generator left by `break` is closed here, not by the GC later.
        with anyio.fail_after(10):
            async with aclosing(client.follow_many(["m1", "m-none"])) as stream:
                async for event in stream:
                    events.append(event)
                    if len(events) == 2:
                        worker.start("m1")
                    if len(events) == 3:
                        break
    assert events[0].event == "unknown" and events[0].missing == ["m-none"]
    assert (events[1].event, events[1].job.status) == ("snapshot", "queued")
    assert (events[2].event, events[2].job.status) == ("status", "running")


def test_the_sync_client(gateway, worker: SyncWorker) -> None:
    worker.create("s1")
    worker.start("s1")
    with Client(gateway.url) as client:
        assert client.get("s1").status == "running"
        with pytest.raises(WaitTimeout):
            client.wait("s1", timeout=0.5)
        threading.Timer(0.3, lambda: worker.complete("s1", file_url="https://files.example/out")).start()
        assert client.wait("s1", timeout=10).status == "completed"
        with pytest.raises(NotFound):
            client.wait("nobody", timeout=5)
        assert [job.version for job in client.follow("s1")] == [3]


def test_the_sync_wait_times_out_while_heartbeats_flow(start_gateway, worker: SyncWorker) -> None:
    """Issue 10, item 19: each heartbeat restarted the read timeout and the deadline was
    never looked at, so wait(timeout=...) never raised while the stream stayed alive."""
    gateway = start_gateway(GATEWAY_HEARTBEAT_SECONDS="0.2")
    worker.create("hb")
    worker.start("hb")  # and it never ends
    outcome: list[BaseException] = []

    def wait() -> None:
        with Client(gateway.url) as client:
            try:
                client.wait("hb", timeout=1)
            except BaseException as exc:  # handed to the test thread
                outcome.append(exc)

    thread = threading.Thread(target=wait, daemon=True)
    thread.start()
    thread.join(20)  # a bound for the test only: the wait itself is one second
    assert not thread.is_alive(), "wait(timeout=1) still blocked after 20 s of heartbeats"
    assert len(outcome) == 1 and isinstance(outcome[0], WaitTimeout)


async def test_follow_many_resumes_and_replays_what_it_missed(
    start_gateway, worker: SyncWorker
) -> None:
    """A resume, not a refetch: a tenant-wide stream opened afresh shows only the jobs not
    ended, so a job that ended while the gateway was down reaches the client only when it
    resumes with Last-Event-ID."""
    first = start_gateway()
    worker.create("m1")
    worker.start("m1")
    events: list[tuple[str, str | None]] = []
    async with AsyncClient(first.url, max_backoff=0.5) as client:
        with anyio.fail_after(30):
            async with aclosing(client.follow_many()) as stream:
                async for event in stream:
                    events.append((event.event, event.job and event.job.status))
                    if events == [("snapshot", "running")]:
                        assert first.terminate() == 0
                        worker.complete("m1", file_url="https://files.example/m1")
                        await anyio.to_thread.run_sync(lambda: start_gateway(port=first.port))
                    if event.job is not None and event.job.status == "completed":
                        break
    assert events == [("snapshot", "running"), ("snapshot", "completed")]


async def test_follow_many_passes_a_reset_on(start_gateway, worker: SyncWorker) -> None:
    gateway = start_gateway(GATEWAY_STREAM_OPEN_MAX_JOBS="2")
    for n in range(3):
        worker.create(f"z{n}")
    async with AsyncClient(gateway.url) as client:
        with anyio.fail_after(10):
            async with aclosing(client.follow_many()) as stream:
                first = await anext(stream)
                worker.start("z1")
                second = await anext(stream)
    assert (first.event, first.job) == ("reset", None)
    assert (second.event, second.job_id, second.job.status) == ("status", "z1", "running")


async def test_an_api_key_is_sent_and_a_refusal_raises(start_gateway, redis_url: str) -> None:
    """docs/api.md, Auth: ``api_key=`` takes a key or a token; 401 raises, never retried."""
    import redis

    from gateway.auth import apikeys
    from gateway.auth.principal import Scope
    from gateway.client import Unauthorized

    with redis.Redis.from_url(redis_url) as r:
        key, _ = apikeys.create(r, "acme", Scope.READ)
    gateway = start_gateway()
    with SyncWorker.from_url(redis_url, tenant="acme") as worker:
        worker.create("keyed")
        async with AsyncClient(gateway.url, api_key=key) as client:
            assert (await client.get("keyed")).status == "queued"
            worker.cancel("keyed")
            with anyio.fail_after(10):
                events = [e async for e in client.follow("keyed")]
            assert events[-1].status == "canceled"
        for anonymous in (AsyncClient(gateway.url), AsyncClient(gateway.url, api_key="nope")):
            async with anonymous as client:
                with pytest.raises(Unauthorized):
                    await client.get("keyed")
                with anyio.fail_after(5), pytest.raises(Unauthorized):
                    async for _ in client.follow("keyed"):
                        pass
    with Client(gateway.url, api_key=key) as sync_client:
        assert sync_client.get("keyed").status == "canceled"


async def test_a_gateway_never_reached_is_an_error_after_a_few_attempts() -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with anyio.fail_after(20):  # 0.5 + 1 + 2 + 4 s of backoff between five attempts
        async with AsyncClient(nowhere) as client:
            with pytest.raises(Unreachable, match=f"cannot reach the gateway at {nowhere}"):
                await client.wait("x", timeout=600)
    started = time.monotonic()
    with Client(nowhere, connect_attempts=2) as blocking, pytest.raises(Unreachable):
        blocking.wait("x", timeout=600)
    assert time.monotonic() - started < 5


def test_the_backoff_starts_from_retry_once_the_gateway_answers() -> None:
    import httpx

    from gateway.client._client import _Follow, _Retry

    follow = _Follow("/v1/jobs/x", [], single=True, max_backoff=60, connect_attempts=5)
    for _ in range(3):  # three connects that never reached it: 0.5, 1, 2 s
        follow.broken("http://gateway", httpx.ConnectError("refused"))
    busy = httpx.Response(503, headers={"Retry-After": "1"})
    with pytest.raises(_Retry):
        follow.check(busy, b"")
    assert 2.4 <= follow.delay() <= 3.6  # retry: 3000 ms, not 3000 ms * 2^3
