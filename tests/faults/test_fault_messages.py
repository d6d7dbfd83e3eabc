"""A silent pub/sub connection, and malformed messages on gateway channels."""

from __future__ import annotations

import anyio
import httpx
import pytest
import redis
from observe import Freezer, Observer, assert_consistent, metric

from gateway.contract import keys
from gateway.embedded import EmbeddedRedis
from gateway.worker import SyncWorker

pytestmark = pytest.mark.anyio


async def test_a_silent_pubsub_is_found_by_the_probe(start_gateway) -> None:
    with EmbeddedRedis() as server:
        r = redis.Redis.from_url(server.url)
        async with Freezer(server.port) as freezer:
            # The gateway reaches Redis through the proxy; the worker directly.
            # (in a thread: the proxy runs on this event loop)
            gateway = await anyio.to_thread.run_sync(lambda: start_gateway(
                freezer.url, GATEWAY_PROBE_SECONDS="0.5", GATEWAY_SUBSCRIBE_TIMEOUT_SECONDS="1",
                GATEWAY_REDIS_TIMEOUT_SECONDS="1"))
            observer = Observer(gateway.url, "/v1/jobs/quiet", jobs={"quiet"})
            with SyncWorker.from_url(server.url) as worker:
                worker.create("quiet")
                worker.start("quiet")
                async with anyio.create_task_group() as tg:
                    tg.start_soon(observer.run, 30)
                    while not observer.last:
                        await anyio.sleep(0.05)
                    freezer.freeze()  # no error, no FIN: messages just stop coming
                    for percent in (10, 20, 30):
                        worker.progress("quiet", percent)
                    worker.complete("quiet", file_url="https://files.example/quiet")
            assert_consistent(observer, r, ["quiet"])
            assert observer.connections == 1  # the stream itself never broke
            failures = await anyio.to_thread.run_sync(
                metric, gateway.url, "gateway_probe_failures")
            assert failures >= 1
        r.close()


async def test_a_silent_reads_connection_costs_one_bounded_wait(start_gateway) -> None:
    """The reads every GET shares stop answering (no error, no FIN): a request waits
    GATEWAY_REDIS_TIMEOUT_SECONDS, answers 503, and the next one gets a new connection."""
    with EmbeddedRedis() as server:
        with SyncWorker.from_url(server.url) as worker:
            worker.create("mute")
        async with Freezer(server.port) as freezer:
            gateway = await anyio.to_thread.run_sync(lambda: start_gateway(
                freezer.url, GATEWAY_REDIS_TIMEOUT_SECONDS="1"))
            async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
                assert (await client.get("/v1/jobs/mute")).status_code == 200
                freezer.freeze()
                # One bounded wait and a 503 (a hang would be the client's timeout).
                frozen = await client.get("/v1/jobs/mute", timeout=30)
                assert frozen.status_code == 503
                assert frozen.json()["error"] == "backend.unavailable"
                after = await client.get("/v1/jobs/mute")
                assert after.status_code == 200 and after.json()["job_id"] == "mute"


async def test_malformed_messages_are_dropped_counted_and_logged_once(
    gateway, redis_url: str, r: redis.Redis
) -> None:
    channel = keys.job_channel("default", "bad")
    observer = Observer(gateway.url, "/v1/jobs/bad", jobs={"bad"})
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("bad")
        worker.start("bad")
        async with anyio.create_task_group() as tg:
            tg.start_soon(observer.run, 20)
            while not observer.last:
                await anyio.sleep(0.05)
            garbage = [b"not json at all", b"a b c\n{\"x\": 1}", b"x-1 progress 2 running 0 bad\n",
                       b"e-1 progress two running 0 bad\n{}", b"{" * (2 << 20)]
            for payload in garbage:
                r.publish(channel, payload)
            worker.progress("bad", 50)
            worker.complete("bad", file_url="https://files.example/bad")
    assert_consistent(observer, r, ["bad"])
    assert metric(gateway.url, "gateway_bad_messages") == len(garbage)
    warnings = [line for line in gateway.output().splitlines() if "malformed" in line]
    assert len(warnings) == 1 and channel in warnings[0]


