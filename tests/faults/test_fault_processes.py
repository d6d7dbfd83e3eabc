"""Many gateway processes share nothing but Redis: a client moved from one to another
with its Last-Event-ID loses nothing, even when the first one dies without a word."""

from __future__ import annotations

import threading

import anyio
import pytest
import redis
from observe import Balancer, Observer, assert_consistent, metric

from gateway.contract import keys
from gateway.worker import SyncWorker

pytestmark = pytest.mark.anyio


def _work(redis_url: str, jobs: list[str], stop: threading.Event) -> None:
    """Reports for every job, in turn, until each has ended (a few seconds)."""
    with SyncWorker.from_url(redis_url) as worker:
        for percent in range(5, 100, 5):
            for job_id in jobs:
                worker.progress(job_id, percent, phase=f"step {percent}")
            if stop.wait(0.1):
                return
        for n, job_id in enumerate(jobs):
            if n % 3 == 0:
                worker.fail(job_id, "ffmpeg.invalid_input", "bad input")
            else:
                worker.complete(job_id, file_url=f"https://files.example/{job_id}")
        worker.delete(jobs[0])  # a deletion the client learns of from the other process


@pytest.mark.timeout(90)
async def test_a_tenant_stream_moves_to_another_process_when_the_first_is_killed(
    start_gateway, redis_url: str, r: redis.Redis
) -> None:
    first, second = start_gateway(), start_gateway()
    jobs = [f"moved-{n}" for n in range(6)]
    with SyncWorker.from_url(redis_url) as worker:
        for job_id in jobs:
            worker.create(job_id)
            worker.start(job_id)
    stop = threading.Event()
    reporting = threading.Thread(target=_work, args=(redis_url, jobs, stop))
    async with Balancer([first.port, second.port]) as balancer:
        observer = Observer(balancer.url, "/v1/jobs", jobs=set(jobs))
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(observer.run, 60)
                with anyio.fail_after(15):
                    while metric(first.url, "gateway_open_streams") < 1:
                        await anyio.sleep(0.05)
                reporting.start()
                with anyio.fail_after(15):
                    while not any(len(observer.seen.get(j, [])) > 3 for j in jobs):
                        await anyio.sleep(0.05)
                assert first.process is not None
                first.process.kill()  # mid-stream, no retry:, no goodbye
                first.process.wait(10)
        finally:
            stop.set()
            if reporting.is_alive():
                reporting.join(30)
    assert observer.connections == 2  # the first process, then the second
    assert_consistent(observer, r, jobs[1:])
    # The deleted job: every version seen went up, and its last was its terminal one.
    seen = observer.seen[jobs[0]]
    assert [v for _, v in seen] == sorted({v for _, v in seen})
    assert observer.last[jobs[0]]["status"] == "failed"
    assert r.exists(keys.job_key("default", jobs[0])) == 0
