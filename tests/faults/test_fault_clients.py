"""Faults on the client side: a stopped client, connection churn, and a gateway
stopped under 500 open streams. Nothing a client is promised may be lost."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import anyio
import pytest
import redis
from observe import Balancer, Observer, assert_consistent, metric

from gateway.worker import SyncWorker

pytestmark = pytest.mark.anyio

HERE = Path(__file__).parent


def rss_bytes(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status)[1]) * 1024


@pytest.mark.timeout(120)
async def test_a_stopped_client_is_dropped_and_recovers(
    start_gateway, redis_url: str, r: redis.Redis, tmp_path: Path
) -> None:
    # A send timeout longer than the publishing takes: the memory is measured while the
    # stopped client is still attached, so only conflation can have bounded it.
    gateway = start_gateway(GATEWAY_SEND_TIMEOUT_SECONDS="30", GATEWAY_HEARTBEAT_SECONDS="1")
    out = tmp_path / "follower.txt"
    with SyncWorker.from_url(redis_url) as worker:
        # Snapshots of ~3.5 KiB: the longest file name and 30 long metric names.
        worker.create("big", conversion={"original_filename": "f" * 1000})
        worker.start("big")
        follower = subprocess.Popen(
            [sys.executable, str(HERE / "follower.py"), gateway.url, "big", str(out)],
            cwd=HERE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            with anyio.fail_after(20):
                while not out.exists() or "seen" not in out.read_text():
                    await anyio.sleep(0.05)
            follower.send_signal(signal.SIGSTOP)
            other = Observer(gateway.url, "/v1/jobs/big", jobs={"big"})
            names = [f"{'m' * 60}{i:02d}" for i in range(30)]  # 10,000 events of ~3.5 KiB:
            # far more than socket buffers
            before = rss_bytes(gateway.process.pid)
            async with anyio.create_task_group() as tg:
                tg.start_soon(other.run, 100)

                def publish() -> None:
                    for n in range(10_000):
                        worker.progress("big", n / 101, phase=f"p{n}",
                                        metrics=dict.fromkeys(names, n))
                    worker.complete("big", file_url="https://files.example/big")

                await anyio.to_thread.run_sync(publish)
                grown = rss_bytes(gateway.process.pid) - before
                assert metric(gateway.url, "gateway_slow_client_disconnects") == 0
            assert_consistent(other, r, ["big"])  # the other client was not held up
            with anyio.fail_after(45):  # the send timeout drops the stopped client
                while metric(gateway.url, "gateway_slow_client_disconnects") < 1:
                    await anyio.sleep(0.1)
            assert grown < 30 * 2**20, f"gateway memory grew by {grown / 2**20:.1f} MiB"
            follower.send_signal(signal.SIGCONT)
            assert follower.wait(60) == 0
        finally:
            follower.kill()
            follower.wait()
    lines = out.read_text().splitlines()
    versions = [json.loads(line[5:])[1] for line in lines if line.startswith("seen ")]
    assert versions == sorted(set(versions)), "versions must only go up"
    final = json.loads(next(line[6:] for line in lines if line.startswith("final ")))
    assert final == json.loads(r.hget("gw:{default}:job:big", "snapshot"))
    assert final["status"] == "completed"
    connections = int(next(line.split()[1] for line in lines if line.startswith("connections")))
    assert connections >= 2  # it was disconnected, and resumed


def _cycle(port: int, path: str) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n".encode())
        data = b""
        while b"event: " not in data:  # the stream is open and has sent its opening
            chunk = s.recv(65536)
            assert chunk, data
            data += chunk


def _resources(gateway, r: redis.Redis) -> dict[str, float]:
    return {
        "redis clients": len(r.client_list()),
        "pubsub channels": len(r.pubsub_channels()),
        "hub channels": metric(gateway.url, "gateway_pubsub_channels"),
        "watchers": metric(gateway.url, "gateway_watchers"),
        "open streams": metric(gateway.url, "gateway_open_streams"),
        "tasks": metric(gateway.url, "gateway_asyncio_tasks"),
        "fds": len(os.listdir(f"/proc/{gateway.process.pid}/fd")),
    }


@pytest.mark.timeout(120)
def test_a_thousand_connect_disconnect_cycles_leak_nothing(
    gateway, r: redis.Redis
) -> None:
    """Each cycle follows a job no cycle followed before (a channel, a watcher, a
    subscription of its own), so that anything a closed stream leaves behind adds up."""
    with SyncWorker.from_url(gateway.env["REDIS_URL"]) as worker:
        for n in range(1024):
            worker.create(f"c{n}")

    def path(n: int) -> str:
        if n % 10 == 9:
            return f"/v1/jobs?job_id=c{n}&job_id=c{n - 1}"  # many jobs on one stream
        return "/v1/jobs" if n % 100 == 50 else f"/v1/jobs/c{n}"

    for n in range(1000, 1024):  # warm up: lazily made objects, pools
        _cycle(gateway.port, path(n))
    time.sleep(0.5)
    baseline = _resources(gateway, r)
    rss = rss_bytes(gateway.process.pid)
    for n in range(1000):
        _cycle(gateway.port, path(n))
    deadline = time.monotonic() + 10
    while (now := _resources(gateway, r)) != baseline and time.monotonic() < deadline:
        time.sleep(0.2)
    assert now["redis clients"] == baseline["redis clients"], (baseline, now)
    assert now["pubsub channels"] == baseline["pubsub channels"], (baseline, now)
    assert now["hub channels"] == baseline["hub channels"] == 0, (baseline, now)
    assert now["watchers"] == baseline["watchers"] == 0, (baseline, now)
    assert now["open streams"] == 0, (baseline, now)
    assert now["tasks"] <= baseline["tasks"], (baseline, now)
    assert now["fds"] <= baseline["fds"], (baseline, now)
    # A stream's state is some 15 KiB: a thousand left behind would be 15 MiB.
    grown = rss_bytes(gateway.process.pid) - rss
    assert grown < 4 * 2**20, f"{grown / 2**20:.1f} MiB more after 1,000 closed streams"


@pytest.mark.timeout(120)
async def test_sigterm_under_500_streams_and_the_clients_move_to_another_gateway(
    start_gateway, redis_url: str, r: redis.Redis
) -> None:
    first = start_gateway(GATEWAY_SHUTDOWN_GRACE_SECONDS="600")
    second = start_gateway()
    jobs = [f"s{n}" for n in range(50)]
    with SyncWorker.from_url(redis_url) as worker:
        for job_id in jobs:
            worker.create(job_id)
            worker.start(job_id)
        async with Balancer([first.port, second.port]) as balancer:
            watching = [Observer(balancer.url, f"/v1/jobs/{jobs[n % 50]}",
                                 jobs={jobs[n % 50]}) for n in range(500)]
            async with anyio.create_task_group() as tg:
                for observer in watching:
                    tg.start_soon(observer.run, 90)
                with anyio.fail_after(30):
                    while metric(first.url, "gateway_open_streams") < 500:
                        await anyio.sleep(0.2)
                # Its grace is far longer than terminate() waits: the streams end on the
                # signal, or this raises TimeoutExpired.
                code = await anyio.to_thread.run_sync(first.terminate)
                assert code == 0
                for job_id in jobs:
                    worker.progress(job_id, 50)
                    worker.complete(job_id, file_url=f"https://files.example/{job_id}")
    for observer in watching:
        assert_consistent(observer, r, sorted(observer.jobs))
        assert observer.connections == 2  # the first gateway, then the second