async def test_metrics_report_streams_events_and_fanout(
    gateway, redis_url: str, r: redis.Redis
) -> None:
    published = r.pubsub()
    published.subscribe(keys.job_channel("default", "met"))
    assert published.get_message(timeout=5)["type"] == "subscribe"
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("met")
        worker.start("met")
        observer = Observer(gateway.url, "/v1/jobs/met", jobs={"met"})
        async with anyio.create_task_group() as tg:
            tg.start_soon(observer.run, 20)
            while not observer.last:
                await anyio.sleep(0.05)
            text = httpx.get(f"{gateway.url}/metrics").text
            assert 'gateway_open_streams{kind="job"} 1.0' in text
            assert "gateway_pubsub_channels 1.0" in text
            worker.progress("met", 50)
            while observer.last["met"]["version"] < 3:  # apart: no burst to fold together
                await anyio.sleep(0.02)
            worker.complete("met", file_url="https://files.example/out")
    text = httpx.get(f"{gateway.url}/metrics").text
    # Exactly the two changes after the opening snapshot (which the stream writes itself).
    frames = []
    while (message := published.get_message(timeout=1)) is not None:
        header, data = message["data"].split(b"\n", 1)
        event_id, event = header.split(b" ")[:2]
        if int(event_id.split(b"-")[1]) > 2:  # after create and start
            frames.append(b"id: %s\nevent: %s\ndata: %s\n\n" % (event_id, event, data))
    published.close()
    assert len(frames) == 2
    assert metric(gateway.url, "gateway_events_sent_total") == 2
    assert metric(gateway.url, "gateway_bytes_sent_total") == sum(map(len, frames))
    assert metric(gateway.url, "gateway_fanout_latency_seconds_count") == 2
    assert 'gateway_open_streams{kind="job"} 0.0' in text


async def test_hostile_headers_and_data_are_dropped_and_never_break_the_connection(
    gateway, redis_url: str, r: redis.Redis
) -> None:
    """Issue 10, item 12: a 400-digit publish time raised OverflowError in the reader and
    dropped the pub/sub connection of every stream; a raw CR in data reached clients as a
    forged `event:` line."""
    channel = keys.job_channel("default", "evil")
    with SyncWorker.from_url(redis_url) as worker:
        worker.create("evil")
        worker.start("evil")
        reconnects = metric(gateway.url, "gateway_redis_reconnects")
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            async with client.stream("GET", "/v1/jobs/evil",
                                     headers={"Accept": "text/event-stream"}) as stream:
                lines = stream.aiter_lines()
                while not (await anext(lines)).startswith("data: "):  # the snapshot
                    pass
                epoch = r.get(keys.epoch_key("default")).decode()
                header = f"{epoch}-99 progress 9 running"
                hostile = [
                    f"{header} {'9' * 400} evil\n{{}}".encode(),  # the publish time
                    f"{epoch}-{'9' * 400} progress 9 running 0 evil\n{{}}".encode(),
                    f"{header} 0 evil\n{{\"a\":1}}\revent: deleted\rdata: {{}}".encode(),
                    f"{header} 0 ev/il\n{{}}".encode(),  # not a job id
                    f"{header} 0 other\n{{}}".encode(),  # another job on this job's channel
                    f"{epoch}-99 tampered 9 running 0 evil\n{{}}".encode(),
                    f"{epoch}-99 progress 9 running 0 evil extra\n{{}}".encode(),
                    f"{epoch.upper()}-99 progress 9 running 0 evil\n{{}}".encode(),
                ]
                for payload in hostile:
                    r.publish(channel, payload)
                worker.progress("evil", 50)
                seen = []
                with anyio.fail_after(10):
                    async for line in lines:
                        seen.append(line)
                        if '"percent":50.0' in line:
                            break
        # The worker's change, and nothing else: no forged event, no gap.
        assert [s for s in seen if s.startswith("event:")] == ["event: progress"], seen
    assert metric(gateway.url, "gateway_bad_messages") == len(hostile)
    assert metric(gateway.url, "gateway_redis_reconnects") == reconnects
